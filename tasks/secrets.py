"""Secrets Manager. Secret values are returned as SecretStr and never logged."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from opcd.aws import AwsTarget, error_code
from opcd.errors import ResourceMissing


@task(name="read-secret", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def read_secret(target: AwsTarget, name: str) -> SecretStr:
    try:
        value = target.client("secretsmanager").get_secret_value(SecretId=name)
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise ResourceMissing(
                f"secret {name!r} does not exist in {target.region}",
                "create it (Terraform) or fix database_secret in opcd.toml",
            ) from exc
        raise
    return SecretStr(value.get("SecretString") or "")
