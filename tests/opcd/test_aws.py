"""Which AWS opcd talks to, in order: AWS_ENDPOINT_URL, credentials, a running sandbox, AWS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opcd.aws import AwsTarget, error_code, resolve_target


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)


def write_sandbox(state: Path, url: str) -> None:
    state.mkdir(parents=True, exist_ok=True)
    info = {
        "aws_endpoint_url": url,
        "region": "us-east-1",
        "pid": 1,
        "gateway": {"https://api.example": f"{url}/_gateway/fn"},
    }
    (state / "sandbox.json").write_text(json.dumps(info))


def test_running_sandbox_is_used_when_nothing_else_is_chosen(tmp_path: Path, sandbox: Any) -> None:
    write_sandbox(tmp_path, sandbox.url)
    target = resolve_target(tmp_path, "eu-west-1")
    assert target.kind == "sandbox" and target.endpoint_url == sandbox.url
    assert target.describe().startswith("AWS target: embedded sandbox at http://127.0.0.1:")
    assert target.resolve_url("https://api.example/health?x=1") == f"{sandbox.url}/_gateway/fn/health?x=1"
    assert target.resolve_url("https://other.example/health") == "https://other.example/health"


def test_stale_sandbox_file_is_ignored(tmp_path: Path) -> None:
    write_sandbox(tmp_path, "http://127.0.0.1:9")  # nothing listens there
    target = resolve_target(tmp_path, "eu-west-1")
    assert target.kind == "aws" and target.region == "eu-west-1"
    assert "AWS (eu-west-1" in target.describe()


def test_explicit_endpoint_wins(tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sandbox(tmp_path, sandbox.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1234")
    target = resolve_target(tmp_path, "us-east-1")
    assert (target.kind, target.endpoint_url, target.gateway) == ("endpoint", "http://127.0.0.1:1234", {})
    assert "from AWS_ENDPOINT_URL" in target.describe()


def test_exported_sandbox_endpoint_keeps_the_gateway(
    tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_sandbox(tmp_path, sandbox.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", sandbox.url)
    assert resolve_target(tmp_path, "us-east-1").kind == "sandbox"


def test_credentials_mean_real_aws(tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sandbox(tmp_path, sandbox.url)
    monkeypatch.setenv("AWS_PROFILE", "prod-deployer")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    target = resolve_target(tmp_path, "us-east-1")
    assert (target.kind, target.region, target.endpoint_url) == ("aws", "eu-central-1", None)


def test_clients_are_cached_per_target_and_service() -> None:
    target = AwsTarget("endpoint", "us-east-1", "http://127.0.0.1:1", credentials=("a", "b"))
    assert target.client("s3") is target.client("s3")
    assert target.client("s3") is not target.client("lambda")


def test_error_code() -> None:
    assert error_code(ValueError("x")) == ""


def test_targets_share_one_session_per_region_and_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    import opcd.aws

    monkeypatch.setattr(opcd.aws, "_sessions", {})
    monkeypatch.setattr(opcd.aws, "_clients", {})
    creds = ("testing", "testing")
    one = AwsTarget("sandbox", "us-east-1", "http://127.0.0.1:1", creds, gateway={"https://a": "http://x"})
    two = AwsTarget("sandbox", "us-east-1", "http://127.0.0.1:1", creds, gateway={"https://b": "http://y"})
    assert one.client("s3") is one.client("s3")  # a client per target and service
    assert one.client("s3") is not two.client("s3")
    assert two.client("s3").meta.endpoint_url == "http://127.0.0.1:1"
    assert len(opcd.aws._sessions) == 1  # the models one session read serve every target
    AwsTarget("sandbox", "eu-west-1", "http://127.0.0.1:1", creds).client("s3")
    AwsTarget("aws", "us-east-1").client("s3")
    assert len(opcd.aws._sessions) == 3
