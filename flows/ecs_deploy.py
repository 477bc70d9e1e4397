"""One ECS component (the frontend on ECS) to one environment: image, task definition, service deployment.

Steps: build the image reproducibly and push ``:{version}`` to ECR (the App Runner path's
:func:`flows.frontend_deploy.build_and_push`, unchanged); take the environment's lock; remember the
task definition revision the service runs (the rollback target); register a new revision of it in
which only the component's container changes, to the image's digest (never a mutable tag);
``UpdateService`` to that revision with the environment's strategy (rolling with the deployment
circuit breaker and the environment's alarms, or ECS's native blue/green with a bake) and follow
the service deployment to its end. ``SUCCESSFUL`` → opcd's health, smoke and alarm checks; any of
them failing puts the previous revision back (the transaction's ``on_rollback`` hook), followed
and health-checked in turn. ECS rolling back on its own (circuit breaker, alarm) is a failed deploy
whose reason is ECS's; the run says what is live now.

An environment of several regions: one deploy per region (``region``), each with its region's service, lock,
ledger (in its region's bucket) and health URL; the image is built once and copied to each further region's
repository (registry to registry, digests preserved; ECR must then report the build's digest there).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from prefect import flow
from prefect.logging import get_run_logger

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
from flows.frontend_deploy import build_and_push
from flows.plan.models import DeployPlan
from opcd.aws import AwsTarget
from opcd.config import Config, EcsService, load_config, where
from opcd.errors import ConfigError, DeployFailed, InputError, failure_text
from opcd.locks import environment_lock
from opcd.outcomes import Outcome
from opcd.versions import check_version
from tasks.cloudwatch import AlarmGuard, check_alarms
from tasks.ecr import LATEST, Repository, describe_repository, tag_digest
from tasks.ecs import (
    DeployOutcome,
    LiveService,
    describe_service,
    follow_deployment,
    register_revision,
    start_deployment,
)
from tasks.ecs import rollback as put_back
from tasks.events import DEPLOY_STARTED, emit
from tasks.git import commit_config
from tasks.health import check_health, http_smoke_checks
from tasks.images import image_tag, version_of
from tasks.ledger import Record, read_history, read_latest, record_in_ledger
from tasks.notify import Notifier


@dataclass(frozen=True)
class EcsPlan:
    """Everything an ECS deploy needs, resolved and checked before anything changes."""

    config: Config
    component: str
    environment: str
    version: str | None
    settings: EcsService
    target: AwsTarget
    alarms: AlarmGuard
    repository: Repository
    health: str  # the public health URL; its origin is where the service answers (the load balancer)
    live: LiveService | None = None  # the service as it was when the request was checked
    region: str | None = None  # one of the environment's regions when it has several (else None)

    @property
    def bucket(self) -> str:
        """The artifact bucket of the deploy's region: the image's metadata, the ledger's records."""
        return self.config.bucket_for(self.environment, self.region)

    @property
    def where(self) -> str:
        """``prod``, or ``prod us-west-2`` in an environment of several regions."""
        return where(self.environment, self.region)

    @property
    def container(self) -> str:
        return self.config.ecs_container(self.component)

    @property
    def base_url(self) -> str:
        parts = urlsplit(self.health)
        return f"{parts.scheme}://{parts.netloc}"


def check_ecs_deploy(
    config: Config,
    component: str,
    environment: str,
    version: str | None,
    accept_alarms: list[str] | None = None,
    accept_firing: bool = False,
    checked: EnvironmentChecks | None = None,
    region: str | None = None,
) -> EcsPlan:
    """:func:`plan_ecs_deploy` of a loaded config; ``checked``: the environment's checks (of ``region``: None, the
    environment's first), already made."""
    comp = config.ecs_component(component)
    config.environment(environment)
    region = config.region_key(environment, region)
    if version is not None:
        check_version(version)
    settings = config.ecs_service(component, environment, region)
    health = config.health_url(component, environment, region)
    if health is None:
        raise ConfigError(
            f"environments.{environment}.health.{component}: missing",
            "an ECS service has no URL of its own: give the health URL its load balancer answers",
        )
    checked = checked or check_environment(config, environment, accept_alarms, accept_firing, region)
    target = checked.target
    live = describe_service(target, settings.cluster, settings.service, config.ecs_container(component))
    if busy(live):
        raise InputError(
            f"ECS service {live.service} is {busy(live)}: nothing was changed",
            "wait for its deployment to end (opcd status) and deploy again",
        )
    repository = describe_repository(target, comp.repository)
    return EcsPlan(
        config, component, environment, version, settings, target, checked.alarms, repository, health, live, region
    )


