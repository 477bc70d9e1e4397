"""Lambda: read what ``live`` points at, update code from S3, publish, invoke, move the alias."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.transactions import Transaction, get_transaction

from opcd.aws import AwsTarget, error_code
from opcd.config import SmokeCheck
from opcd.errors import DeployFailed, ResourceMissing
from opcd.progress import report
from opcd.versions import version_or_none

if TYPE_CHECKING:
    from types_boto3_lambda.type_defs import (
        AliasConfigurationResponseTypeDef,
        FunctionConfigurationResponseTypeDef,
        FunctionConfigurationTypeDef,
    )

ALIAS = "live"
_DESCRIPTION = re.compile(r"opcd (?P<component>[a-z][a-z0-9-]*) (?P<version>\S+) sha256=[0-9a-f]{64}", re.ASCII)


@dataclass(frozen=True)
class LiveVersion:
    """What an alias points at: a Lambda version number and the app version it was built from."""

    function: str
    lambda_version: str
    app_version: str | None
    code_sha256: str
    description: str
    weights: dict[str, float]
    alias_arn: str = ""


def version_description(component: str, version: str, sha256_hex: str) -> str:
    return f"opcd {component} {version} sha256={sha256_hex}"


def app_version_of(description: str) -> str | None:
    """The version a description of :func:`version_description` names; None for any other text."""
    match = _DESCRIPTION.fullmatch(description or "")
    return version_or_none(match["version"]) if match else None


def _function_missing(function: str, target: AwsTarget) -> ResourceMissing:
    where = "the sandbox" if target.kind == "sandbox" else target.region
    return ResourceMissing(
        f"Lambda function {function!r} does not exist in {where}",
        "create it (Terraform), start the sandbox with `opcd sandbox up`, or fix opcd.toml",
    )


def alias_weights(alias: AliasConfigurationResponseTypeDef) -> dict[str, float]:
    """``{version: weight}`` of a GetAlias/UpdateAlias answer's split (empty when not split)."""
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return {str(k): float(v) for k, v in weights.items()}


def read_weights(target: AwsTarget, function: str) -> tuple[str, dict[str, float]]:
    """The ``live`` alias's primary version and its split."""
    alias = target.client("lambda").get_alias(FunctionName=function, Name=ALIAS)
    return str(alias["FunctionVersion"]), alias_weights(alias)


def read_live(target: AwsTarget, function: str, alias: str = ALIAS, known: LiveVersion | None = None) -> LiveVersion:
    """Read the alias and the version it points at (no Prefect task: also used by status).

    ``known``: this function's live version as read earlier in the run (its plan). When the alias still points
    at that published version, its configuration is not read again: a published version never changes (its
    code, its description); the alias is always read, as it may have moved.
    """
    lam = target.client("lambda")
    try:
        alias_info = lam.get_alias(FunctionName=function, Name=alias)
    except Exception as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        try:  # which is missing: the function, or only its alias?
            lam.get_function_configuration(FunctionName=function)
        except Exception as missing:
            if error_code(missing) == "ResourceNotFoundException":
                raise _function_missing(function, target) from missing
            raise
        raise ResourceMissing(
            f"Lambda function {function!r} has no {alias!r} alias",
            "create the alias (Terraform) pointing at the version serving traffic now",
        ) from exc
    version = alias_info["FunctionVersion"]
    if known is not None and (known.function, known.lambda_version) == (function, version) and version != "$LATEST":
        return replace(known, weights=alias_weights(alias_info), alias_arn=alias_info.get("AliasArn", ""))
    conf = lam.get_function_configuration(FunctionName=function, Qualifier=version)
    return LiveVersion(
        function=function,
        lambda_version=version,
        app_version=app_version_of(conf.get("Description", "")),
        code_sha256=conf.get("CodeSha256", ""),
        description=conf.get("Description", ""),
        weights=alias_weights(alias_info),
        alias_arn=alias_info.get("AliasArn", ""),
    )


