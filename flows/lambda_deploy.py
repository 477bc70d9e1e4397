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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Protocol

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as AwsConnectionError
from prefect import flow
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.transactions import transaction

from opcd.aws import AwsTarget, guarded_target, target_for
from opcd.config import Config, load_config
from opcd.errors import DeployFailed, InputError, OpcdError, VersionConflict, failure_text
from opcd.locks import environment_lock, limit_name
from opcd.traffic import Strategy, parse_strategy
from opcd.versions import check_version
from tasks.bake import Bake, Guards
from tasks.build import PLATFORMS, Package, build_lambda_package, source_hash
from tasks.cloudwatch import AlarmGuard, check_alarms
from tasks.eventbridge import RuleChanges, sync_event_rules
from tasks.git import commit_config
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
from tasks.notify import Notifier
from tasks.s3_artifacts import (
    artifact_key,
    check_bucket,
    check_retention_rule,
    download_artifact,
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
    alarms: AlarmGuard
    live: LiveVersion | None = None  # what ``live`` pointed at when the request was checked

    @property
    def bucket(self) -> str:
        return self.config.project.artifact_bucket

    @property
    def strategy(self) -> Strategy:
        return self.config.environment(self.environment).strategy(self.component)


@dataclass(frozen=True)
class EnvironmentChecks:
    """What every change to one environment checks first: its account, its alarms, the artifact bucket."""

    target: AwsTarget
    alarms: AlarmGuard


def check_environment(
    config: Config, environment: str, accept_alarms: list[str] | None = None, accept_firing: bool = False
) -> EnvironmentChecks:
    """The environment's target (account asked of STS), its alarm guard, and the bucket's existence."""
    env = config.environment(environment)
    target = guarded_target(config, environment)  # the environment's account, asked of STS
    alarms = AlarmGuard.preflight(target, env.alarms, accept_alarms or [], environment, accept_firing)
    check_bucket(target, config.project.artifact_bucket)
    return EnvironmentChecks(target, alarms)


_KINDS = {"lambda": "a Lambda", "apprunner": "an App Runner service"}


def check_kind(config: Config, component: str, kind: str, environment: str, version: str | None) -> None:
    """InputError unless ``component`` is of ``kind``, ``environment`` is defined and ``version`` is a version."""
    comp = config.component(component)
    if comp.kind != kind:
        raise InputError(f"component {component!r} is a {comp.kind} component, not {_KINDS[kind]}")
    config.environment(environment)
    if version is not None:
        check_version(version)


def check_lambda_deploy(
    config: Config,
    component: str,
    environment: str,
    version: str | None,
    accept_alarms: list[str] | None = None,
    accept_firing: bool = False,
    checked: EnvironmentChecks | None = None,
) -> Plan:
    """:func:`plan_lambda_deploy` of a loaded config; ``checked``: the environment's checks, already made."""
    check_kind(config, component, "lambda", environment, version)
    function = config.function_name(component, environment)
    checked = checked or check_environment(config, environment, accept_alarms, accept_firing)
    live = read_live(checked.target, function)  # the function and its alias exist
    return Plan(config, component, environment, version, function, checked.target, checked.alarms, live)


def plan_lambda_deploy(
    component: str,
    environment: str,
    version: str | None,
    config_path: str | None,
    accept_alarms: list[str] | None = None,
    accept_firing: bool = False,
) -> Plan:
    """Validate the request and the AWS resources it names; raise InputError before any change.

    An alarm of the environment that fires now refuses the deploy unless ``accept_alarms`` names
    it; ``accept_firing`` accepts whatever fires (a rollback is how an incident gets fixed).
    """
    return check_lambda_deploy(load_config(config_path), component, environment, version, accept_alarms, accept_firing)


def artifact_conflict(plan: Plan, version: str) -> VersionConflict:
    """The refusal of a version whose stored artifact was built from other source."""
    return VersionConflict(
        f"{plan.component} {version} already exists in s3://{plan.bucket} built from other source",
        "a version names one build: pick a new version for changed source",
    )


def ensure_artifact(plan: Plan, version: str, git_sha: str | None, early: EarlySteps | None = None) -> Artifact:
    """Reuse the version's artifact when it was built from the same source; build it otherwise."""
    logger = get_run_logger()
    early = early or EarlySteps("deploy", plan.component, plan.environment, version)
    early.step = "build"
    comp = plan.config.component(plan.component)
    source = plan.config.source_dir(plan.component)
    hashed = source_hash(comp, source)
    stored = read_artifact_metadata(plan.target, plan.bucket, plan.component, version)
    key = artifact_key(plan.component, version)
    if stored is not None:
        if stored.get("source_hash") != hashed:
            raise artifact_conflict(plan, version)
        logger.info(
            "Reusing %s %s from s3://%s/%s (same source, not rebuilt)", plan.component, version, plan.bucket, key
        )
        return Artifact(plan.component, version, key, stored["sha256"], stored["code_sha256"], stored["size"], True)
    state = plan.config.state_dir()
    package: Package = build_lambda_package(
        plan.component, version, comp, source,
        out_dir=state / "build" / plan.component / version, cache_dir=plan.config.build_cache_dir(),
    )  # fmt: skip
    early.step = "upload"
    check_retention_rule(plan.target, plan.bucket, plan.component, plan.config.project.artifact_retention_days)
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


def make_bake(
    plan: Plan, new_version: str, live: LiveVersion, strategy: Strategy, notifier: Notifier | None = None
) -> Bake:
    env = plan.config.environment(plan.environment)
    public = env.health.get(plan.component)
    comp = plan.config.component(plan.component)
    guards = Guards(
        plan.alarms, plan.target.resolve_url(public) if public else None, public, env.health_check,
        comp.smoke if env.bake.smoke else [],
    )  # fmt: skip
    ctx = FlowRunContext.get()
    return Bake(
        plan.target, plan.function, live.lambda_version, new_version, strategy, guards, env.bake.poll_interval,
        flow_run_id=ctx.flow_run.id if ctx and ctx.flow_run else None,
        artifact_key=f"bake-{plan.component}-{plan.environment}", notifier=notifier,
    )  # fmt: skip


def shift_and_verify(
    plan: Plan,
    new_version: str,
    app_version: str | None,
    live: LiveVersion,
    strategy: Strategy | None = None,
    bake_log: dict[str, Any] | None = None,
    notifier: Notifier | None = None,
    progress: dict[str, bool] | None = None,
) -> None:
    """Move ``live`` to ``new_version`` (at once, or baking each step of ``strategy``) and check it.

    Any failure rolls ``live`` back to ``live.lambda_version`` (the transaction's rollback hooks),
    then the rollback itself is verified; the raised DeployFailed says what is live now. The
    bake's log is copied into ``bake_log`` whatever happens. ``progress["moved"]`` tells whether
    traffic ever left ``live.lambda_version``: an UpdateAlias that moved it succeeded, or the alias
    was found elsewhere after the failure. When it never moved (say UpdateAlias was throttled),
    the DeployFailed says live was untouched, as read back from the alias.
    """
    env = plan.config.environment(plan.environment)
    public = env.health.get(plan.component)
    strategy = strategy or parse_strategy("all-at-once")
    bake = make_bake(plan, new_version, live, strategy, notifier) if strategy.gradual else None
    progress = {} if progress is None else progress
    progress["moved"] = False
    try:
        with transaction():
            if bake is not None:
                get_run_logger().info("Shifting %s:live by %s", plan.function, strategy.describe())
                try:
                    bake.run()
                finally:
                    progress["moved"] = bool(bake.log.steps)  # a step is logged once its split took
                    if bake_log is not None:
                        bake_log.update(bake.log.as_dict())
            shift_traffic(plan.target, plan.function, new_version, previous=live.lambda_version)
            progress["moved"] = True
            if public:
                check_health(plan.target.resolve_url(public), public, env.health_check, expect_version=app_version)
            comp = plan.config.component(plan.component)
            if comp.sample_event:
                invoke_sample_event(plan.target, plan.function, "live", sample_event(plan), comp.sample_expect)
            check_alarms(plan.target, plan.alarms)
    except Exception as exc:
        reason = failure_text(exc)
        try:  # reading the alias back may fail too (throttled): the failure is still reported
            if not progress["moved"]:
                now_live = read_live(plan.target, plan.function)
                if now_live.lambda_version == live.lambda_version and not now_live.weights:
                    app = live.app_version or "a version opcd did not deploy"
                    label = f"{app} (Lambda version {live.lambda_version})"
                    raise DeployFailed(f"{reason}; traffic never moved: live untouched on {label}") from exc
                progress["moved"] = True  # an UpdateAlias took although its call failed
            verdict = verify_rollback(plan, live)
        except DeployFailed:
            raise
        except Exception as read_error:
            progress["moved"] = True  # not known to be untouched
            verdict = f"ROLLBACK NOT VERIFIED: {unread_alias(plan, read_error)}"
        raise DeployFailed(f"{reason}; {verdict}") from exc


def unread_alias(plan: Plan, error: BaseException) -> str:
    """What a failure handler says when it cannot read ``live`` back (logged; the record still goes out)."""
    get_run_logger().error("Could not read %s:live after the failure: %s", plan.function, failure_text(error))
    return f"unknown: could not read the alias: {failure_text(error)}"


def record_failure(
    plan: Plan, record: Record, live: LiveVersion, progress: dict[str, bool], exc: BaseException
) -> None:
    """``record``'s outcome, reason and live fields after a failure, from the alias read back.

    When that read fails, what is live is unknown: ``rollback-failed`` (act now) once traffic may have
    moved, live fields None and the reason says so; before any shift began, live is untouched.
    """
    try:
        after = read_live(plan.target, plan.function)
    except Exception as read_error:
        unknown = unread_alias(plan, read_error)
        if "moved" not in progress:  # no shift was started: live is where it was read
            record.outcome, record.reason = "failed", f"{failure_text(exc)}; {unknown}"
            return
        record.live_version = record.live_lambda_version = None
        record.outcome, record.reason = "rollback-failed", f"{failure_text(exc)}; {unknown}"
        return
    record.live_version, record.live_lambda_version = after.app_version, after.lambda_version
    record.outcome, record.reason = outcome_of(live, after, progress), failure_text(exc)


def verify_rollback(plan: Plan, live: LiveVersion) -> str:
    """Check that ``live`` is back where it was and healthy; say what is live now."""
    logger = get_run_logger()
    now_live = read_live(plan.target, plan.function)
    label = f"{live.app_version or 'a version opcd did not deploy'} (Lambda version {live.lambda_version})"
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


def repair_split(plan: Plan, live: LiveVersion) -> tuple[LiveVersion, str | None]:
    """A ``live`` alias split between two versions (a shift that died) goes back to its primary first."""
    if not live.weights:
        return live, None
    split = ", ".join(f"{w * 100:g}% on version {v}" for v, w in live.weights.items())
    note = (
        f"live was split: {split}, the rest on version {live.lambda_version}; "
        f"moved all traffic back to the primary version {live.lambda_version} before deploying"
    )
    get_run_logger().warning("Repairing %s: %s", plan.function, note)
    point_alias(plan.target, plan.function, live.lambda_version)
    repaired = read_live(plan.target, plan.function)
    if repaired.weights or repaired.lambda_version != live.lambda_version:
        raise DeployFailed(
            f"{plan.function}:live is still split after the repair ({repaired.weights})",
            "move it by hand with `opcd rollback` and deploy again",
        )
    return repaired, note


def deploy_lambda(
    component: str,
    environment: str,
    version: str,
    git_sha: str | None,
    config_path: str | None,
    accept_alarms: list[str] | None = None,
    notify: bool = True,
) -> dict[str, Any]:
    """The shared body of the Lambda deploy flows (backend, worker)."""
    logger = get_run_logger()
    early = EarlySteps("deploy", component, environment, version, git_sha, config_path, notify)
    with early.reporting():
        plan = plan_lambda_deploy(component, environment, version, config_path, accept_alarms)
        early.planned(plan, partial(record_live_lambda, plan))
        logger.info(plan.target.describe())
        if plan.alarms.accepted:
            logger.warning(
                "Deploying although %s fire(s): accepted by name (--accept-alarm); recorded in the ledger",
                ", ".join(sorted(plan.alarms.accepted)),
            )
        artifact = ensure_artifact(plan, version, git_sha, early)
    comp = plan.config.component(component)
    record = Record(
        component, environment, "deploy", "failed", version, git_sha=git_sha, sha256=artifact.sha256_hex,
        artifact="reused" if artifact.reused else "built", traffic=plan.strategy.name,
        accepted_alarms=sorted(plan.alarms.accepted),
    )  # fmt: skip
    record.attach_flow_run()
    notifier = Notifier.from_config(plan.config, f"{component} {version} → {environment}", notify)
    with environment_lock(environment, component):
        live = read_live_alias(plan.target, plan.function)
        notifier.send(
            f"deploy started by {record.actor}: live now {live.app_version or 'not deployed by opcd'}"
            f" (Lambda version {live.lambda_version}), traffic {plan.strategy.describe()}"
        )
        warn_if_interrupted(plan, live)
        live, record.repaired = repair_split(plan, live)
        record.previous_version, record.previous_lambda_version = live.app_version, live.lambda_version
        record.live_version, record.live_lambda_version = live.app_version, live.lambda_version
        progress: dict[str, bool] = {}  # "moved": traffic left live.lambda_version (shift_and_verify)
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
                return finish(plan, record, notifier)
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
                    f"pre-traffic {exc}; live untouched on {live.app_version or 'a version opcd did not deploy'}"
                    f" (Lambda version {live.lambda_version})"
                ) from exc
            record.rules = sync_rules(plan, live).summary()
            # A killed process runs no rollback hook: leave the rollback target in the ledger first.
            record.outcome, record.reason = "shifting", f"moving live from {live.lambda_version} to {new_version}"
            record_in_ledger(plan.target, plan.bucket, record)
            record.finished_at = record.reason = None
            bake_log: dict[str, Any] = {}
            try:
                shift_and_verify(plan, new_version, version, live, plan.strategy, bake_log, notifier, progress)
            finally:
                record.bake = bake_log or None
        except Exception as exc:
            record_failure(plan, record, live, progress, exc)
            finish(plan, record, notifier)
            raise
        record.outcome, record.live_version, record.live_lambda_version = "deployed", version, new_version
        logger.info("%s %s is live in %s on Lambda version %s", component, version, environment, new_version)
        return finish(plan, record, notifier)


