"""EventBridge rules on a function's live alias (moto in this process): create, update, keep, remove."""

from __future__ import annotations

import json
from typing import Any

import pytest

from opcd.aws import AwsTarget
from opcd.config import EventRule
from tasks.eventbridge import RuleChanges, describe_rules, statement_id, sync_event_rules
from tests.tasks.conftest import logged, make_function

NIGHTLY = EventRule(name="nightly", schedule="cron(0 3 * * ? *)", input={"job": "cleanup"})
ON_UPLOAD = EventRule(name="on-upload", event_pattern={"source": ["aws.s3"]})


@pytest.fixture
def alias_arn(moto_target: AwsTarget) -> str:
    return make_function(moto_target, "op-worker-dev")


def sync(target: AwsTarget, alias_arn: str, rules: list[EventRule], component: str = "worker") -> RuleChanges:
    changes: RuleChanges = sync_event_rules.fn(target, "op", "dev", component, "op-worker-dev", alias_arn, rules)
    return changes


def permissions(target: AwsTarget) -> dict[str, Any]:
    policy = target.client("lambda").get_policy(FunctionName="op-worker-dev", Qualifier="live")["Policy"]
    return {s["Sid"]: s for s in json.loads(policy)["Statement"]}


def test_rules_are_created_tagged_and_aimed_at_live(
    moto_target: AwsTarget, alias_arn: str, run_log: pytest.LogCaptureFixture
) -> None:
    changes = sync(moto_target, alias_arn, [NIGHTLY, ON_UPLOAD])
    assert changes.created == ["op-dev-nightly", "op-dev-on-upload"] and not changes.updated
    events = moto_target.client("events")
    rule = events.describe_rule(Name="op-dev-nightly")
    assert rule["ScheduleExpression"] == "cron(0 3 * * ? *)" and rule["State"] == "ENABLED"
    tags = {t["Key"]: t["Value"] for t in events.list_tags_for_resource(ResourceARN=rule["Arn"])["Tags"]}
    assert tags == {"opcd:project": "op", "opcd:environment": "dev", "opcd:component": "worker"}
    [target] = events.list_targets_by_rule(Rule="op-dev-nightly")["Targets"]
    assert target == {"Id": "opcd-live", "Arn": alias_arn, "Input": '{"job": "cleanup"}'}
    assert statement_id("op-dev-nightly") in permissions(moto_target)
    assert logged(run_log) == ["EventBridge rules: created op-dev-nightly, op-dev-on-upload"]


def test_a_second_sync_changes_nothing(
    moto_target: AwsTarget, alias_arn: str, run_log: pytest.LogCaptureFixture
) -> None:
    sync(moto_target, alias_arn, [NIGHTLY])
    run_log.clear()
    changes = sync(moto_target, alias_arn, [NIGHTLY])
    assert changes.unchanged == ["op-dev-nightly"] and changes.summary() == "unchanged op-dev-nightly"
    assert logged(run_log) == ["EventBridge rules: nothing to change (op-dev-nightly)"]


def test_a_changed_schedule_a_stray_target_and_a_disabled_rule_are_put_right(
    moto_target: AwsTarget, alias_arn: str, run_log: Any
) -> None:
    sync(moto_target, alias_arn, [NIGHTLY])
    events = moto_target.client("events")
    events.put_targets(Rule="op-dev-nightly", Targets=[{"Id": "stray", "Arn": alias_arn + "x"}])
    changed = NIGHTLY.model_copy(update={"schedule": "rate(5 minutes)", "enabled": False})
    assert sync(moto_target, alias_arn, [changed]).updated == ["op-dev-nightly"]
    rule = events.describe_rule(Name="op-dev-nightly")
    assert rule["ScheduleExpression"] == "rate(5 minutes)" and rule["State"] == "DISABLED"
    assert [t["Id"] for t in events.list_targets_by_rule(Rule="op-dev-nightly")["Targets"]] == ["opcd-live"]


def test_only_this_components_rules_no_longer_named_are_removed(
    moto_target: AwsTarget, alias_arn: str, run_log: Any
) -> None:
    sync(moto_target, alias_arn, [NIGHTLY, ON_UPLOAD])
    sync(moto_target, alias_arn, [EventRule(name="other", schedule="rate(1 hour)")], component="backend")
    events = moto_target.client("events")
    events.put_rule(Name="op-dev-by-hand", ScheduleExpression="rate(1 day)")  # untagged: never touched
    changes = sync(moto_target, alias_arn, [ON_UPLOAD])
    assert changes.removed == ["op-dev-nightly"] and changes.unchanged == ["op-dev-on-upload"]
    left = {r["Name"] for r in events.list_rules(NamePrefix="op-dev-")["Rules"]}
    assert left == {"op-dev-on-upload", "op-dev-other", "op-dev-by-hand"}
    assert statement_id("op-dev-nightly") not in permissions(moto_target)


def test_describe_names_a_missing_rule(moto_target: AwsTarget, alias_arn: str, run_log: Any) -> None:
    sync(moto_target, alias_arn, [NIGHTLY])
    found = describe_rules(moto_target, "op", "dev", [NIGHTLY, ON_UPLOAD])
    assert found == [
        {"name": "op-dev-nightly", "state": "ENABLED", "trigger": "cron(0 3 * * ? *)", "targets": [alias_arn]},
        {"name": "op-dev-on-upload", "state": "MISSING", "trigger": "event pattern", "targets": []},
    ]
