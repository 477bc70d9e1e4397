"""The CLI's bad-input paths: one clear line, exit 2, live state untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from tests.conftest import Project, copy_examples, project_config, write_terraform_root


def one_line_error(err: str) -> str:
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, f"expected one line, got: {err!r}"
    return err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["deploy", "web", "--env", "dev", "--version", "v1"], "'web' — opcd.toml defines: backend, frontend, worker"),
        (["deploy", "backend", "--env", "staging", "--version", "v1"], "unknown environment 'staging' — opcd.toml"),
        (["deploy", "backend", "--env", "dev", "--version", "../x"], "'../x' is not a version"),
        (["deploy", "backend", "--env", "dev", "--version", ""], "'' is not a version"),
        (["deploy", "backend", "--env", "dev", "--version", "latest"], "'latest' is not a version"),
        (["rollback", "backend", "--env", "dev", "--to", "v1; rm -rf /"], "is not a version"),
        (["rollback", "backend", "--env", "dev", "--to-lambda-version", "99"], "has no Lambda version 99"),
        (["status", "--env", "qa"], "unknown environment 'qa'"),
    ],
)  # fmt: skip
def test_bad_request_is_one_line_exit_2_and_changes_nothing(project: Project, args: list[str], expected: str) -> None:
    code, out, err = project.cli(*args)
    assert code == 2
    assert expected in one_line_error(err)
    assert project.live() == "1" and project.live("outreachpass-api-prod") == "1"


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project's opcd.toml with no sandbox and no AWS credentials: a request that reaches AWS fails there."""
    copy_examples(tmp_path)
    write_terraform_root(tmp_path / "src" / "terraform")
    (tmp_path / "opcd.toml").write_text(project_config())
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "OPCD_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    for var in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(var, str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path / "opcd.toml"


BAD_VERSIONS = [
    ("v13\n", "'v13\\n' is not a version"),
    ("v\uff11\uff13", "is not a version"),
    ("v\u0661\u0663", "is not a version"),
    ("v1..2", "'v1..2' is not a version"),
    ("latest", "'latest' is not a version — 'latest' is the image tag that moves"),
]
VERSION_FLAGS = [["deploy", "backend", "--env", "dev", "--version"], ["rollback", "backend", "--env", "dev", "--to"],
                 ["release", "--component", "backend", "--version"]]  # fmt: skip
BAD_SHA = ["--version", "v2", "--git-sha", "abc1234\n"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [([*flags, version], expected) for flags in VERSION_FLAGS for version, expected in BAD_VERSIONS]
    + [(["deploy", "backend", "--env", "dev", *BAD_SHA], "'abc1234\\n' is not a commit sha — give 7 to 40"),
       (["release", "--component", "backend", *BAD_SHA], "'abc1234\\n' is not a commit sha — give 7 to 40")],
)  # fmt: skip
def test_bad_versions_and_shas_are_refused_before_aws(
    offline: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code = main(["--config", str(offline), *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert expected in one_line_error(err)
    assert out == ""  # refused before the AWS target was even resolved


def test_missing_config_file(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--config", "/nonexistent/opcd.toml", "deploy", "backend", "--env", "dev", "--version", "v1"])
    err = one_line_error(capsys.readouterr().err)
    assert code == 2
    assert "config file '/nonexistent/opcd.toml' not found" in err and "--config" in err


def test_config_with_a_wrong_key(project: Project) -> None:
    text = project.config_path.read_text().replace("artifact_retention_days", "artifact_retention_dayz")
    project.config_path.write_text(text)
    code, out, err = project.cli("deploy", "backend", "--env", "dev", "--version", "v1")
    assert code == 2
    assert "project.artifact_retention_dayz: unknown key" in err
    assert "Traceback" not in err
    assert project.live() == "1"


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
    assert "live now: not deployed by opcd (Lambda version 1)" in out
    assert "smoke: GET /health → 200" in out and "roll live back automatically" in out
    assert "no changes made (dry run)" in out
    assert project.live() == "1"
    listed = project.client("s3").list_objects_v2(Bucket="outreachpass-artifacts")
    assert listed.get("KeyCount", 0) == 0
    assert "shift live → new version (all at once)" in out

    # prod bakes a canary (shrunk for tests); a split alias would be repaired first
    lam = project.client("lambda")
    lam.publish_version(FunctionName="outreachpass-api-prod")
    lam.update_alias(
        FunctionName="outreachpass-api-prod", Name="live", RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}}
    )
    code, out, err = project.cli("deploy", "backend", "--env", "prod", "--version", "v1", "--dry-run")
    assert code == 0, err
    assert "1. repair: live is split {'2': 0.3}; move all traffic back to 1" in out
    assert "shift live by canary10-0.2s: 10% → 100%, 0.2s per step; every 0.1s check alarms, health, smoke" in out
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


def test_config_check(project: Project) -> None:
    code, out, err = project.cli("config", "check")
    assert code == 0 and out.endswith("ok (3 components, 2 environments)\n")
    broken = project.root / "broken.toml"
    broken.write_text(project.config_path.read_text().replace('backend = "outreachpass-api-prod", ', ""))
    code, out, err = project.cli("config", "check", str(broken))
    assert code == 2
    assert "environments.prod.functions.backend: missing" in err


def test_health_command_against_the_sandbox_gateway(project: Project) -> None:
    url = "https://api.dev.outreachpass.example/health"
    code, out, err = project.cli("health", url, "--successes", "2", "--interval", "0")
    assert code == 0, out
    assert "served by the sandbox" in out and "healthy (2/2 ok" in out
    code, out, err = project.cli("health", url, "--expect-version", "v9", "--attempts", "2", "--interval", "0")
    assert code == 1
    assert "serves version placeholder, expected v9" in out and "UNHEALTHY" in out


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("config", "sandbox", "deploy", "rollback", "status", "health"):
        assert command in out


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


def test_health_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--config", "/nonexistent.toml", "health", "http://127.0.0.1:9/", "--successes", "0"])
    assert code == 2
    assert "--successes: Input should be greater than or equal to 1" in one_line_error(capsys.readouterr().err)


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