def plan_ecs_deploy(
    component: str,
    environment: str,
    version: str | None,
    config_path: str | None,
    accept_alarms: list[str] | None = None,
    accept_firing: bool = False,
    region: str | None = None,
) -> EcsPlan:
    """Validate the request and the AWS resources it names; raise InputError before any change."""
    config = load_config(config_path)
    return check_ecs_deploy(config, component, environment, version, accept_alarms, accept_firing, region=region)


def busy(live: LiveService) -> str | None:
    """What keeps a deploy from starting: a service deployment still rolling out."""
    return f"deploying (its deployment is {live.rollout})" if live.rollout == "IN_PROGRESS" else None


def read_live(plan: EcsPlan) -> LiveService:
    return describe_service(plan.target, plan.settings.cluster, plan.settings.service, plan.container)


def name_of(task_definition: str) -> str:
    """``arn:…:task-definition/family:7`` → ``family:7``."""
    return task_definition.rpartition("/")[2]


def image_version(target: AwsTarget, repository: Repository, image: str) -> tuple[str | None, str | None]:
    """(version, digest) of ``repository@sha256:…`` or ``repository:tag``; (None, None) for another image."""
    if image.startswith(repository.uri + "@"):
        digest = image.partition("@")[2]
        return version_of(tag_for_digest(target, repository, digest)), digest
    tag = repository.tag_of(image)
    if tag is None:
        return None, None
    return version_of(tag), tag_digest(target, repository.name, tag)


def tag_for_digest(target: AwsTarget, repository: Repository, digest: str) -> str | None:
    """The version tag ECR keeps on ``digest`` (not ``latest``), or None."""
    ecr = target.client("ecr")
    try:
        details = ecr.describe_images(repositoryName=repository.name, imageIds=[{"imageDigest": digest}])
    except Exception:  # not in ECR (any more): the version is unknown, the digest still says what runs
        return None
    tags = [t for d in details.get("imageDetails", []) for t in d.get("imageTags", []) if t != LATEST]
    return sorted(tags)[0] if tags else None


def describe_revision(plan: EcsPlan, task_definition: str, image: str | None) -> str:
    """``v2 (outreachpass-web-ecs-dev:7, sha256:…)``: a revision as people read it."""
    if image is None:
        return name_of(task_definition)
    version, digest = image_version(plan.target, plan.repository, image)
    if version is None and digest is None:
        return f"{name_of(task_definition)} ({image}: not an image opcd pushed)"
    return f"{version or 'an untagged image'} ({name_of(task_definition)}, {digest or 'digest unknown'})"


def describe_live(plan: EcsPlan, live: LiveService) -> str:
    return describe_revision(plan, live.task_definition, live.image)


def record_live(plan: EcsPlan, record: Record, live: LiveService) -> None:
    record.live_task_definition, record.live_image = live.task_definition, live.image
    record.live_version, record.live_image_digest = image_version(plan.target, plan.repository, live.image)


def record_service(plan: EcsPlan, record: Record) -> LiveService:
    """The service as it runs now, before the run changes it: the rollback target, and what is live."""
    ran("read-live")
    before = read_live(plan)
    record_live(plan, record, before)
    record.previous_task_definition, record.previous_image = before.task_definition, before.image
    record.previous_version = record.live_version
    return before


def check_service(plan: EcsPlan) -> None:
    """Post-deploy checks of the service as it answers now: health URL, smoke checks, alarms."""
    env = plan.config.environment(plan.environment)
    ran("health")
    check_health(plan.target.resolve_url(plan.health), plan.health, env.health_check)
    smoke = plan.config.component(plan.component).smoke
    if smoke:
        ran("smoke")
        http_smoke_checks(plan.target.resolve_url(plan.base_url), plan.base_url, smoke, env.health_check.timeout)
    if plan.alarms.names:
        ran("alarms")
    check_alarms(plan.target, plan.alarms)


