"""The CLI against the sandbox: what is missing or failing in AWS is one clear line, exit 2, live state
untouched; dry runs, status, health. Input refused before AWS is in tests/cli/test_validation.py."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Project, one_line_error


def test_a_lambda_version_that_does_not_exist_is_one_line_exit_2_and_changes_nothing(project: Project) -> None:
    code, out, err = project.cli("rollback", "backend", "--env", "dev", "--to-lambda-version", "99")
    assert code == 2
    assert "has no Lambda version 99" in one_line_error(err)
    assert project.live() == "1" and project.live("outreachpass-api-prod") == "1"


def test_function_missing_in_aws(project: Project) -> None:
    project.client("lambda").delete_function(FunctionName="outreachpass-api-dev")
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")
    assert code == 2
    assert "Lambda function 'outreachpass-api-dev' does not exist in the sandbox" in one_line_error(err)
    assert project.live("outreachpass-api-prod") == "1"


def test_alias_missing_in_aws(project: Project) -> None:
    project.client("lambda").delete_alias(FunctionName="outreachpass-api-dev", Name="live")
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")
    assert code == 2
    assert "has no 'live' alias" in one_line_error(err)


def test_alarm_missing_in_aws(project: Project) -> None:
    project.client("cloudwatch").delete_alarms(AlarmNames=["outreachpass-api-dev-errors"])
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")
    assert code == 2
    assert "alarm(s) outreachpass-api-dev-errors do not exist" in one_line_error(err)
    assert project.live() == "1"


def test_bucket_missing_in_aws(project: Project) -> None:
    project.client("s3").delete_bucket(Bucket="outreachpass-artifacts")
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")
    assert code == 2
    assert "artifact bucket 'outreachpass-artifacts' does not exist" in one_line_error(err)
    assert project.live() == "1"


def test_deploy_dry_run_shows_the_plan_and_changes_nothing(project: Project) -> None:
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1", "--dry-run")
    assert code == 0, err
    assert out.splitlines()[0].startswith("AWS target: embedded sandbox at http://127.0.0.1:")
    assert "live now: a version opcd did not deploy (Lambda version 1)" in out
    assert "smoke the new version: GET /health → 200" in out and "roll live back to" in out
    assert out.splitlines()[-1] == "no changes made (dry run)"
    assert project.live() == "1"
    listed = project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts")
    assert listed.get("KeyCount", 0) == 0
    assert "shift live → the new version (all at once)" in out

    # prod bakes a canary (shrunk for tests); a split alias would be repaired first
    lam = project.client("lambda")
    lam.publish_version(FunctionName="outreachpass-api-prod")
    lam.update_alias(
        FunctionName="outreachpass-api-prod", Name="live", RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}}
    )
    code, out, err = project.cli("deploy", "backend", "--env", "prod", "--version", "v1", "--dry-run")
    assert code == 0, err
    assert "5. repair: live is split (30% on version 2); move all traffic back to Lambda version 1 first" in out
    assert (
        "shift live by canary10-0.2s: 10% → 100%, 0.2s per step; every 0.1s check alarms, health, smoke on the new"
        " version, canary analysis (new vs old version on CloudWatch)" in out
    )
    assert lam.get_alias(FunctionName="outreachpass-api-prod", Name="live")["RoutingConfig"] == {
        "AdditionalVersionWeights": {"2": 0.3}
    }


def test_status_table_and_json(project: Project) -> None:
    code, out, err = project.cli("status")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("AWS target: embedded sandbox")
    assert lines[1].split()[:4] == ["COMPONENT", "ENV", "LIVE", "REVISION"]
    assert lines[2].split()[:4] == ["backend", "dev", "-", "1"]
    frontend = next(ln for ln in lines if ln.startswith("frontend"))
    assert frontend.split()[:4] == ["frontend", "dev", "-", "-"]  # AWS's sample image, not one of ours
    code, out, err = project.cli("status", "--env", "prod", "--json")
    rows = json.loads(out)
    assert [(r["component"], r["environment"], r["lambda_version"], r["version"]) for r in rows] == [
        ("backend", "prod", "1", None),
        ("worker", "prod", "1", None),
        ("frontend", "prod", None, None),
    ]
    assert rows[2]["image"] == "public.ecr.aws/aws-containers/hello-app-runner:latest"
    assert rows[2]["service"] == "outreachpass-web-prod" and rows[2]["service_status"] == "RUNNING"


def test_health_command_against_the_sandbox_gateway(project: Project) -> None:
    url = "https://api.dev.outreachpass.example/health"
    code, out, err = project.cli("health", url, "--successes", "2", "--interval", "0")
    assert code == 0, out
    assert "served by the sandbox" in out and "healthy (2/2 ok" in out
    code, out, err = project.cli("health", url, "--expect-version", "v9", "--attempts", "2", "--interval", "0")
    assert code == 1
    assert "serves version placeholder, expected v9" in out and "UNHEALTHY" in out


def test_no_credentials_and_no_sandbox(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    (project.root / ".opcd" / "sandbox.json").unlink()
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(project.root / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(project.root / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, out, err = project.cli("status")
    assert code == 2
    assert out.startswith("AWS target: AWS us-east-1, credentials from the default chain\n")
    assert "no AWS credentials found" in one_line_error(err)


def test_unreachable_endpoint(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, out, err = project.cli("status", "--json")
    assert code == 2
    assert "cannot reach http://127.0.0.1:9" in one_line_error(err)


def test_a_denied_or_throttled_read_says_why_and_that_nothing_changed(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    import opcd.aws

    # the preflight's GetAlias is denied: the hint names the permission; exit 2, nothing deployed
    denied = {"method": "GET", "path": "/aliases/live$", "status": 403, "code": "AccessDeniedException"}
    httpx.post(f"{project.endpoint}/_opcd/faults", json=denied, timeout=10).raise_for_status()
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")
    assert code == 2
    assert one_line_error(err).startswith("error: AWS GetAlias failed: AccessDeniedException: injected by the sandbox")
    assert "lack the IAM permission lambda:GetAlias" in err and "nothing was changed" in err
    assert project.live() == "1"
    listed = project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts").get("Contents", [])
    assert not listed  # no artifact, no ledger record
    # status's reads throttled on every attempt (2 here, new clients to read AWS_MAX_ATTEMPTS)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setattr(opcd.aws, "_clients", {})
    throttled = {"method": "GET", "path": "/aliases/live$", "status": 429, "code": "TooManyRequestsException",
                 "count": 100}  # fmt: skip
    httpx.post(f"{project.endpoint}/_opcd/faults", json=throttled, timeout=10).raise_for_status()
    code, out, err = project.cli("status", "--env", "dev")
    assert code == 2
    assert "TooManyRequestsException" in one_line_error(err)
    assert "AWS is throttling: retry in a minute; nothing was changed" in err
