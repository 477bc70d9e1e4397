"""One Lambda component to one environment, blue/green behind the ``live`` alias.

Steps (ARCHITECTURE.md, "One Lambda deploy"): build once per version and keep it in S3; take the
environment's lock; remember what ``live`` points at; update the code, verify its sha, publish a
version; run migrations; smoke-invoke the new version (failure: ``live`` untouched); shift
``live``; check health and alarms; on any failure after the shift, roll ``live`` back (a Prefect
transaction's ``on_rollback`` hook), verify it, and end Failed; record the outcome.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger
from prefect.transactions import transaction

from opcd.aws import AwsTarget, resolve_target
from opcd.config import Config, load_config
from opcd.errors import DeployFailed, InputError, OpcdError, VersionConflict
from opcd.locks import environment_lock
from opcd.versions import check_version
from tasks.build import PLATFORMS, Package, build_lambda_package, source_hash
from tasks.cloudwatch import alarm_states, check_alarms
from tasks.eventbridge import RuleChanges, sync_event_rules
from tasks.health import check_health
from tasks.lambda_functions import (
    LiveVersion,
    invoke_sample_event,
    invoke_smoke_checks,
    point_alias,
    publish_version,
    read_live,
    read_live_alias,
    shift_traffic,
    update_function_code,
    version_description,
)
from tasks.ledger import Record, actor, now, publish_run_artifact, read_latest, record_in_ledger
from tasks.migrations import run_migrations
from tasks.s3_artifacts import (
    artifact_key,
    check_bucket,
    download_artifact,
    ensure_retention_rule,
    read_artifact_metadata,
    upload_artifact,
)
from tasks.secrets import read_secret


@dataclass(frozen=True)
class Artifact:
    """A version's package as stored in the artifact bucket."""

    component: str
    version: str
    key: str
    sha256_hex: str
    code_sha256: str
    size: int
    reused: bool


@dataclass(frozen=True)
class Plan:
    """Everything a Lambda deploy needs, resolved and checked before anything changes."""

    config: Config
    component: str
    environment: str
    version: str | None
    function: str
    target: AwsTarget

    @property
    def bucket(self) -> str:
        return self.config.project.artifact_bucket


def plan_lambda_deploy(component: str, environment: str, version: str | None, config_path: str | None) -> Plan:
    """Validate the request and the AWS resources it names; raise InputError before any change."""
    config = load_config(config_path)
    comp = config.component(component)
    if comp.kind != "lambda":
        raise InputError(f"component {component!r} is a {comp.kind} component, not a Lambda")
    env = config.environment(environment)
    if version is not None:
        check_version(version)
    function = config.function_name(component, environment)
    target = resolve_target(config.state_dir(), config.project.region)
    read_live(target, function)  # the function and its alias exist
    alarm_states(target, env.alarms)  # the alarms exist
    check_bucket(target, config.project.artifact_bucket)
    return Plan(config, component, environment, version, function, target)


def ensure_artifact(plan: Plan, version: str, git_sha: str | None) -> Artifact:
    """Reuse the version's artifact when it was built from the same source; build it otherwise."""
    logger = get_run_logger()
    comp = plan.config.component(plan.component)
    source = plan.config.source_dir(plan.component)
    hashed = source_hash(comp, source)
    stored = read_artifact_metadata(plan.target, plan.bucket, plan.component, version)
    key = artifact_key(plan.component, version)
    if stored is not None:
        if stored.get("source_hash") != hashed:
            raise VersionConflict(
                f"{plan.component} {version} already exists in s3://{plan.bucket} built from other source",
                "a version names one build: pick a new version for changed source",
            )
        logger.info(
            "Reusing %s %s from s3://%s/%s (same source, not rebuilt)", plan.component, version, plan.bucket, key
        )
        return Artifact(plan.component, version, key, stored["sha256"], stored["code_sha256"], stored["size"], True)
    state = plan.config.state_dir()
    package: Package = build_lambda_package(
        plan.component, version, comp, source,
        out_dir=state / "build" / plan.component / version, cache_dir=plan.config.build_cache_dir(),
    )  # fmt: skip
    ensure_retention_rule(plan.target, plan.bucket, plan.component, plan.config.project.artifact_retention_days)
    metadata = {
        "component": plan.component, "version": version, "git_sha": git_sha,
        "sha256": package.sha256_hex, "code_sha256": package.code_sha256, "size": package.size,
        "source_hash": package.source_hash, "built_at": now(), "builder": f"opcd on {platform.node()} ({actor()})",
        "python": comp.runtime, "platform": PLATFORMS[comp.architecture],
    }  # fmt: skip
    upload_artifact(plan.target, plan.bucket, package, metadata)
    return Artifact(plan.component, version, key, package.sha256_hex, package.code_sha256, package.size, False)


