"""One App Runner component (the frontend) to one environment: image, ECR, rolling deploy, rollback.

Steps (ARCHITECTURE.md, "Frontend"): build the image reproducibly; push ``:{version}`` to ECR
(refused when that tag names another image) and move ``:latest``; take the environment's lock;
remember the image the service runs (the rollback target); ``UpdateService`` to
``repository:{version}`` and follow the operation to its end. ``SUCCEEDED`` → health, smoke and
alarms; any of them failing points the service back at the previous image (the transaction's
``on_rollback`` hook), which is followed and health-checked in turn. ``FAILED`` or
``ROLLBACK_SUCCEEDED`` from App Runner is a failed deploy; the run says what is live now.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Protocol

from prefect import flow
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
from opcd.config import Config, load_config
from opcd.errors import DeployFailed, InputError, ResourceMissing, failure_text
from opcd.locks import environment_lock
from opcd.outcomes import Outcome, Stage
from opcd.versions import check_version
from tasks.apprunner import Service, find_service, operation, read_service, update_service, wait_for_operation
from tasks.cloudwatch import AlarmGuard, check_alarms
from tasks.ecr import Repository, copy_from_region, describe_repository, push_image, tag_digest
from tasks.events import DEPLOY_STARTED, emit
from tasks.git import commit_config
from tasks.health import check_health, http_smoke_checks
from tasks.images import build_image, image_source_hash, image_tag, version_of
from tasks.ledger import Record, actor, now, read_history, record_in_ledger, seen_live
from tasks.notify import Notifier
from tasks.s3_artifacts import read_artifact_metadata, write_artifact_metadata


@dataclass(frozen=True)
class ServicePlan:
    """Everything an App Runner deploy needs, resolved and checked before anything changes."""

    config: Config
    component: str
    environment: str
    version: str | None
    service_arn: str
    target: AwsTarget
    alarms: AlarmGuard
    repository: Repository
    service: Service | None = None  # the service as it was when the request was checked

    @property
    def bucket(self) -> str:
        return self.config.project.artifact_bucket


class ImagePlan(Protocol):
    """What building and pushing a component's image needs of a deploy's plan (App Runner or ECS)."""

    @property
    def config(self) -> Config: ...
    @property
    def component(self) -> str: ...
    @property
    def environment(self) -> str: ...
    @property
    def target(self) -> AwsTarget: ...
    @property
    def repository(self) -> Repository: ...
    @property
    def bucket(self) -> str: ...


def check_apprunner_deploy(
    config: Config,
    component: str,
    environment: str,
    version: str | None,
    accept_alarms: list[str] | None = None,
    accept_firing: bool = False,
    checked: EnvironmentChecks | None = None,
) -> ServicePlan:
    """:func:`plan_apprunner_deploy` of a loaded config; ``checked``: the environment's checks, already made."""
    comp = config.apprunner_component(component)
    config.environment(environment)
    if version is not None:
        check_version(version)
    ref = config.service_ref(component, environment)
    checked = checked or check_environment(config, environment, accept_alarms, accept_firing)
    target = checked.target
    arn = find_service(target, ref)
    service = read_service(target, arn)
    if service.status != "RUNNING":
        raise InputError(
            f"App Runner service {service.name} is {service.status}, not RUNNING: nothing was changed",
            "wait for its operation to end (opcd status) and deploy again",
        )
    repository = describe_repository(target, comp.repository)
    return ServicePlan(config, component, environment, version, arn, target, checked.alarms, repository, service)


def plan_apprunner_deploy(
    component: str,
    environment: str,
    version: str | None,
    config_path: str | None,
    accept_alarms: list[str] | None = None,
    accept_firing: bool = False,
) -> ServicePlan:
    """Validate the request and the AWS resources it names; raise InputError before any change."""
    return check_apprunner_deploy(
        load_config(config_path), component, environment, version, accept_alarms, accept_firing
    )


def live_of(plan: ServicePlan, service: Service) -> tuple[str | None, str | None]:
    """(version, digest) of the image a service runs; version None for an image not in our repository."""
    tag = plan.repository.tag_of(service.image)
    if tag is None:
        return None, None
    return version_of(tag), tag_digest(plan.target, plan.repository.name, tag)


def describe_image(plan: ServicePlan, identifier: str) -> str:
    tag = plan.repository.tag_of(identifier)
    if tag is None:
        return f"{identifier} (not an image opcd pushed)"
    return f"{tag} ({identifier}, {tag_digest(plan.target, plan.repository.name, tag) or 'digest unknown'})"


