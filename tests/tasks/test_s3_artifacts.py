"""The artifact bucket (moto in this process): artifacts, metadata, retention rules and saved plans."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from opcd.aws import AwsTarget
from opcd.errors import InputError, ResourceMissing
from tasks.build import Package
from tasks.s3_artifacts import (
    check_bucket,
    check_retention_rule,
    download_artifact,
    load_plan,
    read_artifact_metadata,
    retention_problem,
    store_plan,
    upload_artifact,
    write_artifact_metadata,
)
from tests.tasks.conftest import logged

BUCKET = "artifacts"
MISSING = (
    "artifact bucket 'absent' does not exist in us-east-1"
    " — create it (Terraform) or fix project.artifact_bucket in opcd.toml"
)


@pytest.fixture
def s3(moto_target: AwsTarget) -> Any:
    client = moto_target.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def package(tmp_path: Path, data: bytes = b"PK zip bytes") -> Package:
    path = tmp_path / "lambda.zip"
    path.write_bytes(data)
    return Package("backend", "v1", path, hashlib.sha256(data).hexdigest(), len(data), "src-hash")


def test_check_bucket_passes_an_existing_bucket_and_names_a_missing_one(moto_target: AwsTarget, s3: Any) -> None:
    check_bucket(moto_target, BUCKET)
    with pytest.raises(ResourceMissing) as caught:
        check_bucket(moto_target, "absent")
    assert str(caught.value) == MISSING


def test_upload_writes_the_zip_then_its_metadata(
    moto_target: AwsTarget, s3: Any, tmp_path: Path, run_log: pytest.LogCaptureFixture
) -> None:
    built = package(tmp_path)
    key = upload_artifact.fn(moto_target, BUCKET, built, {"version": "v1", "git_sha": "abc"})
    assert key == "backend/v1/lambda.zip"
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "application/zip" and head["Metadata"] == {"sha256": built.sha256_hex}
    assert download_artifact.fn(moto_target, BUCKET, key) == b"PK zip bytes"
    assert read_artifact_metadata.fn(moto_target, BUCKET, "backend", "v1") == {"version": "v1", "git_sha": "abc"}
    assert logged(run_log) == [f"Uploaded s3://{BUCKET}/{key} (12 bytes)"]


def test_upload_to_a_missing_bucket_names_it(moto_target: AwsTarget, tmp_path: Path, run_log: Any) -> None:
    with pytest.raises(ResourceMissing) as caught:
        upload_artifact.fn(moto_target, "absent", package(tmp_path), {})
    assert str(caught.value) == MISSING


def test_metadata_never_uploaded_is_none_and_a_missing_bucket_is_named(moto_target: AwsTarget, s3: Any) -> None:
    assert read_artifact_metadata.fn(moto_target, BUCKET, "backend", "v9") is None
    with pytest.raises(ResourceMissing) as caught:
        read_artifact_metadata.fn(moto_target, "absent", "backend", "v1")
    assert str(caught.value) == MISSING


def test_write_metadata_alone(moto_target: AwsTarget, s3: Any) -> None:
    key = write_artifact_metadata.fn(moto_target, BUCKET, "frontend", "v2", {"image": "repo@sha256:1"})
    assert key == "frontend/v2/metadata.json"
    assert json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()) == {"image": "repo@sha256:1"}
    with pytest.raises(ResourceMissing) as caught:
        write_artifact_metadata.fn(moto_target, "absent", "frontend", "v2", {})
    assert str(caught.value) == MISSING


def rule(component: str, days: int, status: str = "Enabled") -> dict[str, Any]:
    return {"ID": f"opcd-retention-{component}", "Status": status, "Filter": {"Prefix": f"{component}/"},
            "Expiration": {"Days": days}}  # fmt: skip


def test_retention_problems_each_say_what_is_wrong() -> None:
    assert retention_problem([rule("backend", 30)], "backend", 30) is None
    assert retention_problem([], "backend", 30) == "has no retention rule for backend/ (artifacts are never expired)"
    wrong = "retention rule for backend/ is not 'Enabled, expire after 30 days'"
    assert retention_problem([rule("backend", 7)], "backend", 30) == wrong
    assert retention_problem([rule("backend", 30, "Disabled")], "backend", 30) == wrong


def test_the_retention_check_reads_the_bucket_and_only_warns(
    moto_target: AwsTarget, s3: Any, run_log: pytest.LogCaptureFixture
) -> None:
    problem = check_retention_rule.fn(moto_target, BUCKET, "backend", 30)  # no lifecycle configuration at all
    assert problem == "has no retention rule for backend/ (artifacts are never expired)"
    assert logged(run_log, logging.WARNING) == [
        f"Bucket {BUCKET} {problem}: apply Terraform, which owns the bucket's lifecycle rules (the deploy goes on)"
    ]
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [rule("backend", 30)]})
    run_log.clear()
    assert check_retention_rule.fn(moto_target, BUCKET, "backend", 30) is None
    assert logged(run_log, logging.WARNING) == []


def test_a_stored_plan_loads_back_encrypted_at_rest(
    moto_target: AwsTarget, s3: Any, tmp_path: Path, run_log: Any
) -> None:
    plan = tmp_path / "dev.bin"
    plan.write_bytes(b"terraform plan bytes")
    key = store_plan.fn(moto_target, BUCKET, "abc123", "dev", str(plan), {"add": ["aws_s3_bucket.x"]})
    assert key == "terraform/plans/abc123/dev/plan.tfplan"
    assert s3.head_object(Bucket=BUCKET, Key=key)["ServerSideEncryption"] == "aws:kms"
    path, summary = load_plan.fn(moto_target, BUCKET, "abc123", "dev", str(tmp_path))
    assert Path(path) == tmp_path / "dev.tfplan" and Path(path).read_bytes() == b"terraform plan bytes"
    assert summary == {"add": ["aws_s3_bucket.x"]}


def test_loading_a_plan_never_stored_says_to_plan_first(moto_target: AwsTarget, s3: Any, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_plan.fn(moto_target, BUCKET, "abc123", "prod", str(tmp_path))
    assert str(caught.value) == (
        f"no reviewed Terraform plan 'abc123' for prod in s3://{BUCKET}/terraform/plans/"
        " — run terraform-plan with the same git_sha first"
    )
    with pytest.raises(ResourceMissing) as missing:
        load_plan.fn(moto_target, "absent", "abc123", "prod", str(tmp_path))
    assert str(missing.value) == MISSING
    plan = tmp_path / "p"
    plan.write_bytes(b"x")
    with pytest.raises(ResourceMissing) as storing:
        store_plan.fn(moto_target, "absent", "abc123", "prod", str(plan), {})
    assert str(storing.value) == MISSING


def test_a_build_is_copied_to_another_regions_bucket_with_its_sha256_checked(
    moto_target: AwsTarget, s3: Any, tmp_path: Path, run_log: pytest.LogCaptureFixture
) -> None:
    import base64

    from opcd.errors import DeployFailed, VersionConflict
    from tasks.s3_artifacts import copy_artifact

    moto_target.client("s3").create_bucket(
        Bucket="artifacts-west", CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
    )
    built = package(tmp_path)
    code_sha256 = base64.b64encode(hashlib.sha256(b"PK zip bytes").digest()).decode()
    metadata = {"version": "v1", "sha256": built.sha256_hex, "code_sha256": code_sha256}
    upload_artifact.fn(moto_target, BUCKET, built, metadata)

    key = copy_artifact.fn(moto_target, BUCKET, "artifacts-west", "backend", "v1", code_sha256)

    assert download_artifact.fn(moto_target, "artifacts-west", key) == b"PK zip bytes"
    assert read_artifact_metadata.fn(moto_target, "artifacts-west", "backend", "v1") == metadata
    assert logged(run_log)[-1] == f"Copied s3://{BUCKET}/{key} to s3://artifacts-west (sha256 checked)"
    # the same build already there (a release of the version again): used as it is, not copied over
    copy_artifact.fn(moto_target, BUCKET, "artifacts-west", "backend", "v1", code_sha256)
    assert logged(run_log)[-1] == f"s3://artifacts-west/{key} already holds this build: not copied again"
    # another build of the version there: refused, and what is there stays
    other = "b3RoZXIgYnVpbGQ="
    s3.put_object(Bucket="artifacts-west", Key=key, Body=b"another build")
    s3.put_object(Bucket="artifacts-west", Key="backend/v1/metadata.json", Body=json.dumps({"code_sha256": other}))
    with pytest.raises(VersionConflict, match="already holds another build of backend v1 .*nothing was copied over"):
        copy_artifact.fn(moto_target, BUCKET, "artifacts-west", "backend", "v1", code_sha256)
    assert download_artifact.fn(moto_target, "artifacts-west", key) == b"another build"
    # a copy that is not the build (the source changed since): refused, and no metadata marks it whole
    s3.delete_object(Bucket="artifacts-west", Key="backend/v1/metadata.json")
    with pytest.raises(DeployFailed, match="has sha256 .*, not the build's"):
        copy_artifact.fn(moto_target, BUCKET, "artifacts-west", "backend", "v1", "bm90IHRoZSBidWlsZA==")
    assert read_artifact_metadata.fn(moto_target, "artifacts-west", "backend", "v1") is None
