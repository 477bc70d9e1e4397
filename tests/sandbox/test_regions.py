"""The sandbox seeds every region an environment names; its gateway invokes the function of the health URL's region."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from opcd.config import load_config
from tests.conftest import Project, fresh_project
from tests.regions import client_in, lay_out_regions

ECHO_REGION = """import json, os


def handler(event, context):
    return {"statusCode": 200, "body": json.dumps({"region": os.environ["AWS_REGION"]})}
"""


@pytest.fixture
def regions(tmp_path: Path, sandbox: Any, build_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    return fresh_project(tmp_path, sandbox, build_cache, monkeypatch, lay_out_regions)


def echo_region(project: Project, function: str, region: str) -> None:
    """``function:live`` in ``region`` runs a handler that answers with the region it runs in."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app/__init__.py", ECHO_REGION)
    lam = client_in(project, "lambda", region)
    lam.update_function_code(FunctionName=function, ZipFile=buffer.getvalue())
    version = lam.publish_version(FunctionName=function)["Version"]
    lam.update_alias(FunctionName=function, Name="live", FunctionVersion=version)


def test_every_configured_region_is_seeded(regions: Project) -> None:
    config = load_config(regions.config_path)
    for region in ("us-east-1", "us-west-2"):
        s3 = client_in(regions, "s3", region)
        assert s3.get_bucket_location(Bucket=f"outreachpass-artifacts-{region}")["LocationConstraint"] in (
            None if region == "us-east-1" else region,
        )
        lam = client_in(regions, "lambda", region)
        assert lam.get_alias(FunctionName="outreachpass-api-prod", Name="live")["FunctionVersion"] == "1"
        alarms = client_in(regions, "cloudwatch", region).describe_alarms()["MetricAlarms"]
        assert "outreachpass-api-prod-errors" in {a["AlarmName"] for a in alarms}
        secret = client_in(regions, "secretsmanager", region).describe_secret(SecretId="outreachpass/prod/database")
        assert secret["Name"] == config.database_secret("prod", region)
    west = client_in(regions, "lambda", "us-west-2").list_functions()["Functions"]
    assert {f["FunctionName"] for f in west} == {"outreachpass-api-prod", "outreachpass-worker-prod"}  # prod only


def test_the_gateway_invokes_the_function_of_the_health_urls_region(regions: Project) -> None:
    from opcd.aws import target_for

    config = load_config(regions.config_path)
    for region in ("us-east-1", "us-west-2"):
        echo_region(regions, "outreachpass-api-prod", region)
    for region in ("us-east-1", "us-west-2"):
        url = target_for(config, "prod", region).resolve_url(config.health_url("backend", "prod", region) or "")
        assert url.startswith(regions.endpoint)  # the gateway's, not the public URL
        assert httpx.get(url, timeout=30).json() == {"region": region}