def verify_rollback(plan: EcsPlan, before: LiveService) -> tuple[str, bool]:
    """After a failure: does the service run ``before``'s revision, settled and healthy? (what is live, verified)"""
    logger = get_run_logger()
    after = read_live(plan)
    live = describe_live(plan, after)
    if after.task_definition != before.task_definition:
        logger.error("ROLLBACK NOT VERIFIED: %s runs %s, expected %s", after.service, name_of(after.task_definition),
                     name_of(before.task_definition))  # fmt: skip
        return f"ROLLBACK FAILED: {after.service} runs {live}; it ran {name_of(before.task_definition)}", False
    if busy(after) or after.running < after.desired:
        state = busy(after) or f"{after.running} of {after.desired} tasks running"
        return f"ROLLBACK NOT VERIFIED: {after.service} is back on {live} but {state}", False
    env = plan.config.environment(plan.environment)
    try:
        check_health(plan.target.resolve_url(plan.health), plan.health, env.health_check)
    except DeployFailed as exc:
        return f"ROLLBACK NOT VERIFIED: {live} is back, but it is not healthy either: {exc}", False
    logger.info("Verified: %s runs %s and is healthy", after.service, live)
    return f"{live} is live, verified healthy", True


def move_service(
    plan: EcsPlan, before: LiveService, revision: str, progress: dict[str, bool] | None = None
) -> LiveService:
    """Update the service to ``revision``, follow the service deployment, check it; undo on any failure.

    Raises DeployFailed whose message says why and what is live now. ``progress["moved"]`` tells
    whether the new revision may have served (ECS reported the deployment SUCCESSFUL, or it ended
    otherwise than by ECS's own successful rollback); then the previous revision is put back (another
    service deployment, followed). ``progress["verified"]``: the service was then found running
    ``before``'s revision, every desired task up, and healthy.
    """
    logger = get_run_logger()
    comp = plan.config.ecs_component(plan.component)
    timeout, poll = comp.operation.timeout, comp.operation.poll_interval
    cluster, service = plan.settings.cluster, plan.settings.service
    progress = {} if progress is None else progress
    progress["moved"] = False
    alarms = watched_alarms(plan.settings, plan.alarms.names)  # the region's names ({region} filled in)
    try:
        ran("update-service")
        arn = start_deployment(
            plan.target, cluster, service, revision, plan.settings.strategy, plan.settings.bake, alarms
        )
        logger.info("UpdateService %s → %s (%s): service deployment %s", service, name_of(revision),
                    plan.settings.strategy, arn.rpartition("/")[2])  # fmt: skip
        ran("follow-operation")
        result = follow_deployment(plan.target, cluster, service, arn, timeout, poll, logger.info)
        if result.outcome is DeployOutcome.ROLLED_BACK:
            raise DeployFailed(f"ECS could not deploy it and rolled the service back itself: {result.reason}")
        progress["moved"] = True  # anything but ECS's own rollback: the new revision may serve
        if not result.ok:
            raise DeployFailed(f"ECS's service deployment ended {result.status}: {result.reason or 'no reason given'}")
        ran("verify-revision")
        after = read_live(plan)
        if after.task_definition != revision:
            raise DeployFailed(f"{service} runs {name_of(after.task_definition)} after the deployment, expected"
                               f" {name_of(revision)}")  # fmt: skip
        check_service(plan)
    except Exception as exc:
        ran("on-failure")
        reason = failure_text(exc)
        undo(plan, before, progress, timeout, poll)
        where = "after it went live" if progress["moved"] else "before it served"
        verdict, progress["verified"] = verify_rollback(plan, before)
        raise DeployFailed(f"{name_of(revision)} failed {where}: {reason}; {verdict}") from exc
    return after


