"""Fixtures of the task tests: AWS in this process (moto's ``mock_aws``), a run logger without a run.

These tests call a task's ``.fn`` (or the plain function under it): no Prefect server, no sandbox.
Their AWS calls are left out of the IAM proof (tests/iam_proof.py), as the Stubber tests' are: they
use made-up names and provoke errors on purpose; the proof is of what the flows call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from botocore.stub import Stubber
from moto import mock_aws

import opcd.aws
import tasks
from opcd.aws import AwsTarget

REGION = "us-east-1"
RUN_LOGGER = "tests.task-run"


def forget_clients(target: AwsTarget) -> None:
    with opcd.aws._lock:
        for key in [k for k in opcd.aws._clients if k[0] == target]:
            del opcd.aws._clients[key]
        opcd.aws._identities.pop(target, None)


@pytest.fixture
def moto_target(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsTarget]:
    """A target whose calls moto answers in this process; every test starts from an empty account."""
    from opcd.iam import RECORD_ENV

    monkeypatch.delenv(RECORD_ENV, raising=False)
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    target = AwsTarget("aws", REGION, credentials=("testing", "testing"))
    forget_clients(target)
    with mock_aws():
        yield target
    forget_clients(target)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AwsTarget, Callable[[str], Stubber]]]:
    """A target whose clients answer from botocore's Stubber (``stub(service)``), which checks every
    call's parameters and every stubbed answer against the service's model; all answers must be used."""
    from opcd.iam import RECORD_ENV

    monkeypatch.delenv(RECORD_ENV, raising=False)
    target = AwsTarget("endpoint", REGION, "http://127.0.0.1:9", credentials=("testing", "testing"))
    forget_clients(target)
    stubbers: list[Stubber] = []

    def stubber(service: str) -> Stubber:
        made = Stubber(target.client(service))
        made.activate()
        stubbers.append(made)
        return made

    yield target, stubber
    for made in stubbers:
        made.deactivate()
    forget_clients(target)
    for made in stubbers:
        made.assert_no_pending_responses()


@pytest.fixture
def run_log(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """What the tasks log to their run logger, captured (``get_run_logger`` outside a run raises)."""
    import importlib
    import pkgutil

    logger = logging.getLogger(RUN_LOGGER)
    for info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{info.name}")
        if hasattr(module, "get_run_logger"):
            monkeypatch.setattr(module, "get_run_logger", lambda: logger)
    caplog.set_level(logging.DEBUG, logger=RUN_LOGGER)
    return caplog


def logged(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == RUN_LOGGER and r.levelno >= level]


def lambda_zip() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return {'statusCode': 200}\n")
    return buffer.getvalue()


def make_function(target: AwsTarget, name: str, versions: int = 1) -> str:
    """A function with ``versions`` published versions and a ``live`` alias on the first; the alias's ARN."""
    role = target.client("iam").create_role(
        RoleName=f"{name}-role", AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}'
    )["Role"]["Arn"]
    lam = target.client("lambda")
    lam.create_function(
        FunctionName=name, Runtime="python3.11", Role=role, Handler="app.handler", Code={"ZipFile": lambda_zip()}
    )
    for number in range(versions):
        lam.update_function_configuration(FunctionName=name, Description=f"v{number + 1}")
        lam.publish_version(FunctionName=name)
    return str(lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")["AliasArn"])
