"""What the commands share: the AWS target line, quiet consoles, running a flow in this process."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import botocore.exceptions
from botocore.exceptions import ClientError

from opcd.aws import target_for
from opcd.config import Config
from opcd.errors import DeployFailed, OpcdError, failure_text


def print_target(config: Config, environment: str | None = None, region: str | None = None) -> Any:
    """``AWS target: …, account … as …`` (the environment's role, when it has one; its ``region``)."""
    target = target_for(config, environment, region)
    with contextlib.suppress(Exception):  # STS cannot say: the line says less, the command says why
        target.identity()
    print(target.describe(), flush=True)
    return target


class ExpectedErrorsWithoutTraceback(logging.Filter):
    """On the console, an expected error is its one-line message; the Prefect UI keeps everything.

    Expected: an OpcdError, AWS's answer (ClientError) or AWS not answering, which the run turns
    into the one ``error:`` line. Anything else (a bug) keeps its traceback.
    """

    EXPECTED = (OpcdError, ClientError, botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.EXPECTED):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_console() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ExpectedErrorsWithoutTraceback) for f in handler.filters):
            handler.addFilter(ExpectedErrorsWithoutTraceback())


def ended_with(state: Any, kind: type, flow: str) -> Any:
    """What a flow run returned (of type ``kind``); the OpcdError it raised, raised again; else DeployFailed."""
    data = state.result(raise_on_failure=False)
    if isinstance(data, OpcdError):
        raise data
    if not isinstance(data, kind):
        raise DeployFailed(f"{flow} ended {state.name}: {data}")
    return data


def run_flow(flow: Any, **params: Any) -> Any:
    """Run a flow in this process; turn a Failed run back into the OpcdError it raised."""
    quiet_console()
    state = flow(**params, return_state=True)
    if state.is_completed():
        return state.result()
    error = state.result(raise_on_failure=False)
    if isinstance(error, OpcdError):
        raise error
    raise DeployFailed(
        f"flow run ended {state.name}: {failure_text(error) if isinstance(error, BaseException) else state.message}"
    )