@task(name="read-live-alias", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def read_live_alias(target: AwsTarget, function: str, known: LiveVersion | None = None) -> LiveVersion:
    live = read_live(target, function, known=known)
    get_run_logger().info(
        "%s:%s → version %s (%s)", function, ALIAS, live.lambda_version, live.app_version or "not deployed by opcd"
    )
    return live


def wait_until_updated(
    target: AwsTarget, function: str, timeout: float = 300.0, sleep: Callable[[float], None] = time.sleep
) -> FunctionConfigurationResponseTypeDef:
    """Poll until ``LastUpdateStatus`` leaves InProgress; fail on Failed."""
    lam = target.client("lambda")
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        conf = lam.get_function_configuration(FunctionName=function)
        status = conf.get("LastUpdateStatus", "Successful")
        if status == "Successful" and conf.get("State", "Active") == "Active":
            return conf
        if status == "Failed" or conf.get("State") == "Failed":
            raise DeployFailed(f"updating {function} failed: {conf.get('LastUpdateStatusReason', 'no reason given')}")
        if time.monotonic() > deadline:
            raise DeployFailed(f"updating {function} did not finish within {timeout:.0f}s")
        sleep(delay)
        delay = min(delay * 2, 5.0)


@task(name="update-function-code", cache_policy=NO_CACHE)
def update_function_code(target: AwsTarget, function: str, bucket: str, key: str, code_sha256: str) -> str:
    """Point ``$LATEST`` at the artifact, wait for the update, and check the code sha.

    Only ``$LATEST`` changes here; traffic does not (it follows the ``live`` alias).
    """
    logger = get_run_logger()
    report("update code", f"{function} $LATEST from s3://{bucket}/{key}")
    lam = target.client("lambda")
    lam.update_function_code(FunctionName=function, S3Bucket=bucket, S3Key=key)
    conf = wait_until_updated(target, function)
    if conf.get("CodeSha256") != code_sha256:
        raise DeployFailed(
            f"{function}: code sha256 after update is {conf.get('CodeSha256')!r}, expected {code_sha256!r}",
            f"s3://{bucket}/{key} is missing or changed; rebuild and upload the version",
        )
    logger.info("Updated %s $LATEST from s3://%s/%s (sha verified)", function, bucket, key)
    return str(conf["CodeSha256"])


@task(name="publish-version", cache_policy=NO_CACHE)
def publish_version(target: AwsTarget, function: str, description: str, code_sha256: str) -> str:
    """Publish ``$LATEST`` as an immutable version; AWS refuses if its code is not ``code_sha256``."""
    report("publish", f"{function} $LATEST as a new version")
    lam = target.client("lambda")
    result = lam.publish_version(FunctionName=function, CodeSha256=code_sha256, Description=description)
    if result.get("CodeSha256") != code_sha256:
        raise DeployFailed(f"{function}: published version {result['Version']} has unexpected code")
    get_run_logger().info("Published %s version %s", function, result["Version"])
    return str(result["Version"])


def http_event(check: SmokeCheck) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for a smoke check."""
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": check.path,
        "rawQueryString": "",
        "headers": {"user-agent": "opcd-smoke", "host": "smoke.opcd.local"},
        "requestContext": {
            "http": {"method": check.method, "path": check.path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "opcd-smoke"},
            "requestId": f"opcd-smoke-{int(now * 1000)}",
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }  # fmt: skip


def _decode(payload: bytes) -> Any:
    """An invocation's JSON payload, or None when it is not JSON."""
    try:
        return json.loads(payload or b"null")
    except ValueError:
        return None


def _error_of(answer: Any, function_error: str) -> tuple[str, str]:
    """(errorType, errorMessage) of a failed invocation's payload."""
    if isinstance(answer, dict):
        return str(answer.get("errorType", function_error)), str(answer.get("errorMessage", ""))
    return function_error, ""


def judge_smoke(check: SmokeCheck, function_error: str | None, payload: bytes) -> str | None:
    """None when the response passes ``check``, else a one-line reason."""
    answer = _decode(payload)
    if function_error:
        kind, detail = _error_of(answer, function_error)
        return f"{check.method} {check.path}: handler error {kind}: {detail}"[:300]
    status = answer.get("statusCode", 200) if isinstance(answer, dict) else 200
    if status != check.expect_status:
        return f"{check.method} {check.path}: status {status}, expected {check.expect_status}"
    if check.body_contains and check.body_contains not in str(
        answer.get("body", "") if isinstance(answer, dict) else answer
    ):
        return f"{check.method} {check.path}: body lacks {check.body_contains!r}"
    return None


@task(name="invoke-smoke-checks", cache_policy=NO_CACHE)
def invoke_smoke_checks(target: AwsTarget, function: str, qualifier: str, checks: list[SmokeCheck]) -> list[str]:
    """The smoke checks as the deploy's step (:func:`run_smoke_checks`)."""
    report("smoke", f"{', '.join(f'{c.method} {c.path}' for c in checks)} on version {qualifier}")
    return run_smoke_checks(target, function, qualifier, checks)


def run_smoke_checks(target: AwsTarget, function: str, qualifier: str, checks: list[SmokeCheck]) -> list[str]:
    """Invoke ``function:qualifier`` once per check; raise DeployFailed listing what failed."""
    logger = get_run_logger()
    lam = target.client("lambda")
    failures = []
    for check in checks:
        result = lam.invoke(FunctionName=function, Qualifier=qualifier, Payload=json.dumps(http_event(check)).encode())
        reason = judge_smoke(check, result.get("FunctionError"), result["Payload"].read())
        if reason:
            failures.append(reason)
            logger.warning("Smoke %s %s on version %s: FAILED (%s)", check.method, check.path, qualifier, reason)
        else:
            logger.info("Smoke %s %s on version %s: ok", check.method, check.path, qualifier)
    if failures:
        raise DeployFailed("smoke failed: " + "; ".join(failures))
    return [f"{c.method} {c.path}" for c in checks]


def judge_sample(expect: dict[str, Any] | None, function_error: str | None, payload: bytes) -> str | None:
    """None when a sample-event response passes, else a one-line reason."""
    answer = _decode(payload)
    if function_error:
        if isinstance(answer, dict):
            kind, detail = _error_of(answer, function_error)
            return f"handler error {kind}: {detail}"[:300]
        return f"handler error {function_error}"
    for key, value in (expect or {}).items():
        got = answer.get(key) if isinstance(answer, dict) else None
        if got != value:
            return f"response {key}={got!r}, expected {value!r}"
    return None


@task(name="invoke-sample-event", cache_policy=NO_CACHE)
def invoke_sample_event(
    target: AwsTarget, function: str, qualifier: str, event: dict[str, Any], expect: dict[str, Any] | None
) -> str:
    """Invoke ``function:qualifier`` with the sample event; raise DeployFailed when it fails."""
    report("sample event", f"on {function}:{qualifier}")
    lam = target.client("lambda")
    result = lam.invoke(FunctionName=function, Qualifier=qualifier, Payload=json.dumps(event).encode())
    payload = result["Payload"].read()
    reason = judge_sample(expect, result.get("FunctionError"), payload)
    if reason:
        get_run_logger().warning("Sample event on %s:%s: FAILED (%s)", function, qualifier, reason)
        raise DeployFailed(f"sample event on {qualifier}: {reason}")
    get_run_logger().info("Sample event on %s:%s: ok", function, qualifier)
    return str(payload.decode())


def move_alias(target: AwsTarget, function: str, version: str) -> None:
    """Send all of ``live``'s traffic to ``version`` (and clear any split), then check it did."""
    lam = target.client("lambda")
    lam.update_alias(
        FunctionName=function, Name=ALIAS, FunctionVersion=version, RoutingConfig={"AdditionalVersionWeights": {}}
    )
    now_on, weights = read_weights(target, function)
    if now_on != version or weights:
        raise DeployFailed(f"{function}:{ALIAS} did not move to version {version}")


@task(name="move-alias-reversibly", cache_policy=NO_CACHE)
def move_alias_reversibly(target: AwsTarget, function: str, version: str, previous: str) -> str:
    """Move ``live`` to ``version``. Rolled back (to ``previous``) when the transaction fails."""
    txn = get_transaction()
    if txn is not None:
        txn.set("target", target)
        txn.set("function", function)
        txn.set("previous", previous)
    report("shift", f"{function}:{ALIAS} → version {version} (from {previous})")
    move_alias(target, function, version)
    get_run_logger().info("Traffic: %s:%s now on version %s (was %s)", function, ALIAS, version, previous)
    return version


@move_alias_reversibly.on_rollback
def _restore_alias(txn: Transaction) -> None:
    """Put ``live`` back on the remembered version. Idempotent; records its own failure."""
    target, function, previous = txn.get("target"), txn.get("function"), txn.get("previous")
    logger = get_run_logger()
    logger.warning("Rolling back: %s:%s → version %s", function, ALIAS, previous)
    try:
        move_alias(target, function, previous)
    except Exception as exc:  # a hook's exception is swallowed by Prefect: say it loudly
        logger.error("Rollback of %s:%s to version %s FAILED: %s", function, ALIAS, previous, exc)
        txn.set("rollback_error", str(exc))


@task(name="move-alias", cache_policy=NO_CACHE)
def move_alias_task(target: AwsTarget, function: str, version: str) -> str:
    """Move ``live`` to ``version`` outside a transaction (explicit rollbacks)."""
    report("shift", f"{function}:{ALIAS} → version {version}")
    move_alias(target, function, version)
    get_run_logger().info("Traffic: %s:%s now on version %s", function, ALIAS, version)
    return version


def list_versions(target: AwsTarget, function: str) -> list[FunctionConfigurationTypeDef]:
    """Every published version of ``function`` (not ``$LATEST``), oldest first."""
    lam = target.client("lambda")
    versions: list[FunctionConfigurationTypeDef] = []
    for page in lam.get_paginator("list_versions_by_function").paginate(FunctionName=function):
        versions += [v for v in page["Versions"] if v["Version"] != "$LATEST"]
    return sorted(versions, key=lambda v: int(v["Version"]))