def sync_rules(plan: Plan, live: LiveVersion) -> RuleChanges:
    """EventBridge rules of the component, targeting its ``live`` alias (which never moves ARN)."""
    rules = plan.config.component(plan.component).rules
    return sync_event_rules(
        plan.target, plan.config.project.name, plan.environment, plan.component, plan.function, live.alias_arn, rules
    )


def sample_event(plan: Plan) -> dict[str, Any]:
    comp = plan.config.component(plan.component)
    assert comp.sample_event is not None
    event: dict[str, Any] = json.loads((plan.config.root / comp.sample_event).read_text())
    return event


def shift_and_verify(plan: Plan, new_version: str, app_version: str | None, live: LiveVersion) -> None:
    """Move ``live`` to ``new_version`` and check health and alarms.

    Any failure rolls ``live`` back to ``live.lambda_version`` (the transaction's rollback hook),
    then the rollback itself is verified; the raised DeployFailed says what is live now.
    """
    env = plan.config.environment(plan.environment)
    public = env.health.get(plan.component)
    try:
        with transaction():
            shift_traffic(plan.target, plan.function, new_version, previous=live.lambda_version)
            if public:
                check_health(plan.target.resolve_url(public), public, env.health_check, expect_version=app_version)
            comp = plan.config.component(plan.component)
            if comp.sample_event:
                invoke_sample_event(plan.target, plan.function, "live", sample_event(plan), comp.sample_expect)
            check_alarms(plan.target, env.alarms)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, OpcdError) else f"{type(exc).__name__}: {exc}"
        raise DeployFailed(f"{reason}; {verify_rollback(plan, live)}") from exc


def verify_rollback(plan: Plan, live: LiveVersion) -> str:
    """Check that ``live`` is back where it was and healthy; say what is live now."""
    logger = get_run_logger()
    now_live = read_live(plan.target, plan.function)
    label = f"{live.app_version or 'version'} (Lambda version {live.lambda_version})"
    if now_live.lambda_version != live.lambda_version or now_live.weights:
        logger.warning(
            "live is on version %s after the rollback hook; moving it back once more", now_live.lambda_version
        )
        try:
            point_alias(plan.target, plan.function, live.lambda_version)
        except Exception as exc:  # reported below through the alias we read back
            logger.error("Second rollback attempt failed: %s", exc)
        now_live = read_live(plan.target, plan.function)
    if now_live.lambda_version != live.lambda_version or now_live.weights:
        logger.error("ROLLBACK NOT VERIFIED: %s:live is on version %s", plan.function, now_live.lambda_version)
        return f"ROLLBACK FAILED: live is on Lambda version {now_live.lambda_version}, expected {live.lambda_version}"
    env = plan.config.environment(plan.environment)
    public = env.health.get(plan.component)
    comp = plan.config.component(plan.component)
    try:
        if public:
            check_health(plan.target.resolve_url(public), public, env.health_check, expect_version=live.app_version)
        if comp.sample_event:
            invoke_sample_event(plan.target, plan.function, "live", sample_event(plan), comp.sample_expect)
    except DeployFailed as exc:
        return f"rolled back to {label}, but it is not healthy either: {exc}"
    logger.info("Rollback verified: %s:live on %s", plan.function, label)
    return f"rolled back to {label}, verified"


def warn_if_interrupted(plan: Plan, live: LiveVersion) -> None:
    """Say so when the last run died while moving traffic (its hook never ran)."""
    last = read_latest(plan.target, plan.bucket, plan.environment, plan.component)
    if last and last.get("outcome") == "shifting":
        get_run_logger().warning(
            "The previous run (%s) died while moving live from Lambda version %s to %s; live is on %s now."
            " This deploy remembers %s as its rollback target.",
            last.get("flow_run_name"), last.get("previous_lambda_version"), last.get("lambda_version"),
            live.lambda_version, live.lambda_version,
        )  # fmt: skip