def check_service(plan: ServicePlan, service: Service) -> None:
    """Post-deploy checks of the service as it runs now: health URL, smoke checks, alarms."""
    env = plan.config.environment(plan.environment)
    public = env.health.get(plan.component) or f"{service.https_url}/"
    ran("health")
    check_health(plan.target.resolve_url(public), public, env.health_check)
    smoke = plan.config.apprunner_component(plan.component).smoke
    if smoke:
        ran("smoke")
        http_smoke_checks(
            plan.target.resolve_url(service.https_url), service.https_url, smoke, env.health_check.timeout
        )
    if plan.alarms.names:
        ran("alarms")
    check_alarms(plan.target, plan.alarms)


def verify_service_rollback(plan: ServicePlan, before: Service) -> tuple[str, bool]:
    """After a failure: is the service back on ``before.image``, running and healthy? (what is live, verified)"""
    logger = get_run_logger()
    after = read_service(plan.target, plan.service_arn)
    live = describe_image(plan, after.image)
    if after.image != before.image:
        logger.error("ROLLBACK NOT VERIFIED: %s runs %s, expected %s", after.name, after.image, before.image)
        return f"ROLLBACK FAILED: {after.name} runs {live} ({after.status}); it ran {before.image}", False
    if after.status != "RUNNING":
        return f"ROLLBACK NOT VERIFIED: {after.name} is back on {live} but {after.status}, not RUNNING", False
    env = plan.config.environment(plan.environment)
    public = env.health.get(plan.component) or f"{after.https_url}/"
    try:
        check_health(plan.target.resolve_url(public), public, env.health_check)
    except DeployFailed as exc:
        return f"ROLLBACK NOT VERIFIED: {live} is back, but it is not healthy either: {exc}", False
    logger.info("Verified: %s runs %s and is healthy", after.name, live)
    return f"{live} is live, verified healthy", True


def move_service(
    plan: ServicePlan, before: Service, identifier: str, progress: dict[str, bool] | None = None
) -> Service:
    """Point the service at ``identifier``, follow the operation, check it; undo on any failure.

    Raises DeployFailed whose message says why and what is live now; ``progress["moved"]`` tells
    whether the new image ever served (App Runner reported SUCCEEDED), or App Runner's own rollback
    failed; ``progress["verified"]`` whether the service was then found healthy on its old image.
    """
    comp = plan.config.apprunner_component(plan.component)
    timeout, poll = comp.operation.timeout, comp.operation.poll_interval
    progress = {} if progress is None else progress
    moved = progress["moved"] = False
    operation_id: str | None = None
    try:
        with transaction():
            ran("update-service")
            operation_id = update_service(plan.target, before, identifier, timeout, poll)
            ran("follow-operation")
            status = wait_for_operation(
                plan.target, plan.service_arn, operation_id, f"deployment of {identifier}", timeout, poll
            )
            if status == "ROLLBACK_SUCCEEDED":
                raise DeployFailed("App Runner could not deploy it and rolled the service back itself")
            if status == "ROLLBACK_FAILED":
                moved = progress["moved"] = True  # the service is broken: we have to repair it
                raise DeployFailed("App Runner could not deploy it, and its own rollback FAILED")
            if status != "SUCCEEDED":
                raise DeployFailed(f"App Runner's operation ended {status}")
            moved = progress["moved"] = True
            ran("verify-image")
            after = read_service(plan.target, plan.service_arn)
            if after.image != identifier:
                raise DeployFailed(f"{after.name} reports {after.image} after the deployment, expected {identifier}")
            check_service(plan, after)
    except Exception as exc:
        ran("on-failure")
        reason = failure_text(exc)
        if not moved and operation_id is not None:  # our wait ended first: what did the operation do?
            moved = progress["moved"] = served(plan, operation_id)
        where = "after it went live" if moved else "before it served"
        verdict, progress["verified"] = verify_service_rollback(plan, before)
        raise DeployFailed(f"{identifier} failed {where}: {reason}; {verdict}") from exc
    return after


def served(plan: ServicePlan, operation_id: str) -> bool:
    """Whether App Runner says our operation put its image in service (it may have ended after our wait)."""
    try:
        found = operation(plan.target, plan.service_arn, operation_id)
    except Exception as exc:  # not known: say what is known (the service's image, read back after)
        get_run_logger().warning("Could not read operation %s: %s", operation_id, failure_text(exc))
        return False
    return bool(found and found.get("Status") in ("SUCCEEDED", "ROLLBACK_FAILED"))


