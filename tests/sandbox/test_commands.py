"""`opcd sandbox up --detach | env | down` as a user runs them, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import httpx

from tests.conftest import copy_examples, project_config, write_terraform_root


def opcd(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_up_env_down(tmp_path: Path) -> None:
    copy_examples(tmp_path)
    write_terraform_root(tmp_path / "src" / "terraform")
    (tmp_path / "opcd.toml").write_text(project_config())

    up = opcd(tmp_path, "sandbox", "up", "--detach", "--port", "0")
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.startswith("sandbox running at http://127.0.0.1:")
        info = json.loads((tmp_path / ".opcd" / "sandbox.json").read_text())
        assert set(info) >= {"aws_endpoint_url", "region", "pid", "gateway"}

        again = opcd(tmp_path, "sandbox", "up", "--detach", "--port", "0")
        assert again.returncode == 0 and "already running" in again.stdout and "warning" not in again.stdout
        with (tmp_path / "opcd.toml").open("a") as config:
            config.write("\n# edited\n")
        again = opcd(tmp_path, "sandbox", "up", "--detach", "--port", "0")
        assert "seeded from another version of opcd.toml" in again.stdout

        env = opcd(tmp_path, "sandbox", "env")
        assert f"export AWS_ENDPOINT_URL={info['aws_endpoint_url']}" in env.stdout.splitlines()

        # what Terraform would have created is there
        lam = boto3.client(
            "lambda", endpoint_url=info["aws_endpoint_url"], region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        assert lam.get_alias(FunctionName="outreachpass-api-prod", Name="live")["FunctionVersion"] == "1"
        health = httpx.get(info["gateway"]["https://api.dev.outreachpass.example"] + "/health", timeout=30)
        assert health.json()["version"] == "placeholder"

        status = opcd(tmp_path, "status")
        assert (
            status.stdout.splitlines()[0] == f"AWS target: embedded sandbox at {info['aws_endpoint_url']} (us-east-1),"
            " account 123456789012 as arn:aws:sts::123456789012:user/moto"
        )
    finally:
        down = opcd(tmp_path, "sandbox", "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not (tmp_path / ".opcd" / "sandbox.json").exists()
    assert opcd(tmp_path, "sandbox", "env").returncode == 1
    assert "no sandbox is running" in opcd(tmp_path, "sandbox", "down").stdout


def test_busy_port_is_a_clear_error(tmp_path: Path, sandbox: object) -> None:
    copy_examples(tmp_path)
    write_terraform_root(tmp_path / "src" / "terraform")
    (tmp_path / "opcd.toml").write_text(project_config())
    port = str(sandbox.port)
    result = opcd(tmp_path, "sandbox", "up", "--port", port)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
