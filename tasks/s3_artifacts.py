"""The artifact bucket: ``{component}/{version}/lambda.zip`` and its ``metadata.json``; saved
Terraform plans at ``terraform/plans/{plan id}/{environment}/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd.aws import AwsTarget, error_code
from opcd.errors import DeployFailed, InputError, ResourceMissing, VersionConflict
from opcd.progress import report
from tasks.build import Package

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import LifecycleRuleOutputTypeDef

RULE_PREFIX = "opcd-retention-"


def artifact_key(component: str, version: str, name: str = "lambda.zip") -> str:
    return f"{component}/{version}/{name}"


def _missing_bucket(bucket: str, target: AwsTarget) -> ResourceMissing:
    return ResourceMissing(
        f"artifact bucket {bucket!r} does not exist in {target.region}",
        "create it (Terraform) or fix project.artifact_bucket in opcd.toml",
    )


def check_bucket(target: AwsTarget, bucket: str) -> None:
    """Raise ResourceMissing unless the artifact bucket exists."""
    try:
        target.client("s3").head_bucket(Bucket=bucket)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            raise _missing_bucket(bucket, target) from exc
        raise


@task(name="read-artifact-metadata", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def read_artifact_metadata(target: AwsTarget, bucket: str, component: str, version: str) -> dict[str, Any] | None:
    """The stored metadata of ``component`` ``version``, or None when it was never uploaded."""
    s3 = target.client("s3")
    try:
        body = s3.get_object(Bucket=bucket, Key=artifact_key(component, version, "metadata.json"))["Body"]
    except Exception as exc:
        code = error_code(exc)
        if code in ("NoSuchKey", "404"):
            return None
        if code == "NoSuchBucket":
            raise _missing_bucket(bucket, target) from exc
        raise
    metadata: dict[str, Any] = json.loads(body.read())
    return metadata


@task(name="upload-artifact", cache_policy=NO_CACHE)
def upload_artifact(target: AwsTarget, bucket: str, package: Package, metadata: dict[str, Any]) -> str:
    """Upload the zip, then its metadata (metadata last: its presence marks a whole artifact).

    No task retries: boto already retries what may pass (5xx, throttling, a dropped connection) with
    backoff, 5 attempts in all; retrying the task on top would multiply them.
    """
    logger = get_run_logger()
    s3 = target.client("s3")
    key = artifact_key(package.component, package.version)
    report("upload", f"s3://{bucket}/{key} ({package.size} bytes)")
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=package.path.read_bytes(),
            ContentType="application/zip",
            Metadata={"sha256": package.sha256_hex},
        )
    except Exception as exc:
        if error_code(exc) == "NoSuchBucket":
            raise _missing_bucket(bucket, target) from exc
        raise
    s3.put_object(
        Bucket=bucket,
        Key=artifact_key(package.component, package.version, "metadata.json"),
        Body=json.dumps(metadata, indent=2, sort_keys=True).encode(),
        ContentType="application/json",
    )
    logger.info("Uploaded s3://%s/%s (%d bytes)", bucket, key, package.size)
    return key


@task(name="copy-artifact", cache_policy=NO_CACHE)
def copy_artifact(target: AwsTarget, source: str, bucket: str, component: str, version: str, code_sha256: str) -> str:
    """Copy the version's package and metadata from bucket ``source`` (another region's) into ``bucket``, server-side
    (CopyObject, S3 computing the copy's SHA-256); the copy's checksum must be the build's ``code_sha256``
    (base64 of its SHA-256, as Lambda's CodeSha256). Metadata last: its presence marks a whole artifact.

    A whole artifact already in ``bucket`` is never overwritten: the same build is used as it is (not copied
    again), another build of the version is a VersionConflict. Returns the key; DeployFailed when the copy is not
    the build (its metadata is then not copied, so nothing marks it whole)."""
    s3 = target.client("s3")
    key = artifact_key(component, version)
    there = read_artifact_metadata.fn(target, bucket, component, version)
    if there is not None:
        if there.get("code_sha256") != code_sha256:
            raise VersionConflict(
                f"s3://{bucket}/{key} already holds another build of {component} {version}"
                f" (sha256 {there.get('code_sha256')}, this build's {code_sha256}): nothing was copied over it",
                "a version names one build: pick a new version for changed source",
            )
        get_run_logger().info("s3://%s/%s already holds this build: not copied again", bucket, key)
        return key
    report("copy", f"s3://{source}/{key} → s3://{bucket}/{key}")
    try:
        copied = s3.copy_object(
            Bucket=bucket, Key=key, CopySource={"Bucket": source, "Key": key}, ChecksumAlgorithm="SHA256"
        )
    except Exception as exc:
        if error_code(exc) == "NoSuchBucket":
            raise _missing_bucket(bucket, target) from exc
        raise
    checksum = copied.get("CopyObjectResult", {}).get("ChecksumSHA256")
    if checksum != code_sha256:
        raise DeployFailed(
            f"the copy s3://{bucket}/{key} has sha256 {checksum}, not the build's {code_sha256}",
            f"nothing deployed from it; check s3://{source}/{key} and deploy again",
        )
    metadata = artifact_key(component, version, "metadata.json")
    s3.copy_object(Bucket=bucket, Key=metadata, CopySource={"Bucket": source, "Key": metadata})
    get_run_logger().info("Copied s3://%s/%s to s3://%s (sha256 checked)", source, key, bucket)
    return key


@task(name="download-artifact", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def download_artifact(target: AwsTarget, bucket: str, key: str) -> bytes:
    data: bytes = target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def lifecycle_rules(target: AwsTarget, bucket: str) -> list[LifecycleRuleOutputTypeDef]:
    """The bucket's lifecycle rules (none: an empty list). Terraform writes them; opcd only reads them."""
    try:
        rules = target.client("s3").get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except Exception as exc:
        if error_code(exc) != "NoSuchLifecycleConfiguration":
            raise
        return []
    return rules


def retention_problem(rules: list[LifecycleRuleOutputTypeDef], component: str, days: int) -> str | None:
    """What is wrong with the rule that expires ``{component}/`` artifacts after ``days``; None when it is right."""
    rule = next((r for r in rules if r.get("ID") == f"{RULE_PREFIX}{component}"), None)
    if rule is None:
        return f"has no retention rule for {component}/ (artifacts are never expired)"
    if rule.get("Status") != "Enabled" or rule.get("Expiration", {}).get("Days") != days:
        return f"retention rule for {component}/ is not 'Enabled, expire after {days} days'"
    return None


@task(name="check-retention-rule", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def check_retention_rule(target: AwsTarget, bucket: str, component: str, days: int) -> str | None:
    """Warn in the run log unless the bucket expires ``{component}/`` artifacts after ``days``.

    Terraform owns the bucket's lifecycle rules: a deploy reads them and never writes them (its role
    may not: a lifecycle rule could expire the ledger). Returns the problem, or None.
    """
    problem = retention_problem(lifecycle_rules(target, bucket), component, days)
    if problem:
        get_run_logger().warning(
            "Bucket %s %s: apply Terraform, which owns the bucket's lifecycle rules (the deploy goes on)",
            bucket, problem,
        )  # fmt: skip
    return problem


@task(name="write-artifact-metadata", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def write_artifact_metadata(
    target: AwsTarget, bucket: str, component: str, version: str, metadata: dict[str, Any]
) -> str:
    """``{component}/{version}/metadata.json`` alone: what an image build recorded (the image is in ECR)."""
    key = artifact_key(component, version, "metadata.json")
    try:
        target.client("s3").put_object(
            Bucket=bucket, Key=key, Body=json.dumps(metadata, indent=2, sort_keys=True).encode(),
            ContentType="application/json",
        )  # fmt: skip
    except Exception as exc:
        if error_code(exc) == "NoSuchBucket":
            raise _missing_bucket(bucket, target) from exc
        raise
    return key


PLANS_PREFIX = "terraform/plans"


def plan_key(plan_id: str, environment: str, name: str) -> str:
    return f"{PLANS_PREFIX}/{plan_id}/{environment}/{name}"


@task(name="store-terraform-plan", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def store_plan(
    target: AwsTarget, bucket: str, plan_id: str, environment: str, plan_file: str, summary: dict[str, Any]
) -> str:
    """Keep a saved plan and its summary (addresses only: no values) for the apply that follows review."""
    s3 = target.client("s3")
    key = plan_key(plan_id, environment, "plan.tfplan")
    try:
        # A saved plan holds the prior state and every value, sensitive ones too: encrypted with KMS
        s3.put_object(Bucket=bucket, Key=key, Body=Path(plan_file).read_bytes(), ServerSideEncryption="aws:kms")
        s3.put_object(
            Bucket=bucket, Key=plan_key(plan_id, environment, "summary.json"),
            Body=json.dumps(summary, indent=2, sort_keys=True).encode(), ContentType="application/json",
        )  # fmt: skip
    except Exception as exc:
        if error_code(exc) == "NoSuchBucket":
            raise _missing_bucket(bucket, target) from exc
        raise
    get_run_logger().info("Saved %s's plan at s3://%s/%s", environment, bucket, key)
    return key


@task(name="load-terraform-plan", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def load_plan(
    target: AwsTarget, bucket: str, plan_id: str, environment: str, out_dir: str
) -> tuple[str, dict[str, Any]]:
    """The reviewed plan of ``environment`` (written to ``out_dir``) and its summary."""
    s3 = target.client("s3")
    try:
        summary = json.loads(
            s3.get_object(Bucket=bucket, Key=plan_key(plan_id, environment, "summary.json"))["Body"].read()
        )
        body = s3.get_object(Bucket=bucket, Key=plan_key(plan_id, environment, "plan.tfplan"))["Body"].read()
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            raise InputError(
                f"no reviewed Terraform plan {plan_id!r} for {environment} in s3://{bucket}/{PLANS_PREFIX}/",
                "run terraform-plan with the same git_sha first",
            ) from exc
        if error_code(exc) == "NoSuchBucket":
            raise _missing_bucket(bucket, target) from exc
        raise
    path = Path(out_dir) / f"{environment}.tfplan"
    path.write_bytes(body)
    return str(path), summary