def outcome_of(live: LiveVersion, after: LiveVersion, progress: dict[str, bool]) -> str:
    """How a failed run ended, from the alias read back (``after``) and whether traffic ever moved.

    ``rollback-failed``: live is not back on ``live.lambda_version`` alone. ``rolled-back``: traffic
    moved (``progress["moved"]``, see :func:`shift_and_verify`) and came back. ``failed``: it never moved.
    """
    if after.lambda_version != live.lambda_version or after.weights:
        return "rollback-failed"
    return "rolled-back" if progress.get("moved") else "failed"


_LEVELS = {"deployed": "ok", "noop": "info", "failed": "fail", "rolled-back": "warn", "rollback-failed": "fail"}


class LedgerPlan(Protocol):
    """What recording an outcome needs of a deploy's plan (Lambda or App Runner)."""

    @property
    def target(self) -> AwsTarget: ...

    @property
    def bucket(self) -> str: ...


def live_text(record: Record) -> str:
    """What is live at the end of a run, in one phrase."""
    version = record.live_version or "a version opcd did not deploy"
    if record.image or record.live_image:
        return f"{version} ({record.live_image}{', ' + record.live_image_digest if record.live_image_digest else ''})"
    return f"{version} (Lambda version {record.live_lambda_version})"


def notify_outcome(notifier: Notifier, record: Record) -> None:
    live = live_text(record)
    texts = {
        "deployed": f"{record.action} done: {record.version} is live",
        "noop": f"nothing to do: {record.version} was already live",
        "failed": f"{record.action} FAILED before traffic moved; live untouched on {live}",
        "rolled-back": f"{record.action} FAILED after traffic moved and was ROLLED BACK; live on {live}",
        "rollback-failed": f"{record.action} FAILED and the ROLLBACK FAILED: live on {live}. Act now.",
    }
    level = _LEVELS.get(record.outcome, "info")
    if record.action == "rollback" and record.outcome == "rolled-back":  # the target itself failed
        to = record.version or "the target"
        texts["rolled-back"] = (
            f"rollback FAILED: traffic moved to {to}, which failed its checks, and moved back; live on {live}, verified"
        )
        level = "fail"
    text = texts.get(record.outcome, f"{record.action} ended {record.outcome}; live on {live}")
    facts = {"Live now": live, "By": record.actor}
    if record.force:
        facts["Forced"] = "--force: a target the ledger may never have seen live"
    if record.reason and record.outcome != "deployed":
        facts["Why"] = record.reason[:500]
    if record.traffic and record.traffic != "all-at-once":
        facts["Traffic"] = record.traffic
    if record.accepted_alarms:
        facts["Accepted alarms"] = ", ".join(record.accepted_alarms)
    if record.repaired:
        facts["Repaired first"] = record.repaired
    notifier.send(text, level, facts)