def undo(plan: EcsPlan, before: LiveService, progress: dict[str, bool], timeout: float, poll: float) -> None:
    """Put ``before``'s revision back when the service is (or may be) elsewhere; a failure is logged (and verified
    after)."""
    logger = get_run_logger()
    try:
        if not progress["moved"] and read_live(plan).task_definition == before.task_definition:
            return  # never left it: ECS rolled back itself, or UpdateService was refused
        progress["moved"] = True
        logger.warning("Rolling back: %s → %s", plan.settings.service, name_of(before.task_definition))
        put_back(
            plan.target, plan.settings.cluster, plan.settings.service, before.task_definition, timeout, poll,
            plan.settings.strategy,
        )  # fmt: skip
    except Exception as exc:  # said loudly here; verify_rollback says what runs
        logger.error("Rollback of %s to %s FAILED: %s", plan.settings.service, name_of(before.task_definition),
                     failure_text(exc))  # fmt: skip


def move_and_record(plan: EcsPlan, record: Record, notifier: Notifier, before: LiveService, revision: str) -> Record:
    """:func:`move_service`, then the outcome in the ledger, the artifact and Slack; re-raise a failure.

    ``rolled-back``: the revision may have served and was verifiably taken back; ``failed``: it never
    served (ECS's own rollback included); ``rollback-failed``: the service is not verified on its old revision.
    """
    progress: dict[str, bool] = {}
    try:
        after = move_service(plan, before, revision, progress)
    except DeployFailed as exc:
        record_live(plan, record, read_live(plan))
        if not progress.get("verified"):
            record.outcome = Outcome.ROLLBACK_FAILED
        else:
            record.outcome = Outcome.ROLLED_BACK if progress.get("moved") else Outcome.FAILED
        record.reason = str(exc)
        finish(plan, record, notifier)
        raise
    record.outcome = Outcome.DEPLOYED
    record_live(plan, record, after)
    get_run_logger().info("%s in %s now runs %s", plan.component, plan.where, describe_live(plan, after))
    return finish(plan, record, notifier)


