"""The sandbox's moto, where it is made to answer as AWS does."""

from __future__ import annotations

from typing import Any

from tests.conftest import Project


def test_composite_alarms_are_created_and_described_as_aws_does(project: Project) -> None:
    cw = project.client("cloudwatch")
    # given: a composite alarm over the seeded metric alarm (moto alone answers PutCompositeAlarm 500)
    cw.put_composite_alarm(AlarmName="api-health", AlarmRule='ALARM("outreachpass-api-dev-errors")')
    names = ["outreachpass-api-dev-errors", "api-health"]

    # then: DescribeAlarms returns metric alarms alone unless AlarmTypes asks for composite ones too
    plain: dict[str, Any] = cw.describe_alarms(AlarmNames=names)
    assert [a["AlarmName"] for a in plain["MetricAlarms"]] == ["outreachpass-api-dev-errors"]
    assert plain.get("CompositeAlarms", []) == []
    both = cw.describe_alarms(AlarmNames=names, AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    assert [a["AlarmName"] for a in both["MetricAlarms"]] == ["outreachpass-api-dev-errors"]
    assert [(a["AlarmName"], a["AlarmRule"]) for a in both["CompositeAlarms"]] == [
        ("api-health", 'ALARM("outreachpass-api-dev-errors")')
    ]
    only = cw.describe_alarms(AlarmNames=names, AlarmTypes=["CompositeAlarm"])
    assert only["MetricAlarms"] == [] and len(only["CompositeAlarms"]) == 1
