"""Live-state drift against the shipped opcd.toml (moto in this process): each finding's words and fix."""

from __future__ import annotations

import json
from typing import Any

import pytest

from opcd.aws import AwsTarget
from opcd.config import Config, load_config
from tasks.drift import Drift, check_alarms_exist, check_event_rules, check_lambda_aliases, check_retention_rules
from tasks.eventbridge import sync_event_rules
from tests.conftest import ROOT
from tests.tasks.conftest import make_function

API, WORKER = "outreachpass-api-dev", "outreachpass-worker-dev"
BUCKET = "outreachpass-artifacts"


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ROOT / "opcd.toml")


@pytest.fixture
def account(moto_target: AwsTarget) -> AwsTarget:
    """dev's two functions (live on version 1 of 2) and the artifact bucket; no ledger record yet."""
    moto_target.client("s3").create_bucket(Bucket=BUCKET)
    for function in (API, WORKER):
        make_function(moto_target, function, versions=2)
    return moto_target


def record(target: AwsTarget, component: str, name: str, **fields: Any) -> None:
    """A ledger record as a deploy writes it (``live.json``: one that put its version live)."""
    key = f"ledger/dev/{component}/{name}"
    body = {"component": component, "environment": "dev", "action": "deploy", "outcome": "deployed"}
    body["version"] = fields.get("live_version")
    target.client("s3").put_object(Bucket=BUCKET, Key=key, Body=json.dumps({**body, **fields}).encode())


def test_nothing_deployed_and_nothing_split_is_no_drift(config: Config, account: AwsTarget) -> None:
    assert check_lambda_aliases.fn(config, account, "dev") == []
    assert check_event_rules.fn(config, account, "dev") == []  # no live.json: the rules are not expected yet


def test_an_alias_moved_behind_opcds_back_names_the_rollback(config: Config, account: AwsTarget) -> None:
    record(account, "backend", "live.json", live_lambda_version="2", live_version="v2")
    [finding] = check_lambda_aliases.fn(config, account, "dev")
    assert finding == Drift(
        "dev", f"{API}:live", "points at version 1 (not deployed by opcd); the ledger says 2 (v2)",
        "opcd rollback backend --env dev --to-lambda-version 2 (or deploy again)",
    )  # fmt: skip


def test_leftover_weights_and_a_deploy_stopped_while_shifting(config: Config, account: AwsTarget) -> None:
    account.client("lambda").update_alias(
        FunctionName=API, Name="live", RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}}
    )
    record(account, "backend", "latest.json", outcome="shifting", version="v2", flow_run_name="brave-otter")
    weights, stopped = check_lambda_aliases.fn(config, account, "dev")
    assert (weights.problem, weights.fix) == (
        "carries leftover weights (version 2 10%) beside version 1",
        "finish or undo the shift: opcd promote / opcd abort backend --env dev",
    )
    assert (stopped.problem, stopped.fix) == (
        "a deploy of v2 stopped while shifting traffic (run brave-otter)",
        "check `opcd status --env dev`, then deploy or roll back backend",
    )


def test_a_missing_function_is_a_finding_not_an_error(config: Config, moto_target: AwsTarget) -> None:
    make_function(moto_target, API)
    findings = check_lambda_aliases.fn(config, moto_target, "dev")
    assert [(f.resource, f.problem) for f in findings] == [
        (f"{WORKER}:live", f"Lambda function {WORKER!r} does not exist in us-east-1")
    ]


def test_a_rule_gone_or_aimed_elsewhere_is_found(config: Config, account: AwsTarget, run_log: Any) -> None:
    record(account, "worker", "live.json", live_lambda_version="1", live_version="v1")
    [finding] = check_event_rules.fn(config, account, "dev")
    fix = "deploy worker to dev again: opcd puts its rules back on live"
    assert finding == Drift("dev", "rule outreachpass-dev-nightly-digest", "does not exist", fix)
    alias_arn = account.client("lambda").get_alias(FunctionName=WORKER, Name="live")["AliasArn"]
    rules = config.components["worker"].rules
    sync_event_rules.fn(account, "outreachpass", "dev", "worker", WORKER, alias_arn, rules)
    assert check_event_rules.fn(config, account, "dev") == []
    account.client("events").put_targets(
        Rule="outreachpass-dev-nightly-digest", Targets=[{"Id": "opcd-live", "Arn": alias_arn.replace(":live", ":1")}]
    )
    [aimed] = check_event_rules.fn(config, account, "dev")
    assert aimed.problem == f"targets {alias_arn.replace(':live', ':1')} instead of {WORKER}:live"


def test_a_missing_alarm_and_retention_rules(config: Config, account: AwsTarget) -> None:
    [alarm] = check_alarms_exist.fn(config, account, "dev")
    assert (alarm.resource, alarm.problem) == ("alarm outreachpass-api-dev-errors", "does not exist")
    findings = check_retention_rules.fn(config, account)
    assert [f.problem for f in findings] == [
        f"has no retention rule for {c}/ (artifacts are never expired)" for c in config.components
    ]
    assert {f.environment for f in findings} == {"all"}