def move_and_record(plan: ServicePlan, record: Record, notifier: Notifier, before: Service, identifier: str) -> Record:
    """:func:`move_service`, then the outcome in the ledger, the artifact and Slack; re-raise a failure.

    ``rolled-back``: the image served and was verifiably taken back; ``failed``: it never served.
    """
    progress: dict[str, bool] = {}
    try:
        after = move_service(plan, before, identifier, progress)
    except DeployFailed as exc:
        record_live(plan, record, read_service(plan.target, plan.service_arn))
        if not progress.get("verified"):
            record.outcome = Outcome.ROLLBACK_FAILED
        else:
            record.outcome = Outcome.ROLLED_BACK if progress.get("moved") else Outcome.FAILED
        record.reason = str(exc)
        finish(plan, record, notifier)
        raise
    record.outcome = Outcome.DEPLOYED
    record_live(plan, record, after, record.image_digest if after.image == record.image else None)
    get_run_logger().info("%s in %s now runs %s (%s)", plan.component, plan.environment, identifier,
                          record.live_image_digest)  # fmt: skip
    return finish(plan, record, notifier)


def record_live(plan: ServicePlan, record: Record, service: Service, digest: str | None = None) -> None:
    """What ``service`` runs, as what is live; ``digest``: its image's, when the run knows it (not read again)."""
    record.live_image = service.image
    if digest is not None:
        record.live_version, record.live_image_digest = version_of(plan.repository.tag_of(service.image)), digest
    else:
        record.live_version, record.live_image_digest = live_of(plan, service)


def record_service(plan: ServicePlan, record: Record) -> Service:
    """The service as it runs now, before the run changes it: the rollback target, and what is live."""
    ran("read-live")
    before = read_service(plan.target, plan.service_arn)
    record.previous_image = before.image
    record.previous_version = version_of(plan.repository.tag_of(before.image))
    record_live(plan, record, before)
    return before


def source_region(plan: ImagePlan, identifier: str) -> AwsTarget:
    """The AWS (this target's account, another region) whose repository of the component is ``identifier``'s
    (``uri:tag``): a region of opcd.toml's; InputError when none is."""
    config = plan.config
    regions = [config.project.region, *(r for env in config.environments for r in config.regions(env))]
    uri = identifier.rpartition(":")[0]
    name = config.image_component(plan.component).repository
    for region in dict.fromkeys(r for r in regions if r != plan.target.region):
        there = replace(plan.target, region=region)
        try:
            if describe_repository(there, name).uri == uri:
                return there
        except ResourceMissing:  # no repository of that name in that region: not the source
            continue
    raise InputError(
        f"{identifier} is not the image of {name} in a region of opcd.toml",
        "pass the plan the release or `opcd deploy` makes, or none",
    )


def build_and_push(
    plan: ImagePlan,
    version: str,
    git_sha: str | None,
    early: EarlySteps | None = None,
    planned: ArtifactPlan | None = None,
) -> tuple[str, str, str]:
    """The version's image in ECR: (identifier, digest, "reused" | "built"); built and pushed when needed.

    An image already pushed from the same source (its metadata in the artifact bucket says so, and
    ECR still has that digest under the tag) is reused without a build: promoting a version to the
    next environment deploys the very image that was tested. Otherwise it is built; the push then
    refuses a tag that already names another digest. ``planned``: the plan's image; one the plan found
    in ECR (or the release pushed) is used as it says, not read again.
    """
    logger = get_run_logger()
    early = early or EarlySteps("deploy", plan.component, plan.environment, version)
    early.step = Stage.BUILD
    tag = image_tag(version)
    if planned is not None and not planned.build and planned.digest:
        if planned.copy_from:  # pushed to another region's repository: copied here, its digest checked
            early.step = Stage.PUSH
            ran("copy")
            find = partial(source_region, plan, planned.copy_from)  # looked for only when a copy is needed
            copy_from_region(plan.target, find, planned.copy_from, plan.repository, tag, planned.digest)
        ran("reuse")
        logger.info("Using %s (%s): %s", planned.location, planned.digest, planned.reason)
        return planned.location, planned.digest, "reused"
    comp = plan.config.image_component(plan.component)
    source = plan.config.source_dir(plan.component)
    hashed = image_source_hash(comp, source)
    # A plan that found no image from this source is not read again: the build follows, and the push refuses a
    # tag that names another digest by then (another run's push); without a plan, what ECR and the bucket keep decide.
    stored = in_ecr = None
    if planned is None or not planned.build:
        stored = read_artifact_metadata(plan.target, plan.bucket, plan.component, version)
        in_ecr = tag_digest(plan.target, plan.repository.name, tag)
    if stored and stored.get("source_hash") == hashed and in_ecr and stored.get("image_digest") == in_ecr:
        ran("reuse")
        logger.info(
            "Reusing %s (%s): pushed from the same source, not rebuilt", plan.repository.identifier(tag), in_ecr
        )
        return plan.repository.identifier(tag), in_ecr, "reused"
    work = plan.config.state_dir() / "build" / plan.component
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(dir=work, prefix=f"{tag}-"))  # one per run: runs may overlap
    ran("build")
    try:
        image = build_image(
            plan.component, version, comp, source, plan.config.root, out_dir, plan.config.build_cache_dir()
        )
        early.step = Stage.PUSH
        ran("push")
        pushed = push_image(plan.target, image, plan.repository)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    metadata = {
        "component": plan.component, "version": version, "git_sha": git_sha, "image": plan.repository.identifier(tag),
        "image_digest": image.digest, "size": image.size, "source_hash": hashed, "built_at": now(),
        "builder": f"{image.builder} on {platform.node()} ({actor()})",
    }  # fmt: skip
    early.step = Stage.UPLOAD
    write_artifact_metadata(plan.target, plan.bucket, plan.component, version, metadata)
    return plan.repository.identifier(tag), image.digest, "built" if pushed else "reused"