def deploy_lambda(
    component: str, environment: str, version: str, git_sha: str | None, config_path: str | None
) -> dict[str, Any]:
    """The shared body of the Lambda deploy flows (backend, worker)."""
    logger = get_run_logger()
    plan = plan_lambda_deploy(component, environment, version, config_path)
    logger.info(plan.target.describe())
    comp = plan.config.component(component)
    artifact = ensure_artifact(plan, version, git_sha)
    record = Record(
        component, environment, "deploy", "failed", version, git_sha=git_sha, sha256=artifact.sha256_hex,
        artifact="reused" if artifact.reused else "built",
    )  # fmt: skip
    record.attach_flow_run()
    with environment_lock(environment):
        live = read_live_alias(plan.target, plan.function)
        warn_if_interrupted(plan, live)
        record.previous_version, record.previous_lambda_version = live.app_version, live.lambda_version
        record.live_version, record.live_lambda_version = live.app_version, live.lambda_version
        stage = "pre-traffic"
        try:
            if live.app_version == version and live.code_sha256 == artifact.code_sha256 and not live.weights:
                logger.info(
                    "%s %s is already live in %s (Lambda version %s): nothing to do",
                    component,
                    version,
                    environment,
                    live.lambda_version,
                )
                record.outcome, record.lambda_version, record.reason = "noop", live.lambda_version, "already live"
                record.rules = sync_rules(plan, live).summary()  # rules are configuration: still applied
                return finish(plan, record)
            update_function_code(plan.target, plan.function, plan.bucket, artifact.key, artifact.code_sha256)
            new_version = publish_version(
                plan.target,
                plan.function,
                version_description(component, version, artifact.sha256_hex),
                artifact.code_sha256,
            )
            record.lambda_version = new_version
            if comp.migrations:
                secret_name = plan.config.environment(environment).database_secret
                assert secret_name is not None  # checked when the config was loaded
                run_migrations(
                    download_artifact(plan.target, plan.bucket, artifact.key), comp.migrations.command,
                    comp.runtime, read_secret(plan.target, secret_name), comp.migrations.timeout,
                    plan.config.build_cache_dir(),
                )  # fmt: skip
            try:
                if comp.smoke:
                    invoke_smoke_checks(plan.target, plan.function, new_version, comp.smoke)
                if comp.sample_event:
                    event = sample_event(plan)
                    invoke_sample_event(plan.target, plan.function, new_version, event, comp.sample_expect)
            except DeployFailed as exc:
                raise DeployFailed(
                    f"pre-traffic {exc}; live untouched on {live.app_version} (Lambda version {live.lambda_version})"
                ) from exc
            record.rules = sync_rules(plan, live).summary()
            stage = "traffic"
            # A killed process runs no rollback hook: leave the rollback target in the ledger first.
            record.outcome, record.reason = "shifting", f"moving live from {live.lambda_version} to {new_version}"
            record_in_ledger(plan.target, plan.bucket, record)
            record.finished_at = record.reason = None
            shift_and_verify(plan, new_version, version, live)
        except Exception as exc:
            after = read_live(plan.target, plan.function)
            record.live_version, record.live_lambda_version = after.app_version, after.lambda_version
            if after.lambda_version != live.lambda_version or after.weights:
                record.outcome = "rollback-failed"
            else:
                record.outcome = "rolled-back" if stage == "traffic" else "failed"
            record.reason = str(exc)
            finish(plan, record)
            raise
        record.outcome, record.live_version, record.live_lambda_version = "deployed", version, new_version
        logger.info("%s %s is live in %s on Lambda version %s", component, version, environment, new_version)
        return finish(plan, record)


def finish(plan: Plan, record: Record) -> dict[str, Any]:
    record_in_ledger(plan.target, plan.bucket, record)
    publish_run_artifact(record)
    return asdict(record)


@flow(name="deploy-backend", flow_run_name="backend {version} to {environment}", log_prints=True)
def deploy_backend(
    environment: str, version: str, git_sha: str | None = None, config_path: str | None = None
) -> dict[str, Any]:
    """Deploy the backend API to one environment (blue/green behind ``live``, automatic rollback)."""
    return deploy_lambda("backend", environment, version, git_sha, config_path)


@flow(name="deploy-worker", flow_run_name="worker {version} to {environment}", log_prints=True)
def deploy_worker(
    environment: str, version: str, git_sha: str | None = None, config_path: str | None = None
) -> dict[str, Any]:
    """Deploy the worker to one environment: the backend's path plus EventBridge rules and a sample event."""
    return deploy_lambda("worker", environment, version, git_sha, config_path)


@flow(name="deploy-lambda", flow_run_name="{component} {version} to {environment}", log_prints=True)
def deploy_lambda_component(
    component: str, environment: str, version: str, git_sha: str | None = None, config_path: str | None = None
) -> dict[str, Any]:
    """Deploy any Lambda component of opcd.toml (for components not named backend or worker)."""
    return deploy_lambda(component, environment, version, git_sha, config_path)
