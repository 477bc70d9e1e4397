"""The bake's parts in-process: the split read back (moto's Lambda, Stubber where moto would accept
anything), the guards (moto's CloudWatch, a real local health endpoint), a step held, and the rollback hook."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.stub import Stubber
from prefect.transactions import Transaction

from opcd.aws import AwsTarget
from opcd.errors import DeployFailed
from opcd.traffic import Step, Strategy
from tasks.bake import Bake, Guards, _restore_primary, check_guards, set_split
from tasks.cloudwatch import AlarmGuard
from tasks.lambda_functions import read_weights
from tests.tasks.conftest import logged, make_function

FUNCTION = "op-api-dev"


class Health:
    """A local health endpoint answering ``status`` to every GET."""

    def __init__(self) -> None:
        self.status = 200
        health = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                body = b'{"status": "ok"}' if health.status < 400 else b'{"status": "unhealthy"}'
                self.send_response(health.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/health"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def health() -> Iterator[Health]:
    served = Health()
    yield served
    served.stop()


@pytest.fixture
def function(moto_target: AwsTarget) -> str:
    make_function(moto_target, FUNCTION, versions=2)  # live on version 1
    return FUNCTION


def alarm(target: AwsTarget, name: str, state: str = "OK") -> None:
    cloudwatch = target.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName=name, MetricName="Errors", Namespace="AWS/Lambda", Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold",
    )  # fmt: skip
    cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=f"{name} went {state}")


def test_a_split_puts_the_share_on_the_new_version_and_reads_it_back(moto_target: AwsTarget, function: str) -> None:
    assert set_split(moto_target, function, "1", "2", 10) == {"2": 0.1}
    assert read_weights(moto_target, function) == ("1", {"2": 0.1})


@pytest.mark.parametrize("percent", [0, 100])
def test_a_split_that_aws_would_refuse_is_refused_here(moto_target: AwsTarget, function: str, percent: int) -> None:
    with pytest.raises(ValueError) as caught:
        set_split(moto_target, function, "1", "2", percent)
    assert str(caught.value) == f"a split weight must be between 0 and 1 (exclusive), got {percent / 100:.1f}"


def test_a_split_that_reads_back_otherwise_fails_the_deploy(stub: tuple[AwsTarget, Callable[[str], Stubber]]) -> None:
    target, stubber = stub
    lam = stubber("lambda")
    alias = {
        "Name": "live",
        "FunctionVersion": "1",
        "AliasArn": f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}:live",
    }
    lam.add_response("update_alias", alias)
    lam.add_response("get_alias", alias, {"FunctionName": FUNCTION, "Name": "live"})  # the weights were dropped
    with pytest.raises(DeployFailed) as caught:
        set_split(target, FUNCTION, "1", "2", 25)
    assert (
        str(caught.value) == f"{FUNCTION}:live reads back as version 1 with weights {{}}, expected 1 with {{2: 0.25}}"
    )


def test_guards_all_passing_say_so(moto_target: AwsTarget, health: Health) -> None:
    alarm(moto_target, "api-errors")
    guards = Guards(AlarmGuard(["api-errors"]), health.url, "https://api.dev.example/health")
    states, failure = check_guards(moto_target, FUNCTION, "2", guards)
    assert failure == "" and states["alarms"] == "OK" and states["health"].startswith("ok, HTTP 200 in ")


def test_a_firing_alarm_and_a_failing_health_check_are_both_named(moto_target: AwsTarget, health: Health) -> None:
    alarm(moto_target, "api-errors", "ALARM")
    health.status = 503
    guards = Guards(AlarmGuard(["api-errors"]), health.url, "https://api.dev.example/health")
    states, failure = check_guards(moto_target, FUNCTION, "2", guards)
    assert states["alarms"] == "ALARM: api-errors" and states["health"].startswith("FAILED, HTTP 503 in ")
    alarms, checked = failure.split("; ")
    assert alarms == "alarm firing: api-errors (api-errors went ALARM)"
    assert checked.startswith("health https://api.dev.example/health: HTTP 503 in ")


def test_an_alarm_accepted_as_firing_guards_again_once_it_cleared(moto_target: AwsTarget) -> None:
    alarm(moto_target, "api-errors", "ALARM")
    guard = AlarmGuard(["api-errors"], accepted={"api-errors"})
    assert check_guards(moto_target, FUNCTION, "2", Guards(guard)) == (
        {"alarms": "OK (accepted as firing: api-errors)"},
        "",
    )
    moto_target.client("cloudwatch").set_alarm_state(AlarmName="api-errors", StateValue="OK", StateReason="fine")
    check_guards(moto_target, FUNCTION, "2", Guards(guard))
    alarm(moto_target, "api-errors", "ALARM")
    assert (
        check_guards(moto_target, FUNCTION, "2", Guards(guard))[1] == "alarm firing: api-errors (api-errors went ALARM)"
    )


def bake(target: AwsTarget, guards: Guards) -> Bake:
    strategy = Strategy("canary10-0s", "canary", 10, 0.0)
    return Bake(target, FUNCTION, "1", "2", strategy, guards, poll_interval=0.01, sleep=lambda _: None)


def test_a_step_is_split_then_held_under_the_guards(
    moto_target: AwsTarget, function: str, health: Health, run_log: pytest.LogCaptureFixture
) -> None:
    held = bake(moto_target, Guards(AlarmGuard([]), health.url, "https://api.dev.example/health"))
    step = Step(10, 0.0)
    assert held.split(step, 1, 1) == {"2": 0.1}
    assert held.bake(step, 1, 1) == "baked"
    assert [t.ok for t in held.log.ticks] == [True] and held.log.steps[0]["observed"] == {"2": 0.1}
    lines = logged(run_log)
    assert lines[0] == f"Traffic: {FUNCTION}:live now 10% on version 2, 90% on 1 (read back: {{'2': 0.1}})"
    assert lines[1].startswith(
        f"Bake step 1/1: 10% of {FUNCTION}:live on version 2 (primary 1), 0s left in step; health ok"
    )


def test_a_failing_guard_fails_the_step_and_the_log_says_why(
    moto_target: AwsTarget, function: str, health: Health, run_log: Any
) -> None:
    health.status = 500
    held = bake(moto_target, Guards(AlarmGuard([]), health.url, "https://api.dev.example/health"))
    with pytest.raises(DeployFailed) as caught:
        held.bake(Step(10, 0.0), 1, 1)
    assert str(caught.value).startswith("bake guard failed at 10%: health https://api.dev.example/health: HTTP 500 in ")
    assert held.log.ended == "guard-failed" and held.log.detail == str(caught.value).split(": ", 1)[1]


def test_the_rollback_hook_moves_all_traffic_back_once(
    moto_target: AwsTarget, function: str, run_log: pytest.LogCaptureFixture
) -> None:
    set_split(moto_target, function, "1", "2", 50)
    txn = Transaction()
    for key, value in (("target", moto_target), ("function", function), ("previous", "1")):
        txn.set(key, value)
    _restore_primary(txn)
    assert read_weights(moto_target, function) == ("1", {})
    assert logged(run_log, logging.WARNING) == [
        f"Rolling back: {function}:live → all traffic on version 1 (was 1 {{'2': 0.5}})"
    ]
    run_log.clear()
    _restore_primary(txn)  # already back: nothing to do
    assert logged(run_log) == []


def test_a_rollback_that_fails_is_said_loudly_and_kept_for_the_run(
    moto_target: AwsTarget, run_log: pytest.LogCaptureFixture
) -> None:
    txn = Transaction()
    for key, value in (("target", moto_target), ("function", "op-gone-dev"), ("previous", "1")):
        txn.set(key, value)
    _restore_primary(txn)
    [error] = logged(run_log, logging.ERROR)
    assert error.startswith("Rollback of op-gone-dev:live to version 1 FAILED: ")
    assert "ResourceNotFoundException" in txn.get("rollback_error")
