"""DescribeAlarms as AWS answers it: metric alarms alone unless asked for both types, 100 names a call.

moto answers composite alarms whether asked or not (and cannot create one), so the requests are
checked with botocore's Stubber, which validates every parameter against the real API model.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber

from opcd.aws import AwsTarget
from opcd.config import load_config
from opcd.errors import ResourceMissing
from tasks.cloudwatch import alarm_states
from tests.conftest import ROOT, Project

TYPES = ["MetricAlarm", "CompositeAlarm"]
NOW = datetime(2026, 11, 29, tzinfo=UTC)


def metric_alarm(name: str, state: str = "OK") -> dict[str, Any]:
    return {"AlarmName": name, "StateValue": state, "StateReason": f"{name} is {state}", "StateUpdatedTimestamp": NOW}


def composite_alarm(name: str, state: str) -> dict[str, Any]:
    return {**metric_alarm(name, state), "AlarmRule": 'ALARM("api-errors-0") OR ALARM("api-errors-1")'}


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AwsTarget, Stubber]]:
    import opcd.aws

    # Stubbed answers reach no AWS: the IAM proof records real calls only (these names are made up).
    monkeypatch.delenv("OPCD_RECORD_AWS_CALLS", raising=False)
    target = AwsTarget("endpoint", "us-east-1", "http://127.0.0.1:9", credentials=("testing", "testing"))
    opcd.aws._clients.pop((target, "cloudwatch"), None)
    with Stubber(target.client("cloudwatch")) as stubber:
        yield target, stubber
        stubber.assert_no_pending_responses()
    opcd.aws._clients.pop((target, "cloudwatch"), None)


def test_a_composite_alarm_among_101_names_is_read_in_two_calls(stubbed: tuple[AwsTarget, Stubber]) -> None:
    target, stubber = stubbed
    # given: 100 metric alarms and a composite one, the composite firing
    names = [f"api-errors-{n}" for n in range(100)] + ["api-health"]
    stubber.add_response(
        "describe_alarms",
        {"MetricAlarms": [metric_alarm(n) for n in names[:100]], "CompositeAlarms": []},
        {"AlarmNames": names[:100], "AlarmTypes": TYPES},
    )
    stubber.add_response(
        "describe_alarms",
        {"MetricAlarms": [], "CompositeAlarms": [composite_alarm("api-health", "ALARM")]},
        {"AlarmNames": ["api-health"], "AlarmTypes": TYPES},
    )

    # when: their states are read
    states = alarm_states(target, names)

    # then: all 101 are found, the composite one with its state
    assert len(states) == 101
    assert states["api-health"] == ("ALARM", "api-health is ALARM")
    assert states["api-errors-99"] == ("OK", "api-errors-99 is OK")


def test_a_missing_alarm_is_still_named(stubbed: tuple[AwsTarget, Stubber]) -> None:
    target, stubber = stubbed
    stubber.add_response(
        "describe_alarms",
        {"MetricAlarms": [metric_alarm("api-errors")], "CompositeAlarms": []},
        {"AlarmNames": ["api-errors", "api-health"], "AlarmTypes": TYPES},
    )
    with pytest.raises(ResourceMissing, match=r"CloudWatch alarm\(s\) api-health do not exist in us-east-1"):
        alarm_states(target, ["api-errors", "api-health"])


def test_drift_reads_alarms_the_same_way(stubbed: tuple[AwsTarget, Stubber]) -> None:
    from tasks.drift import check_alarms_exist

    target, stubber = stubbed
    names = [f"api-errors-{n}" for n in range(100)] + ["api-health"]
    stubber.add_response(
        "describe_alarms",
        {"MetricAlarms": [metric_alarm(n) for n in names[:100]]},
        {"AlarmNames": names[:100], "AlarmTypes": TYPES},
    )
    stubber.add_response(
        "describe_alarms",
        {"CompositeAlarms": [composite_alarm("api-health", "OK")]},
        {"AlarmNames": ["api-health"], "AlarmTypes": TYPES},
    )

    config = load_config(ROOT / "opcd.toml")
    dev = config.environments["dev"].model_copy(update={"alarms": names})
    config = config.model_copy(update={"environments": {**config.environments, "dev": dev}})
    assert check_alarms_exist.fn(config, target, "dev") == []


def test_a_firing_composite_alarm_refuses_a_deploy_in_the_sandbox(project: Project) -> None:
    # given: dev guarded by a composite alarm too, and it fires
    cw = project.client("cloudwatch")
    cw.put_composite_alarm(AlarmName="outreachpass-api-dev-health", AlarmRule='ALARM("outreachpass-api-dev-errors")')
    cw.set_alarm_state(AlarmName="outreachpass-api-dev-health", StateValue="ALARM", StateReason="errors and latency")
    project.set_config(
        'alarms = ["outreachpass-api-dev-errors"]',
        'alarms = ["outreachpass-api-dev-errors", "outreachpass-api-dev-health"]',
    )

    # when: a deploy is asked for
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1", "--dry-run")

    # then: the composite alarm is found, and firing it refuses the deploy (not "does not exist")
    assert code == 2
    assert err.startswith("error: alarm firing in dev: outreachpass-api-dev-health (errors and latency);"), err
