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
from dataclasses import dataclass
from functools import partial
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.transactions import transaction

from flows.common import (
    EarlySteps,
    EnvironmentChecks,
    check_environment,
    checks_of,
    finish,
    ran,
    running_steps,
    the_plan,
)
from flows.plan.models import ArtifactPlan, DeployPlan
from opcd.aws import AwsTarget
from opcd.config import Config, deploy_command, load_config, where
from opcd.errors import DeployFailed, VersionConflict, failure_text
from opcd.locks import environment_lock
from opcd.outcomes import Outcome, Stage
from opcd.traffic import Strategy, parse_strategy
from opcd.versions import check_version
from tasks.bake import Bake, Guards
from tasks.build import PLATFORMS, Package, build_lambda_package, lambda_source_hash
from tasks.cloudwatch import AlarmGuard, check_alarms
from tasks.eventbridge import RuleChanges, sync_event_rules
from tasks.events import DEPLOY_STARTED, emit
from tasks.git import commit_config
from tasks.health import check_health
from tasks.lambda_functions import (
    LiveVersion,
    invoke_sample_event,
    invoke_smoke_checks,
    move_alias_reversibly,
    move_alias_task,
    publish_version,
    read_live,
    read_live_alias,
    update_function_code,
    version_description,
)
from tasks.ledger import Record, actor, live_record, now, read_latest, record_in_ledger
from tasks.migrations import run_migrations
from tasks.notify import Notifier
from tasks.s3_artifacts import (
    artifact_key,
    check_retention_rule,
    copy_artifact,
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
    region: str | None = None  # one of the environment's regions when it has several (else None)

    @property
    def bucket(self) -> str:
        """The artifact bucket of the deploy's region: its package, its ledger records."""
        return self.config.bucket_for(self.environment, self.region)

    @property
    def where(self) -> str:
        """``prod``, or ``prod us-west-2`` in an environment of several regions."""
        return where(self.environment, self.region)

    def health_url(self) -> str | None:
        """The component's public health URL in the deploy's region."""
        return self.config.health_url(self.component, self.environment, self.region)

    @property
    def strategy(self) -> Strategy:
        return self.config.environment(self.environment).strategy(self.component)


def check_lambda_deploy(
    config: Config,
    component: str,
    environment: str,
    version: str | None,
    accept_alarms: list[str] | None = None,
    accept_firing: bool = False,
    checked: EnvironmentChecks | None = None,
    region: str | None = None,
) -> Plan:
    """:func:`plan_lambda_deploy` of a loaded config; ``checked``: the environment's checks (of ``region``: None,
    the environment's first), already made."""
    config.lambda_component(component)  # InputError for a component of another kind
    config.environment(environment)
    region = config.region_key(environment, region)
    if version is not None:
        check_version(version)
    function = config.function_name(component, environment, region)
    checked = checked or check_environment(config, environment, accept_alarms, accept_firing, region)
    live = read_live(checked.target, function)  # the function and its alias exist
    return Plan(config, component, environment, version, function, checked.target, checked.alarms, live, region)


def plan_lambda_deploy(
    component: str,
    environment: str,
    version: str | None,
    config_path: str | None,
    accept_alarms: list[str] | None = None,
    accept_firing: bool = False,
    region: str | None = None,
) -> Plan:
    """Validate the request and the AWS resources it names; raise InputError before any change.

    An alarm of the environment that fires now refuses the deploy unless ``accept_alarms`` names
    it; ``accept_firing`` accepts whatever fires (a rollback is how an incident gets fixed).
    """
    config = load_config(config_path)
    return check_lambda_deploy(config, component, environment, version, accept_alarms, accept_firing, region=region)


def artifact_conflict(plan: Plan, version: str) -> VersionConflict:
    """The refusal of a version whose stored artifact was built from other source."""
    return VersionConflict(
        f"{plan.component} {version} already exists in s3://{plan.bucket} built from other source",
        "a version names one build: pick a new version for changed source",
    )


def ensure_artifact(
    plan: Plan, version: str, git_sha: str | None, early: EarlySteps | None = None, planned: ArtifactPlan | None = None
) -> Artifact:
    """Reuse the version's artifact when it was built from the same source; build it otherwise.

    ``planned``: the plan's artifact; one the plan found (or the release built) is used as it says, not read again.
    """
    logger = get_run_logger()
    early = early or EarlySteps("deploy", plan.component, plan.environment, version)
    early.step = Stage.BUILD
    key = artifact_key(plan.component, version)
    if planned is not None and not planned.build and planned.sha256 and planned.code_sha256 and planned.size:
        if planned.copy_from:  # built in another region's bucket: copied into this region's, its sha256 checked
            ran("copy")
            origin = planned.copy_from.removeprefix("s3://").split("/", 1)[0]
            copy_artifact(plan.target, origin, plan.bucket, plan.component, version, planned.code_sha256)
        ran("reuse")
        logger.info("Using s3://%s/%s: %s", plan.bucket, key, planned.reason)
        return Artifact(plan.component, version, key, planned.sha256, planned.code_sha256, planned.size, True)
    comp = plan.config.lambda_component(plan.component)
    source = plan.config.source_dir(plan.component)
    hashed = lambda_source_hash(comp, source)
    # A plan that found none is not read again: the build follows (the metadata goes up last, once the zip is
    # there); without a plan (a build of its own), what the bucket keeps decides.
    built = planned is not None and planned.build
    stored = None if built else read_artifact_metadata(plan.target, plan.bucket, plan.component, version)
    if stored is not None:
        if stored.get("source_hash") != hashed:
            raise artifact_conflict(plan, version)
        ran("reuse")
        logger.info(
            "Reusing %s %s from s3://%s/%s (same source, not rebuilt)", plan.component, version, plan.bucket, key
        )
        return Artifact(plan.component, version, key, stored["sha256"], stored["code_sha256"], stored["size"], True)
    ran("build")
    state = plan.config.state_dir()
    package: Package = build_lambda_package(
        plan.component, version, comp, source,
        out_dir=state / "build" / plan.component / version, cache_dir=plan.config.build_cache_dir(),
    )  # fmt: skip
    early.step = Stage.UPLOAD
    ran("upload")
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
    rules = plan.config.lambda_component(plan.component).rules
    return sync_event_rules(
        plan.target, plan.config.project.name, plan.environment, plan.component, plan.function, live.alias_arn, rules
    )


def sample_event(plan: Plan) -> dict[str, Any]:
    comp = plan.config.lambda_component(plan.component)
    assert comp.sample_event is not None  # called only when the component has one
    event: dict[str, Any] = json.loads((plan.config.root / comp.sample_event).read_text())
    return event


def make_bake(
    plan: Plan, new_version: str, live: LiveVersion, strategy: Strategy, notifier: Notifier | None = None
) -> Bake:
    env = plan.config.environment(plan.environment)
    public = plan.health_url()
    comp = plan.config.lambda_component(plan.component)
    guards = Guards(
        plan.alarms, plan.target.resolve_url(public) if public else None, public, env.health_check,
        comp.smoke if env.bake.smoke else [], analysis=env.bake.analysis,
    )  # fmt: skip
    ctx = FlowRunContext.get()
    return Bake(
        plan.target, plan.function, live.lambda_version, new_version, strategy, guards, env.bake.poll_interval,
        flow_run_id=ctx.flow_run.id if ctx and ctx.flow_run else None,
        artifact_key=f"bake-{plan.component}-{plan.where.replace(' ', '-')}", notifier=notifier,
        subject=(plan.component, plan.environment, plan.version),
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
    public = plan.health_url()
    strategy = strategy or parse_strategy("all-at-once")
    bake = make_bake(plan, new_version, live, strategy, notifier) if strategy.gradual else None
    progress = {} if progress is None else progress
    progress["moved"] = False
    ran("shift")
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
            move_alias_reversibly(plan.target, plan.function, new_version, previous=live.lambda_version)
            progress["moved"] = True
            if public:
                ran("health")
                check_health(plan.target.resolve_url(public), public, env.health_check, expect_version=app_version)
            comp = plan.config.lambda_component(plan.component)
            if comp.sample_event:
                ran("sample-event")
                invoke_sample_event(plan.target, plan.function, "live", sample_event(plan), comp.sample_expect)
            if plan.alarms.names:
                ran("alarms")
            check_alarms(plan.target, plan.alarms)
    except Exception as exc:
        ran("on-failure")
        reason = failure_text(exc)
        try:  # reading the alias back may fail too (throttled): the failure is still reported
            if not progress["moved"]:
                now_live = read_live(plan.target, plan.function)
                if now_live.lambda_version == live.lambda_version and not now_live.weights:
                    app = live.app_version or "a version opcd did not deploy"
                    label = f"{app} (Lambda version {live.lambda_version})"
                    raise DeployFailed(f"{reason}; traffic never moved: live untouched on {label}") from exc
                progress["moved"] = True  # an UpdateAlias took although its call failed
            verdict = verify_alias_rollback(plan, live)
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
            record.outcome, record.reason = Outcome.FAILED, f"{failure_text(exc)}; {unknown}"
            return
        record.live_version = record.live_lambda_version = None
        record.outcome, record.reason = Outcome.ROLLBACK_FAILED, f"{failure_text(exc)}; {unknown}"
        return
    record.live_version, record.live_lambda_version = after.app_version, after.lambda_version
    record.outcome, record.reason = outcome_of(live, after, progress), failure_text(exc)


def verify_alias_rollback(plan: Plan, live: LiveVersion) -> str:
    """Check that ``live`` is back where it was and healthy; say what is live now."""
    logger = get_run_logger()
    now_live = read_live(plan.target, plan.function)
    label = f"{live.app_version or 'a version opcd did not deploy'} (Lambda version {live.lambda_version})"
    if now_live.lambda_version != live.lambda_version or now_live.weights:
        logger.warning(
            "live is on version %s after the rollback hook; moving it back once more", now_live.lambda_version
        )
        try:
            move_alias_task(plan.target, plan.function, live.lambda_version)
        except Exception as exc:  # reported below through the alias we read back
            logger.error("Second rollback attempt failed: %s", exc)
        now_live = read_live(plan.target, plan.function)
    if now_live.lambda_version != live.lambda_version or now_live.weights:
        logger.error("ROLLBACK NOT VERIFIED: %s:live is on version %s", plan.function, now_live.lambda_version)
        return f"ROLLBACK FAILED: live is on Lambda version {now_live.lambda_version}, expected {live.lambda_version}"
    env = plan.config.environment(plan.environment)
    public = plan.health_url()
    comp = plan.config.lambda_component(plan.component)
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
    last = read_latest(plan.target, plan.bucket, plan.environment, plan.component, region=plan.region)
    if last and last.outcome is Outcome.SHIFTING:
        get_run_logger().warning(
            "The previous run (%s) died while moving live from Lambda version %s to %s; live is on %s now."
            " This deploy remembers %s as its rollback target.",
            last.flow_run_name, last.previous_lambda_version, last.lambda_version,
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
    ran("repair-split")
    get_run_logger().warning("Repairing %s: %s", plan.function, note)
    move_alias_task(plan.target, plan.function, live.lambda_version)
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
    planned: DeployPlan | None = None,
    region: str | None = None,
) -> Record:
    """The shared body of the Lambda deploy flows (backend, worker): the plan's steps in its order.
    ``region``: one of the environment's (None: its first; a plan given says its own).

    Plan (``planned``, or made now) and build (nothing live changes, a failure is one line), then under the
    environment's lock: read live, publish the new version, check it before traffic, move traffic and verify;
    a failure after that is recorded with what is live. Each step run is listed in the record's ``steps``.
    """
    asked = region or (planned.region if planned else None)  # where a failure before the plan is recorded
    early = EarlySteps("deploy", component, environment, version, git_sha, config_path, notify, region=asked)
    emit(DEPLOY_STARTED, component, environment, version, action="deploy", git_sha=git_sha)
    with running_steps():
        plan, artifact = plan_and_build(early, version, accept_alarms, planned, region)
        record = deploy_record(plan, artifact, git_sha)
        notifier = Notifier.from_config(plan.config, f"{component} {version} → {plan.where}", notify)
        with environment_lock(environment, component, region=plan.region):
            ran("lock")
            live = take_live(plan, record, notifier)
            progress: dict[str, bool] = {}  # "moved": traffic left live.lambda_version (shift_and_verify)
            try:
                if runs_already(live, version, artifact):  # decided on AWS's word for the code, not a plan's
                    live = read_live(plan.target, plan.function)
                    record.previous_version = record.live_version = live.app_version
                    if runs_already(live, version, artifact):
                        return already_live(plan, record, live, notifier)
                new_version = publish_new_version(plan, artifact, record)
                check_before_traffic(plan, artifact, live, new_version)
                move_traffic(plan, record, live, (new_version, version), notifier, progress)
            except Exception as exc:
                record_failure(plan, record, live, progress, exc)
                finish(plan, record, notifier)
                raise
            record.outcome, record.live_version, record.live_lambda_version = Outcome.DEPLOYED, version, new_version
            get_run_logger().info("%s %s is live in %s on Lambda version %s", component, version, plan.where,
                                  new_version)  # fmt: skip
            return finish(plan, record, notifier)


def executing(config: Config, planned: DeployPlan, checked: EnvironmentChecks | None = None) -> Plan:
    """The run's :class:`Plan` from the plan's value, checked as :func:`flows.common.checks_of` says."""
    checked = checked or checks_of(config, planned)
    return Plan(
        config, planned.component, planned.environment, planned.version, planned.resource, checked.target,
        checked.alarms, _planned_live(planned), region=planned.region,
    )  # fmt: skip


def _planned_live(planned: DeployPlan) -> LiveVersion | None:
    """The live version the plan read: under the lock only the alias is read again while it still points there."""
    live = planned.live
    if live is None or live.lambda_version is None:
        return None
    return LiveVersion(
        function=planned.resource, lambda_version=live.lambda_version, app_version=live.version,
        code_sha256=live.code_sha256 or "", description="", weights=dict(live.weights),
    )  # fmt: skip


def plan_and_build(
    early: EarlySteps,
    version: str,
    accept_alarms: list[str] | None,
    planned: DeployPlan | None = None,
    region: str | None = None,
) -> tuple[Plan, Artifact]:
    """Stages plan, build and upload: a failure is reported by ``early`` (live untouched)."""
    logger = get_run_logger()
    with early.reporting():
        config = load_config(early.config_path)
        request = (early.component, early.environment, version)
        planned, checked = the_plan(config, "lambda", request, accept_alarms, planned, region)
        plan = executing(config, planned, checked)
        early.planned(plan, partial(record_live_lambda, plan))
        logger.info(plan.target.describe())
        if plan.alarms.accepted:
            logger.warning(
                "Deploying although %s fire(s): accepted by name (--accept-alarm); recorded in the ledger",
                ", ".join(sorted(plan.alarms.accepted)),
            )
        artifact = ensure_artifact(plan, version, early.git_sha, early, planned.artifact)
    return plan, artifact


def deploy_record(plan: Plan, artifact: Artifact, git_sha: str | None) -> Record:
    """The run's ledger record, ``failed`` until it ends otherwise."""
    record = Record(
        plan.component, plan.environment, "deploy", Outcome.FAILED, artifact.version, git_sha=git_sha,
        sha256=artifact.sha256_hex, artifact="reused" if artifact.reused else "built", traffic=plan.strategy.name,
        accepted_alarms=sorted(plan.alarms.accepted), region=plan.region,
    )  # fmt: skip
    record.attach_flow_run()
    return record


def take_live(plan: Plan, record: Record, notifier: Notifier) -> LiveVersion:
    """What ``live`` points at (a split repaired first): the previous version and the rollback target."""
    ran("read-live")
    live = read_live_alias(plan.target, plan.function, plan.live)  # the alias may have moved since the plan
    notifier.send(
        f"deploy started by {record.actor}: live now {live.app_version or 'not deployed by opcd'}"
        f" (Lambda version {live.lambda_version}), traffic {plan.strategy.describe()}"
    )
    warn_if_interrupted(plan, live)
    live, record.repaired = repair_split(plan, live)
    record.previous_version, record.previous_lambda_version = live.app_version, live.lambda_version
    record.live_version, record.live_lambda_version = live.app_version, live.lambda_version
    return live


def runs_already(live: LiveVersion, version: str, artifact: Artifact) -> bool:
    return live.app_version == version and live.code_sha256 == artifact.code_sha256 and not live.weights


def already_live(plan: Plan, record: Record, live: LiveVersion, notifier: Notifier) -> Record:
    """The version runs already: nothing to publish; its rules (configuration) are still applied."""
    get_run_logger().info(
        "%s %s is already live in %s (Lambda version %s): nothing to do",
        plan.component, record.version, plan.environment, live.lambda_version,
    )  # fmt: skip
    record.outcome, record.lambda_version, record.reason = Outcome.NOOP, live.lambda_version, "already live"
    ran("rules")
    record.rules = sync_rules(plan, live).summary()
    return finish(plan, record, notifier)


def publish_new_version(plan: Plan, artifact: Artifact, record: Record) -> str:
    """``$LATEST`` from the artifact (its sha checked), published as a new version; its number."""
    ran("update-code")
    update_function_code(plan.target, plan.function, plan.bucket, artifact.key, artifact.code_sha256)
    ran("publish")
    new_version = publish_version(
        plan.target,
        plan.function,
        version_description(plan.component, artifact.version, artifact.sha256_hex),
        artifact.code_sha256,
    )
    record.lambda_version = new_version
    return new_version


def check_migrated(plan: Plan, version: str) -> None:
    """A later region of a database the regions share: its first region's deploy migrated it for ``version`` (that
    region runs ``version`` now); DeployFailed, live untouched, otherwise: the new code would meet the old schema."""
    config, environment = plan.config, plan.environment
    first = config.regions(environment)[0]
    there = live_record(config, environment, plan.component, first)
    if there is None or there.version != version:
        raise DeployFailed(
            f"{plan.component} {version}'s migrations run with its deploy to {where(environment, first)} (one"
            f" database for every region), which runs {there.version if there else 'no version opcd deployed'}",
            f"deploy it there first: {deploy_command(plan.component, environment, version, first)}",
        )


def check_before_traffic(plan: Plan, artifact: Artifact, live: LiveVersion, new_version: str) -> None:
    """Migrations, then the smoke checks and the sample event on the new version; live untouched on failure."""
    comp = plan.config.lambda_component(plan.component)
    if comp.migrations and not plan.config.migrates(plan.environment, plan.region):
        check_migrated(plan, artifact.version)
    elif comp.migrations:
        ran("migrations")
        secret_name = plan.config.database_secret(plan.environment, plan.region)
        run_migrations(
            download_artifact(plan.target, plan.bucket, artifact.key), comp.migrations.command,
            comp.runtime, read_secret(plan.target, secret_name), comp.migrations.timeout,
            plan.config.build_cache_dir(),
        )  # fmt: skip
    try:
        if comp.smoke:
            ran("smoke")
            invoke_smoke_checks(plan.target, plan.function, new_version, comp.smoke)
        if comp.sample_event:
            ran("sample-event")
            event = sample_event(plan)
            invoke_sample_event(plan.target, plan.function, new_version, event, comp.sample_expect)
    except DeployFailed as exc:
        raise DeployFailed(
            f"pre-traffic {exc}; live untouched on {live.app_version or 'a version opcd did not deploy'}"
            f" (Lambda version {live.lambda_version})"
        ) from exc


def move_traffic(
    plan: Plan,
    record: Record,
    live: LiveVersion,
    new: tuple[str, str],
    notifier: Notifier,
    progress: dict[str, bool],
) -> None:
    """Rules onto the new version, the rollback target in the ledger, then :func:`shift_and_verify`
    (``new``: the Lambda version and the app version it runs)."""
    new_version, version = new
    ran("rules")
    record.rules = sync_rules(plan, live).summary()
    # A killed process runs no rollback hook: leave the rollback target in the ledger first.
    ran("record-shifting")
    record.outcome, record.reason = Outcome.SHIFTING, f"moving live from {live.lambda_version} to {new_version}"
    record_in_ledger(plan.target, plan.bucket, record)
    record.finished_at = record.reason = None
    bake_log: dict[str, Any] = {}
    try:
        shift_and_verify(plan, new_version, version, live, plan.strategy, bake_log, notifier, progress)
    finally:
        record.bake = bake_log or None


def outcome_of(live: LiveVersion, after: LiveVersion, progress: dict[str, bool]) -> Outcome:
    """How a failed run ended, from the alias read back (``after``) and whether traffic ever moved.

    ``rollback-failed``: live is not back on ``live.lambda_version`` alone. ``rolled-back``: traffic
    moved (``progress["moved"]``, see :func:`shift_and_verify`) and came back. ``failed``: it never moved.
    """
    if after.lambda_version != live.lambda_version or after.weights:
        return Outcome.ROLLBACK_FAILED
    return Outcome.ROLLED_BACK if progress.get("moved") else Outcome.FAILED


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
    plan: DeployPlan | None = None,
) -> Record:
    """Deploy the backend API to one environment (blue/green behind ``live``, automatic rollback)."""
    with commit_config(config_path, git_sha) as (config_path, git_sha):
        return deploy_lambda("backend", environment, version, git_sha, config_path, accept_alarms, notify, plan)


@flow(name="deploy-worker", flow_run_name="worker {version} to {environment}", log_prints=True)
def deploy_worker(
    environment: str,
    version: str,
    git_sha: str | None = None,
    config_path: str | None = None,
    accept_alarms: list[str] | None = None,
    notify: bool = True,
    plan: DeployPlan | None = None,
) -> Record:
    """Deploy the worker to one environment: the backend's path plus EventBridge rules and a sample event."""
    with commit_config(config_path, git_sha) as (config_path, git_sha):
        return deploy_lambda("worker", environment, version, git_sha, config_path, accept_alarms, notify, plan)


@flow(name="deploy-lambda", flow_run_name="{component} {version} to {environment}", log_prints=True)
def deploy_lambda_component(
    component: str,
    environment: str,
    version: str,
    git_sha: str | None = None,
    config_path: str | None = None,
    accept_alarms: list[str] | None = None,
    notify: bool = True,
    plan: DeployPlan | None = None,
) -> Record:
    """Deploy any Lambda component of opcd.toml (for components not named backend or worker)."""
    with commit_config(config_path, git_sha) as (config_path, git_sha):
        return deploy_lambda(component, environment, version, git_sha, config_path, accept_alarms, notify, plan)