def deploy_apprunner(
    component: str,
    environment: str,
    version: str,
    git_sha: str | None,
    config_path: str | None,
    accept_alarms: list[str] | None = None,
    notify: bool = True,
    planned: DeployPlan | None = None,
) -> Record:
    """The body of the App Runner deploy flows (the frontend): the plan's steps (``planned``, or made now) in
    its order, each one run listed in the record's ``steps``."""
    with running_steps():
        return _deploy_apprunner(component, environment, version, git_sha, config_path, accept_alarms, notify, planned)


def executing(config: Config, planned: DeployPlan, checked: EnvironmentChecks | None = None) -> ServicePlan:
    """The run's :class:`ServicePlan` from the plan's value, checked as :func:`flows.common.checks_of` says."""
    checked = checked or checks_of(config, planned)
    name = config.apprunner_component(planned.component).repository
    repository = Repository(name, planned.artifact.location.rpartition(":")[0])  # uri:tag
    return ServicePlan(
        config, planned.component, planned.environment, planned.version, planned.resource_id, checked.target,
        checked.alarms, repository,
    )  # fmt: skip


def _deploy_apprunner(
    component: str,
    environment: str,
    version: str,
    git_sha: str | None,
    config_path: str | None,
    accept_alarms: list[str] | None,
    notify: bool,
    planned: DeployPlan | None,
) -> Record:
    logger = get_run_logger()
    early = EarlySteps("deploy", component, environment, version, git_sha, config_path, notify)
    emit(DEPLOY_STARTED, component, environment, version, action="deploy", git_sha=git_sha)
    with early.reporting():
        config = load_config(config_path)
        planned, checked = the_plan(config, "apprunner", (component, environment, version), accept_alarms, planned)
        plan = executing(config, planned, checked)
        early.planned(plan, partial(record_service, plan))
        logger.info(plan.target.describe())
        identifier, digest, artifact = build_and_push(plan, version, git_sha, early, planned.artifact)
    record = Record(
        component, environment, "deploy", Outcome.FAILED, version, git_sha=git_sha, image=identifier,
        image_digest=digest, artifact=artifact, traffic="App Runner deployment",
        accepted_alarms=sorted(plan.alarms.accepted),
    )  # fmt: skip
    record.attach_flow_run()
    notifier = Notifier.from_config(plan.config, f"{component} {version} → {environment}", notify)
    with environment_lock(environment, component):
        ran("lock")
        before = record_service(plan, record)
        notifier.send(f"deploy started by {record.actor}: {before.name} runs {describe_image(plan, before.image)}")
        if before.status != "RUNNING":
            record.reason = f"{before.name} is {before.status}, not RUNNING: nothing was changed"
            finish(plan, record, notifier)
            raise InputError(record.reason, "wait for its operation to end (opcd status) and deploy again")
        if before.image == identifier:
            logger.info("%s %s already runs on %s: nothing to do", component, version, before.name)
            record.outcome, record.reason = Outcome.NOOP, "already live"
            return finish(plan, record, notifier)
        # A killed process runs no rollback hook: leave the rollback target in the ledger first.
        ran("record-shifting")
        record.outcome, record.reason = Outcome.SHIFTING, f"moving {before.name} from {before.image} to {identifier}"
        record_in_ledger(plan.target, plan.bucket, record)
        record.finished_at = record.reason = None
        return move_and_record(plan, record, notifier, before, identifier)


