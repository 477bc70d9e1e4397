"""deploy-worker against the sandbox: the backend's path plus EventBridge rules and a sample event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Project

FUNCTION = "outreachpass-worker-dev"
RULE = "outreachpass-dev-nightly-digest"
RAISES_ON_SAMPLE = """

_handler = handler


def handler(event, context):
    if event.get("source") == "aws.events":
        raise RuntimeError("digest query failed")
    return _handler(event, context)
"""


def deploy(project: Project, version: str) -> tuple[int, str, str]:
    return project.cli("deploy", "worker", "--env", "dev", "--version", version)


def latest(project: Project) -> dict[str, Any]:
    body = project.client("s3").get_object(Bucket="outreachpass-artifacts", Key="ledger/dev/worker/latest.json")["Body"]
    record: dict[str, Any] = json.loads(body.read())
    return record


def policy(project: Project) -> dict[str, Any]:
    text = project.client("lambda").get_policy(FunctionName=FUNCTION, Qualifier="live")["Policy"]
    return {s["Sid"]: s for s in json.loads(text)["Statement"]}


@pytest.fixture
def worker_v1(project: Project, prefect_server: None) -> Project:
    code, out, err = deploy(project, "v1")
    assert code == 0, err
    return project


def test_rule_targets_live_with_a_scoped_permission(worker_v1: Project) -> None:
    events = worker_v1.client("events")
    rule = events.describe_rule(Name=RULE)
    assert rule["ScheduleExpression"] == "cron(0 3 * * ? *)" and rule["State"] == "ENABLED"
    alias_arn = worker_v1.client("lambda").get_alias(FunctionName=FUNCTION, Name="live")["AliasArn"]
    targets = events.list_targets_by_rule(Rule=RULE)["Targets"]
    assert [(t["Arn"], json.loads(t["Input"])) for t in targets] == [(alias_arn, {"since_hours": 24})]
    statement = policy(worker_v1)[f"opcd-{RULE}"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == rule["Arn"]
    assert statement["Resource"] == alias_arn
    tags = {t["Key"]: t["Value"] for t in events.list_tags_for_resource(ResourceARN=rule["Arn"])["Tags"]}
    assert tags == {"opcd:project": "outreachpass", "opcd:environment": "dev", "opcd:component": "worker"}
    assert latest(worker_v1)["rules"] == f"created {RULE}"


def test_second_deploy_of_v1_changes_nothing(worker_v1: Project) -> None:
    live = worker_v1.live(FUNCTION)
    code, out, err = deploy(worker_v1, "v1")
    assert code == 0, err
    assert "already live" in out
    assert worker_v1.live(FUNCTION) == live
    assert latest(worker_v1)["rules"] == f"unchanged {RULE}"


def test_changing_one_schedule_updates_only_that_rule(worker_v1: Project) -> None:
    worker_v1.set_config(
        'rules = [{ name = "nightly-digest", schedule = "cron(0 3 * * ? *)", input = { since_hours = 24 } }]',
        'rules = [{ name = "nightly-digest", schedule = "cron(0 3 * * ? *)", input = { since_hours = 24 } },'
        ' { name = "hourly-digest", schedule = "rate(1 hour)", input = { since_hours = 1 } }]',
    )
    assert deploy(worker_v1, "v1")[0] == 0
    worker_v1.set_config('schedule = "rate(1 hour)"', 'schedule = "rate(2 hours)"')

    code, out, err = deploy(worker_v1, "v1")

    assert code == 0, err
    assert latest(worker_v1)["rules"] == f"updated outreachpass-dev-hourly-digest; unchanged {RULE}"
    events = worker_v1.client("events")
    assert events.describe_rule(Name="outreachpass-dev-hourly-digest")["ScheduleExpression"] == "rate(2 hours)"
    assert events.describe_rule(Name=RULE)["ScheduleExpression"] == "cron(0 3 * * ? *)"


def test_rules_opcd_did_not_create_are_left_alone(worker_v1: Project) -> None:
    events = worker_v1.client("events")
    events.put_rule(Name="outreachpass-dev-manual", ScheduleExpression="rate(1 day)")
    events.put_rule(
        Name="outreachpass-dev-other-team", ScheduleExpression="rate(1 day)",
        Tags=[{"Key": "opcd:project", "Value": "outreachpass"}, {"Key": "opcd:environment", "Value": "dev"},
              {"Key": "opcd:component", "Value": "billing"}],
    )  # fmt: skip
    worker_v1.set_config(
        'rules = [{ name = "nightly-digest", schedule = "cron(0 3 * * ? *)", input = { since_hours = 24 } }]',
        "rules = []",
    )

    code, out, err = deploy(worker_v1, "v1")

    assert code == 0, err
    assert latest(worker_v1)["rules"] == f"removed {RULE}"
    names = {r["Name"] for r in events.list_rules(NamePrefix="outreachpass-dev-")["Rules"]}
    assert names == {"outreachpass-dev-manual", "outreachpass-dev-other-team"}
    statements = policy(worker_v1) if _has_policy(worker_v1) else {}
    assert f"opcd-{RULE}" not in statements


def _has_policy(project: Project) -> bool:
    try:
        policy(project)
    except project.client("lambda").exceptions.ResourceNotFoundException:
        return False
    return True


def test_worker_failing_the_sample_event_never_takes_the_alias(worker_v1: Project) -> None:
    live = worker_v1.live(FUNCTION)
    worker_v1.write_worker(RAISES_ON_SAMPLE)

    code, out, err = deploy(worker_v1, "v2")

    assert code == 1
    assert "pre-traffic sample event on" in err and "RuntimeError: digest query failed" in err
    assert f"live untouched on v1 (Lambda version {live})" in err
    assert worker_v1.live(FUNCTION) == live


def test_invalid_schedule_is_refused_before_aws(project: Project) -> None:
    project.set_config('schedule = "cron(0 3 * * ? *)"', 'schedule = "every night at 3"')
    code, out, err = project.cli("config", "check")
    assert code == 2
    assert "components.worker.rules[nightly-digest].schedule: 'every night at 3' is not a schedule expression" in err
    code, out, err = deploy(project, "v1")
    assert code == 2
    assert project.client("events").list_rules()["Rules"] == []
    assert project.live(FUNCTION) == "1"


def test_fire_rule_runs_the_worker_from_its_rule(worker_v1: Project) -> None:
    code, out, err = worker_v1.cli("sandbox", "fire-rule", "nightly-digest")
    assert code == 0, out + err
    assert f"fired {RULE} → arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}:live" in out
    assert '"status": "ok"' in out and '"since_hours": 24' in out
    code, out, err = worker_v1.cli("sandbox", "fire-rule", "no-such-rule")
    assert code == 2 and "no rule 'outreachpass-dev-no-such-rule'" in out


def test_status_shows_the_worker_and_its_rules(worker_v1: Project) -> None:
    code, out, err = worker_v1.cli("status", "--env", "dev")
    assert code == 0, err
    lines = out.splitlines()
    worker_row = next(i for i, line in enumerate(lines) if line.startswith("worker"))
    assert lines[worker_row].split()[:4] == ["worker", "dev", "v1", worker_v1.live(FUNCTION)]
    assert lines[worker_row + 1].split() == ["rule", RULE, "cron(0", "3", "*", "*", "?", "*)", "ENABLED", "→", "live"]


def test_worker_failing_the_sample_event_through_live_is_rolled_back(worker_v1: Project) -> None:
    live = worker_v1.live(FUNCTION)
    worker_v1.write_worker(
        RAISES_ON_SAMPLE.replace(
            'event.get("source") == "aws.events"', 'context.invoked_function_arn.endswith(":live")'
        )
    )

    code, out, err = deploy(worker_v1, "v2")

    assert code == 1
    assert "sample event on live: handler error RuntimeError: digest query failed" in err
    assert f"rolled back to v1 (Lambda version {live}), verified" in err
    assert worker_v1.live(FUNCTION) == live
    assert latest(worker_v1)["outcome"] == "rolled-back"