def finish(plan: LedgerPlan, record: Record, notifier: Notifier | None = None) -> dict[str, Any]:
    if notifier is not None:
        notify_outcome(notifier, record)
        record.notify_failures = list(notifier.failures)
    record_in_ledger(plan.target, plan.bucket, record)
    publish_run_artifact(record)
    return asdict(record)


class RunPlan(LedgerPlan, Protocol):
    """A deploy's plan (Lambda or App Runner), as a failure before its first record needs it."""

    @property
    def config(self) -> Config: ...


# How long a run that failed before it took its lock waits for the lock to write ``latest.json``.
LOCK_WAIT = 5.0
_THROTTLED = {"Throttling", "ThrottlingException", "SlowDown", "RequestLimitExceeded", "TooManyRequestsException"}


def cause(exc: BaseException) -> tuple[str, str | None]:
    """(what went wrong, how to fix it) for an error of any step, AWS's answers in words."""
    if isinstance(exc, OpcdError):
        return exc.message, exc.hint
    if isinstance(exc, ClientError):
        error, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
        status, attempts = meta.get("HTTPStatusCode") or 0, meta.get("RetryAttempts", 0) + 1
        what = f"AWS {exc.operation_name} answered {status} {error.get('Code')}: {error.get('Message')}"
        what += f" ({attempts} attempts)" if attempts > 1 else ""
        if status >= 500 or error.get("Code") in _THROTTLED:
            return what, "AWS is unavailable or throttling: try again in a few minutes"
        return what, "AWS refused the request: see its answer in the run's log (Prefect UI)"
    if isinstance(exc, AwsConnectionError | HTTPClientError):
        return f"AWS did not answer: {exc}", "is the sandbox (`opcd sandbox up`) or the network up? try again then"
    return f"{type(exc).__name__}: {exc}", "the traceback is in the run's log (Prefect UI)"


