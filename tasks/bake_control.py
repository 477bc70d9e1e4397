"""``opcd promote`` and ``opcd abort``: end a running bake early, through the flow run baking it.

The running deploy wrote a ``shifting`` record with its flow run's id to the ledger before it moved
traffic. The command finds that run on the Prefect API, checks it is still running, and leaves it a
flow run input (``opcd-bake-command``); the run reads it at its next guard poll, acts on it (all
traffic to the new version, or all back to the old one) and records who asked and why. The command
then follows the ``live`` alias until it shows the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.input.actions import create_flow_run_input, read_flow_run_input

from opcd.aws import AwsTarget
from opcd.config import Config
from opcd.errors import DeployFailed, InputError
from opcd.outcomes import Outcome
from tasks.bake import COMMAND_KEY
from tasks.lambda_functions import read_weights
from tasks.ledger import read_latest


@dataclass(frozen=True)
class RunningBake:
    component: str
    environment: str
    function: str
    flow_run_id: UUID
    flow_run_name: str
    new_version: str
    primary: str
    app_version: str | None


def find_running_bake(
    config: Config, target: AwsTarget, component: str, environment: str, region: str | None = None
) -> RunningBake:
    """The flow run moving ``component``'s traffic in ``environment`` (its ``region``: one of several) now;
    InputError when there is none."""
    function = config.function_name(component, environment, region)
    region = config.region_key(environment, region)
    latest = read_latest(target, config.bucket_for(environment, region), environment, component, region=region)
    if latest is None or latest.outcome is not Outcome.SHIFTING or not latest.flow_run_id:
        last = f"its last run ended {latest.outcome}" if latest else "it has no run recorded"
        raise InputError(
            f"no bake is running for {component} in {environment} ({last})",
            "promote and abort act on a canary or linear deploy while it bakes; `opcd status` shows what is live",
        )
    if latest.traffic in (None, "all-at-once"):
        raise InputError(
            f"the running deploy of {component} to {environment} moves traffic all at once: there is no bake",
            "give the environment a canary or linear `traffic` strategy in opcd.toml",
        )
    run_id = UUID(latest.flow_run_id)
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            raise InputError(
                f"flow run {run_id} (baking {component} in {environment}) is not on this Prefect API",
                "point PREFECT_API_URL at the server the deploy runs on",
            ) from None
    if run.state is None or not run.state.is_running():
        state = run.state.name if run.state else "unknown"
        raise InputError(
            f"the run that was baking {component} in {environment} ({run.name}) is {state}, not running",
            "if it died mid-shift, the next deploy moves the split back first; `opcd rollback` moves live now",
        )
    return RunningBake(
        component, environment, function, run_id, run.name, str(latest.lambda_version),
        str(latest.previous_lambda_version), latest.version,
    )  # fmt: skip


def send_bake_command(bake: RunningBake, action: str, by: str, reason: str | None) -> None:
    """Leave ``action`` for the running flow; refuse a second command to the same run."""
    value = {"action": action, "by": by, "reason": reason}
    try:
        create_flow_run_input(COMMAND_KEY, value, flow_run_id=bake.flow_run_id, sender=f"opcd {action}")
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 409:
            raise
        sent = read_flow_run_input(COMMAND_KEY, flow_run_id=bake.flow_run_id)
        sent = sent if isinstance(sent, dict) else {}
        raise InputError(
            f"{bake.flow_run_name} already received {sent.get('action', 'a command')} from {sent.get('by', '?')}",
            "a bake takes one promote or abort; wait for it to act",
        ) from None


def wait_for_alias(
    target: AwsTarget,
    function: str,
    version: str,
    timeout: float,
    on_wait: Callable[[str, dict[str, float]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Until ``function:live`` sends all traffic to ``version``; DeployFailed after ``timeout``."""
    deadline = time.monotonic() + timeout
    seen: tuple[str, dict[str, float]] | None = None
    while True:
        now_on, weights = read_weights(target, function)
        if now_on == version and not weights:
            return
        if on_wait and (now_on, weights) != seen:
            on_wait(now_on, weights)
        seen = (now_on, weights)
        if time.monotonic() > deadline:
            raise DeployFailed(
                f"{function}:live did not move to version {version} within {timeout:.0f}s (on {now_on} {weights})",
                "the run acts at its next guard poll; see its logs in the Prefect UI",
            )
        sleep(0.5)


def bake_facts(bake: RunningBake) -> dict[str, Any]:
    return {
        "component": bake.component, "environment": bake.environment, "flow_run": bake.flow_run_name,
        "flow_run_id": str(bake.flow_run_id), "new_version": bake.new_version, "primary": bake.primary,
    }  # fmt: skip
