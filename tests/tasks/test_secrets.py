"""Secrets Manager (moto in this process): the value comes back hidden; a missing secret says which."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from opcd.aws import AwsTarget
from opcd.errors import ResourceMissing
from tasks.secrets import read_secret


def test_the_value_is_a_secret_string(moto_target: AwsTarget) -> None:
    url = "postgres://u:pw@db/app"  # pragma: allowlist secret
    moto_target.client("secretsmanager").create_secret(Name="db-url", SecretString=url)
    value = read_secret.fn(moto_target, "db-url")
    assert value.get_secret_value() == url
    assert "pw" not in str(value) and "pw" not in repr(value)


def test_a_binary_secret_reads_as_empty(moto_target: AwsTarget) -> None:
    moto_target.client("secretsmanager").create_secret(Name="blob", SecretBinary=b"\x00\x01")
    assert read_secret.fn(moto_target, "blob").get_secret_value() == ""


def test_a_missing_secret_names_itself_and_the_fix(moto_target: AwsTarget) -> None:
    with pytest.raises(ResourceMissing) as caught:
        read_secret.fn(moto_target, "nope")
    assert str(caught.value) == (
        "secret 'nope' does not exist in us-east-1 — create it (Terraform) or fix database_secret in opcd.toml"
    )


def test_other_errors_pass_through(moto_target: AwsTarget) -> None:
    secrets = moto_target.client("secretsmanager")
    secrets.create_secret(Name="gone", SecretString="x")
    secrets.delete_secret(SecretId="gone")  # pragma: allowlist secret (scheduled for deletion: InvalidRequestException)
    with pytest.raises(ClientError, match="InvalidRequestException"):
        read_secret.fn(moto_target, "gone")