def run_ecs_deploy(
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
    """The body of the ECS deploy flow: the plan's steps (``planned``, or made now) in its order, each one run
    listed in the record's ``steps``. ``region``: one of the environment's (None: its first; a plan says its own)."""
    region = planned.region if planned is not None else region
    with running_steps():
        return _run_ecs_deploy(
            component, environment, version, git_sha, config_path, accept_alarms, notify, planned, region
        )


def executing(config: Config, planned: DeployPlan, checked: EnvironmentChecks | None = None) -> EcsPlan:
    """The run's :class:`EcsPlan` from the plan's value, checked as :func:`flows.common.checks_of` says."""
    checked = checked or checks_of(config, planned)
    comp = config.ecs_component(planned.component)
    repository = Repository(comp.repository, planned.artifact.location.rpartition(":")[0])  # uri:tag
    region = planned.region
    health = config.health_url(planned.component, planned.environment, region)
    assert health is not None  # the plan's check found it
    settings = config.ecs_service(planned.component, planned.environment, region)
    return EcsPlan(
        config, planned.component, planned.environment, planned.version, settings, checked.target, checked.alarms,
        repository, health, region=region,
    )  # fmt: skip


def _run_ecs_deploy(
    component: str,
    environment: str,
    version: str,
    git_sha: str | None,
    config_path: str | None,
    accept_alarms: list[str] | None,
    notify: bool,
    planned: DeployPlan | None,
    region: str | None = None,
) -> Record:
    logger = get_run_logger()
    early = EarlySteps("deploy", component, environment, version, git_sha, config_path, notify, region=region)
    emit(DEPLOY_STARTED, component, environment, version, action="deploy", git_sha=git_sha)
    with early.reporting():
        config = load_config(config_path)
        request = (component, environment, version)
        planned, checked = the_plan(config, "ecs", request, accept_alarms, planned, region)
        plan = executing(config, planned, checked)
        early.planned(plan, partial(record_service, plan))
        logger.info(plan.target.describe())
        identifier, digest, artifact = build_and_push(plan, version, git_sha, early, planned.artifact)
    image = f"{plan.repository.uri}@{digest}"  # the digest, never the tag: what was tested is what runs
    how = plan.settings.strategy + (
        f", bake {plan.settings.bake_minutes} min" if plan.settings.strategy == "blue-green" else ""
    )
    record = Record(
        component, environment, "deploy", Outcome.FAILED, version, git_sha=git_sha, image=image, image_digest=digest,
        artifact=artifact, traffic=f"ECS {how}", accepted_alarms=sorted(plan.alarms.accepted), region=plan.region,
    )  # fmt: skip
    record.attach_flow_run()
    notifier = Notifier.from_config(plan.config, f"{component} {version} → {plan.where}", notify)
    with environment_lock(environment, component, region=plan.region):
        ran("lock")
        before = record_service(plan, record)
        notifier.send(f"deploy started by {record.actor}: {before.service} runs {describe_live(plan, before)}")
        if busy(before):
            record.reason = f"{before.service} is {busy(before)}: nothing was changed"
            finish(plan, record, notifier)
            raise InputError(record.reason, "wait for its deployment to end (opcd status) and deploy again")
        if before.image == image:
            logger.info("%s %s already runs on %s: nothing to do", component, version, before.service)
            record.outcome, record.reason = Outcome.NOOP, "already live"
            return finish(plan, record, notifier)
        ran("register-revision")
        revision = record.task_definition = register_revision(plan.target, before, image)
        logger.info("Registered %s: %s → %s (%s)", name_of(revision), plan.container, image, identifier)
        # A killed process leaves no rollback behind: the rollback target goes to the ledger first.
        ran("record-shifting")
        record.outcome = Outcome.SHIFTING
        record.reason = f"moving {before.service} from {name_of(before.task_definition)} to {name_of(revision)}"
        record_in_ledger(plan.target, plan.bucket, record)
        record.finished_at = record.reason = None
        return move_and_record(plan, record, notifier, before, revision)


@flow(name="deploy-ecs", flow_run_name="{component} {version} to {environment}", log_prints=True)
def deploy_ecs(
    component: str,
    environment: str,
    version: str,
    git_sha: str | None = None,
    config_path: str | None = None,
    accept_alarms: list[str] | None = None,
    notify: bool = True,
    plan: DeployPlan | None = None,
    region: str | None = None,
) -> Record:
    """Deploy an ECS component: a new task definition revision (the image's digest), ECS's rolling or
    blue/green deployment followed to its end, opcd's health and smoke checks, automatic rollback.
    ``region``: one of the environment's (None: its first; a plan given says its own)."""
    with commit_config(config_path, git_sha) as (config_path, git_sha):
        return run_ecs_deploy(
            component, environment, version, git_sha, config_path, accept_alarms, notify, plan, region
        )


def seen_revisions(history: list[Record]) -> dict[str, tuple[str | None, str | None]]:
    """Task definition revisions the ledger saw live, oldest first: revision → (image, version)."""
    seen: dict[str, tuple[str | None, str | None]] = {}
    for record in (r for r in history if r.action in ("deploy", "rollback")):
        if record.outcome.saw_previous_live and record.previous_task_definition:
            seen[record.previous_task_definition] = (record.previous_image, record.previous_version)
        if record.outcome is Outcome.DEPLOYED and record.live_task_definition:
            seen[record.live_task_definition] = (record.live_image, record.live_version)
    return seen


def choose_revision(
    plan: EcsPlan, before: LiveService, to_version: str | None, force: bool = False, register: bool = True
) -> tuple[str, str | None, str | None]:
    """(task definition revision, its image, its version) a rollback goes to.

    Without a version: the revision the service ran before the deploy that put the current one live
    (the ledger's ``previous_task_definition``; a second rollback goes further back, never forward).
    A named version: the newest revision the ledger saw live with that version's image; ``force``
    registers one with that image (``register=False``: ``("", image, version)``, for a dry run).
    """
    history = read_history(plan.target, plan.bucket, plan.environment, plan.component, plan.region)
    seen = seen_revisions(history)
    if to_version is not None:
        check_version(to_version)
        versions = dict.fromkeys(v for _, v in seen.values() if v)
        were_live = f"versions that were live on {before.service}: {', '.join(versions) or 'none in the ledger'}"
        digest = tag_digest(plan.target, plan.repository.name, image_tag(to_version))
        if digest is None:
            raise InputError(f"{plan.repository.name}:{image_tag(to_version)} is not in ECR", were_live)
        matches = [r for r, (_, version) in seen.items() if version == to_version]
        if matches:
            return matches[-1], seen[matches[-1]][0], to_version
        if not force:
            raise InputError(
                f"{plan.component} {to_version} was never live on {before.service}: the ledger has no deploy or"
                " rollback that left it live",
                f"{were_live}; --force goes to it anyway",
            )
        image = f"{plan.repository.uri}@{digest}"
        return (register_revision(plan.target, before, image) if register else ""), image, to_version
    for record in reversed(history):
        deployed = record.action == "deploy" and record.outcome is Outcome.DEPLOYED
        if deployed and record.live_task_definition == before.task_definition and record.previous_task_definition:
            return record.previous_task_definition, record.previous_image, record.previous_version
    raise InputError(
        f"the ledger does not say what ran on {before.service} before {name_of(before.task_definition)}",
        "name the target with --to VERSION",
    )


def rollback_ecs(
    component: str,
    environment: str,
    to_version: str | None,
    config_path: str | None,
    force: bool = False,
    region: str | None = None,
) -> Record:
    """The ``rollback`` flow's body for an ECS component: back to the previous task definition revision (in
    ``region``, one of the environment's several; None: its first)."""
    logger = get_run_logger()
    with EarlySteps.rollback(component, environment, to_version, config_path, region).reporting():
        plan = plan_ecs_deploy(component, environment, to_version, config_path, accept_firing=True, region=region)
    with environment_lock(environment, component, region=plan.region):
        before = read_live(plan)
        revision, image, version = choose_revision(plan, before, to_version, force)
        record = Record(component, environment, "rollback", Outcome.FAILED, version, force=force, region=plan.region)
        record.task_definition, record.image = revision, image
        record.image_digest = image.partition("@")[2] if image and "@" in image else None
        record_live(plan, record, before)
        record.previous_task_definition, record.previous_image = before.task_definition, before.image
        record.previous_version = record.live_version
        record.attach_flow_run()
        if force:
            logger.warning("--force: going to %s whether or not the ledger saw it live", name_of(revision))
        notifier = Notifier.from_config(plan.config, f"rollback {component} in {plan.where}")
        if busy(before):
            raise InputError(f"{before.service} is {busy(before)}", "wait for its deployment to end")
        if revision == before.task_definition:
            logger.info("%s already runs %s: nothing to do", before.service, name_of(revision))
            record.outcome, record.reason = Outcome.NOOP, "already live"
            return finish(plan, record, notifier)
        logger.info("Rolling %s back from %s to %s", before.service, name_of(before.task_definition), name_of(revision))
        return move_and_record(plan, record, notifier, before, revision)


def watched_alarms(settings: EcsService, environment_alarms: list[str]) -> list[str]:
    """The alarms ECS watches during its deployment (and rolls back on): the service's own, else the environment's."""
    return list(settings.alarms) if settings.alarms is not None else list(environment_alarms)


def status_row(
    config: Config, target: AwsTarget, environment: str, component: str, region: str | None = None
) -> dict[str, Any]:
    """One ECS component's row of ``opcd status``: the revision it runs, its image's tag and digest,
    tasks running/desired, and the ledger's view (drift: the ledger recorded another revision live); in
    ``region`` (one of the environment's several; ``target`` that region's)."""

    settings = config.ecs_service(component, environment, region)
    comp = config.ecs_component(component)
    live = describe_service(target, settings.cluster, settings.service, config.ecs_container(component))
    version, digest = image_version(target, describe_repository(target, comp.repository), live.image)
    bucket = config.bucket_for(environment, region)
    latest = read_latest(target, bucket, environment, component, region=region)
    deployed = read_latest(target, bucket, environment, component, "live.json", region=region)
    recorded = deployed.live_task_definition if deployed else None
    return {
        "component": component, "environment": environment, "service": live.service,
        "service_status": busy(live) or "RUNNING", "version": version, "image": live.image, "image_digest": digest,
        "revision": name_of(live.task_definition), "running": live.running, "desired": live.desired,
        "lambda_version": None, "split": None,
        "deployed_at": deployed.finished_at if deployed else None,
        "flow_run": deployed.flow_run_name if deployed else None,
        "flow_run_id": deployed.flow_run_id if deployed else None,
        "last_outcome": latest.outcome if latest else None, "last_run": latest.flow_run_name if latest else None,
        "drift": bool(recorded and recorded != live.task_definition), "rules": [],
    }  # fmt: skip