@flow(name="deploy-frontend", flow_run_name="frontend {version} to {environment}", log_prints=True)
def deploy_frontend(
    environment: str,
    version: str,
    git_sha: str | None = None,
    config_path: str | None = None,
    accept_alarms: list[str] | None = None,
    notify: bool = True,
    plan: DeployPlan | None = None,
) -> Record:
    """Deploy the frontend image to its App Runner service (rolling, health-checked, automatic rollback)."""
    with commit_config(config_path, git_sha) as (config_path, git_sha):
        return deploy_apprunner("frontend", environment, version, git_sha, config_path, accept_alarms, notify, plan)


@flow(name="deploy-apprunner", flow_run_name="{component} {version} to {environment}", log_prints=True)
def deploy_apprunner_component(
    component: str,
    environment: str,
    version: str,
    git_sha: str | None = None,
    config_path: str | None = None,
    accept_alarms: list[str] | None = None,
    notify: bool = True,
    plan: DeployPlan | None = None,
) -> Record:
    """Deploy any App Runner component of opcd.toml (for components not named frontend)."""
    with commit_config(config_path, git_sha) as (config_path, git_sha):
        return deploy_apprunner(component, environment, version, git_sha, config_path, accept_alarms, notify, plan)


def choose_image(
    plan: ServicePlan, before: Service, to_version: str | None, force: bool = False
) -> tuple[str, str | None]:
    """The image identifier (and its version) a rollback goes to.

    A named version must be one whose image the ledger saw live (:func:`seen_live`); ``force`` goes
    to any image in ECR.
    """
    history = read_history(plan.target, plan.bucket, plan.environment, plan.component)
    if to_version is not None:
        check_version(to_version)
        tag = image_tag(to_version)
        images = seen_live(history, "live_image", "previous_image")
        versions = [v for image in images if (v := version_of(plan.repository.tag_of(image)))]
        were_live = f"versions that were live on {before.name}: {', '.join(versions) or 'none in the ledger'}"
        if tag_digest(plan.target, plan.repository.name, tag) is None:
            raise InputError(f"{plan.repository.name}:{tag} is not in ECR", were_live)
        identifier = plan.repository.identifier(tag)
        if identifier not in images and not force:
            raise InputError(
                f"{plan.component} {to_version} was never live on {before.name}: the ledger has no deploy or"
                " rollback that left it live",
                f"{were_live}; --force goes to it anyway",
            )
        return identifier, to_version
    for record in reversed(history):
        deployed = record.action == "deploy" and record.outcome is Outcome.DEPLOYED
        if deployed and record.live_image == before.image and record.previous_image:
            return record.previous_image, version_of(plan.repository.tag_of(record.previous_image))
    raise InputError(
        f"the ledger does not say what ran on {before.name} before {before.image}",
        "name the target with --to VERSION",
    )


def rollback_apprunner(
    component: str, environment: str, to_version: str | None, config_path: str | None, force: bool = False
) -> Record:
    """The ``rollback`` flow's body for an App Runner component."""
    logger = get_run_logger()
    with EarlySteps.rollback(component, environment, to_version, config_path).reporting():
        plan = plan_apprunner_deploy(component, environment, to_version, config_path, accept_firing=True)
    with environment_lock(environment, component):
        before = read_service(plan.target, plan.service_arn)
        identifier, version = choose_image(plan, before, to_version, force)
        record = Record(
            component, environment, "rollback", Outcome.FAILED, version, image=identifier,
            previous_image=before.image, previous_version=version_of(plan.repository.tag_of(before.image)),
            force=force,
        )  # fmt: skip
        if force:
            logger.warning("--force: going to %s whether or not the ledger saw it live", identifier)
        record_live(plan, record, before)
        if (tag := plan.repository.tag_of(identifier)) is not None:
            record.image_digest = tag_digest(plan.target, plan.repository.name, tag)
        record.attach_flow_run()
        notifier = Notifier.from_config(plan.config, f"rollback {component} in {environment}")
        if before.status != "RUNNING":
            raise InputError(f"{before.name} is {before.status}, not RUNNING", "wait for its operation to end")
        if identifier == before.image:
            logger.info("%s already runs %s: nothing to do", before.name, identifier)
            record.outcome, record.reason = Outcome.NOOP, "already live"
            return finish(plan, record, notifier)
        logger.info("Rolling %s back from %s to %s", before.name, before.image, identifier)
        return move_and_record(plan, record, notifier, before, identifier)