def step_failure(subject: str, step: str, exc: BaseException, detail: str = "") -> OpcdError:
    """``exc`` as the one-line error of ``subject`` that failed at ``step`` (bad input stays InputError)."""
    what, hint = cause(exc)
    kind = InputError if isinstance(exc, InputError) else DeployFailed
    return kind(f"{subject} failed at {step}: {what}{detail}", hint)


class EarlySteps:
    """A run before its first ledger record: the step it is at, and its plan once it has one.

    A failure there changed nothing live; :meth:`failed` still posts it to Slack, records it in
    the ledger (when AWS answers) and turns it into the one line the CLI prints.
    """

    def __init__(
        self,
        action: str,
        component: str,
        environment: str,
        version: str | None,
        git_sha: str | None = None,
        config_path: str | None = None,
        notify: bool = True,
        subject: str | None = None,
    ) -> None:
        self.action, self.component, self.environment, self.version = action, component, environment, version
        self.git_sha, self.config_path, self.notify = git_sha, config_path, notify
        self.subject = subject or f"{action} {component} {version} to {environment}"  # the error line's
        self.title = subject or f"{component} {version} → {environment}"  # the Slack message's
        self.step = "plan"
        self.plan: RunPlan | None = None
        self.read_live: Callable[[Record], object] | None = None

    @classmethod
    def rollback(cls, component: str, environment: str, to_version: str | None, config_path: str | None) -> EarlySteps:
        subject = f"rollback {component} in {environment}"
        return cls("rollback", component, environment, to_version, config_path=config_path, subject=subject)

    @contextmanager
    def reporting(self) -> Iterator[None]:
        """A failure in the block is reported (:meth:`failed`) and raised as its one-line error."""
        try:
            yield
        except Exception as exc:
            raise self.failed(exc) from exc

    def planned(self, plan: RunPlan, read_live: Callable[[Record], object]) -> None:
        """Remember the plan, and how to read what is live into a record."""
        self.plan, self.read_live = plan, read_live

    def failed(self, exc: Exception) -> OpcdError:
        """Report a failure of the current step (Slack, ledger, the run's artifact); the error to raise."""
        what = cause(exc)[0]
        get_run_logger().error("%s failed at %s: %s", self.subject, self.step, what)
        record = Record(
            self.component, self.environment, self.action, "failed", self.version, git_sha=self.git_sha,
            step=self.step, reason=f"failed at {self.step}: {what}",
        )  # fmt: skip
        record.attach_flow_run()
        live = self._live(record)
        config = self.plan.config if self.plan else _config_or_none(self.config_path)
        notifier = Notifier(config.notifications.slack if config else None, self.title, self.notify)
        notify_outcome(notifier, record)
        record.notify_failures = list(notifier.failures)
        detail = "; nothing changed, live untouched" + (f" on {live}" if live else "")
        if (unrecorded := self._record(config, record)) is not None:
            detail += f"; the ledger record could not be written either ({unrecorded})"
        return step_failure(self.subject, self.step, exc, detail)

    def _live(self, record: Record) -> str | None:
        """Read what is live into ``record``; its text, or None when it cannot be read."""
        if self.read_live is None:
            return None
        try:
            self.read_live(record)
        except Exception as exc:
            get_run_logger().warning("Could not read what is live now: %s", cause(exc)[0])
            return None
        return live_text(record)

    def _record(self, config: Config | None, record: Record) -> str | None:
        """The record in the ledger (``latest.json`` too when the lock is free); None, or why it is not there."""
        logger = get_run_logger()
        if config is None:
            return "opcd.toml could not be read"
        # boto retries a blip; a run that has failed does not retry for a minute more to say so
        ledger = record_in_ledger.with_options(retries=0)
        held = False
        try:
            target = self.plan.target if self.plan else target_for(config, self.environment)
            try:
                with environment_lock(self.environment, self.component, timeout=LOCK_WAIT):
                    held = True
                    ledger(target, config.project.artifact_bucket, record)
            except Exception as exc:
                if held:
                    raise
                busy = limit_name(self.environment, self.component)
                logger.info("%s is busy (%s): latest.json stays the running change's", busy, type(exc).__name__)
                ledger(target, config.project.artifact_bucket, record, latest=False)
            publish_run_artifact(record)
        except Exception as exc:
            problem = cause(exc)[0]
            logger.error("The ledger record of this failure could not be written: %s", problem)
            return problem
        return None


