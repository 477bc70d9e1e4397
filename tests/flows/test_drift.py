"""drift-check and `opcd drift`: a clean sandbox is silent; hand-made drift is reported, exit 3, one Slack message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.slack import SlackSink
from tests.conftest import Project
from tests.flows.test_terraform import commands, configure

WORKER = "outreachpass-worker-dev"
RULE = "outreachpass-dev-nightly-digest"


def test_a_clean_sandbox_has_no_drift_and_says_nothing(
    project: Project, prefect_server: None, sink: SlackSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "terraform-calls.jsonl"
    monkeypatch.setenv("TF_STANDIN_LOG", str(calls))
    code, out, err = project.cli("drift")
    assert code == 0, err
    assert "no drift" in out
    assert sink.texts() == []
    # read-only: each environment's Terraform plan takes no state lock (and is kept nowhere)
    plans = commands(calls, "plan")
    assert len(plans) == 2 and all("-lock=false" in argv for argv in plans), plans
    listed = project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts", Prefix="terraform/")
    assert listed.get("KeyCount") == 0


def test_drift_made_by_hand_is_reported_once(project: Project, prefect_server: None, sink: SlackSink) -> None:
    # given: the worker deployed to dev by opcd (ledger, rules on live), and no drift right after
    code, _, err = project.cli("deploy", "worker", "--env", "dev", "--version", "v1")
    assert code == 0, err
    said = len(sink.texts())  # the deploy's own messages
    code, out, err = project.cli("drift", "--env", "dev")
    assert (code, len(sink.texts())) == (0, said), out + err
    deployed = project.live(WORKER)

    # when: someone changes things by hand
    lam = project.client("lambda")
    events = project.client("events")
    lam.update_alias(
        FunctionName=WORKER, Name="live", FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {deployed: 0.1}},
    )  # fmt: skip
    function_arn = lam.get_function_configuration(FunctionName=WORKER)["FunctionArn"]  # unqualified: $LATEST
    events.put_targets(Rule=RULE, Targets=[{"Id": "opcd-live", "Arn": function_arn}])
    project.client("s3").delete_bucket_lifecycle(Bucket="outreachpass-artifacts")
    configure(project, {"aws_sns_topic.alerts": {"name": "op-alerts-${environment}"}})  # Terraform drift too

    code, out, err = project.cli("drift", "--env", "dev", "--json")

    # then: each one found, exit 3, one Slack message
    assert code == 3, err
    report = json.loads(out)
    problems = {(f["resource"], f["problem"]) for f in report["findings"]}
    text = "\n".join(f"{r}: {p}" for r, p in sorted(problems))
    assert f"{WORKER}:live: points at version 1 (not deployed by opcd); the ledger says {deployed} (v1)" in text
    assert f"{WORKER}:live: carries leftover weights (version {deployed} 10%) beside version 1" in text
    assert f"rule {RULE}: targets {function_arn} instead of {WORKER}:live" in text
    assert "bucket outreachpass-artifacts: has no retention rule for backend/" in text
    assert "aws_sns_topic.alerts: would be created by Terraform" in text
    assert report["drift"] is True and report["errors"] == []
    (message,) = sink.texts()[said:]
    assert "finding(s) in dev" in message and "leftover weights" in message


def test_drift_without_terraform_checks_live_state_only(project: Project, prefect_server: None) -> None:
    configure(project, {"aws_sns_topic.alerts": {"name": "op-alerts"}})
    code, out, err = project.cli("drift", "--env", "dev", "--skip-terraform")
    assert code == 0, err
    assert "Terraform: not checked (terraform=false)" in out


def test_a_check_that_cannot_run_is_never_reported_clean(
    project: Project, prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_STANDIN_FAIL", "plan")  # Terraform fails; the live checks pass
    code, out, err = project.cli("drift", "--env", "dev")
    assert code == 1, out + err
    assert "ERROR  dev terraform plan: terraform plan" in out and "failed with exit code 1 in dev" in out
    assert "no drift" not in out