def _config_or_none(config_path: str | None) -> Config | None:
    try:
        return load_config(config_path)
    except OpcdError:
        return None


def record_live_lambda(plan: Plan, record: Record) -> None:
    """What ``live`` points at now, as both what was live before the run and what is live after it."""
    live = read_live(plan.target, plan.function)
    record.previous_version, record.previous_lambda_version = live.app_version, live.lambda_version
    record.live_version, record.live_lambda_version = live.app_version, live.lambda_version


@flow(name="deploy-backend", flow_run_name="backend {version} to {environment}", log_prints=True)
def deploy_backend(
    environment: str,
    version: str,
    git_sha: str | None = None,
    config_path: str | None = None,
    accept_alarms: list[str] | None = None,
    notify: bool = True,
) -> dict[str, Any]:
    """Deploy the backend API to one environment (blue/green behind ``live``, automatic rollback)."""
    with commit_config(config_path, git_sha) as (config_path, git_sha):
        return deploy_lambda("backend", environment, version, git_sha, config_path, accept_alarms, notify)


@flow(name="deploy-worker", flow_run_name="worker {version} to {environment}", log_prints=True)
def deploy_worker(
    environment: str,
    version: str,
    git_sha: str | None = None,
    config_path: str | None = None,
    accept_alarms: list[str] | None = None,
    notify: bool = True,
) -> dict[str, Any]:
    """Deploy the worker to one environment: the backend's path plus EventBridge rules and a sample event."""
    with commit_config(config_path, git_sha) as (config_path, git_sha):
        return deploy_lambda("worker", environment, version, git_sha, config_path, accept_alarms, notify)


@flow(name="deploy-lambda", flow_run_name="{component} {version} to {environment}", log_prints=True)
def deploy_lambda_component(
    component: str,
    environment: str,
    version: str,
    git_sha: str | None = None,
    config_path: str | None = None,
    accept_alarms: list[str] | None = None,
    notify: bool = True,
) -> dict[str, Any]:
    """Deploy any Lambda component of opcd.toml (for components not named backend or worker)."""
    with commit_config(config_path, git_sha) as (config_path, git_sha):
        return deploy_lambda(component, environment, version, git_sha, config_path, accept_alarms, notify)
