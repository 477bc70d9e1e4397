"""Builders: a deploy, rollback or release plan from a loaded ``Config`` and AWS, read once, changed never.

Every check is the flows' own: :func:`flows.common.check_environment` (account, alarms, bucket:
once per environment), :func:`~flows.lambda_deploy.check_lambda_deploy`,
:func:`~flows.frontend_deploy.check_apprunner_deploy` and :func:`~flows.ecs_deploy.check_ecs_deploy`
(the resource and what runs on it), :func:`~flows.ecs_deploy.choose_revision`,
:func:`~flows.rollback.choose_version` / :func:`~flows.frontend_deploy.choose_image` (a rollback's
target) and the release's :func:`choose_components` / :func:`check_request` (kept here: the release
imports the builder). A builder only makes Get/List/Describe/Head calls (and STS GetCallerIdentity):
tests hold it to that.
"""

from __future__ import annotations

import contextlib
import json

from pydantic import JsonValue

from flows.common import EnvironmentChecks, check_environment
from flows.ecs_deploy import (
    EcsPlan,
    check_ecs_deploy,
    choose_revision,
    describe_live,
    describe_revision,
    image_version,
    name_of,
    watched_alarms,
)
from flows.frontend_deploy import ImagePlan, ServicePlan, check_apprunner_deploy, choose_image, live_of
from flows.lambda_deploy import Plan, artifact_conflict, check_lambda_deploy
from flows.plan.models import (
    ApprovalGate,
    ArtifactPlan,
    Check,
    ComponentBuild,
    DeployPlan,
    Increment,
    Live,
    OnFailure,
    ReleasePlan,
    RollbackPlan,
    ShiftPlan,
    Stage,
    Step,
    TargetRef,
)
from flows.rollback import choose_version
from opcd.aws import AwsTarget, target_for
from opcd.config import Config, SmokeCheck, deploy_command, where
from opcd.errors import InputError, VersionConflict
from opcd.locks import limit_name
from opcd.traffic import human_duration
from opcd.versions import check_git_sha, check_version
from tasks.apprunner import Service
from tasks.build import lambda_source_hash
from tasks.ecr import tag_digest
from tasks.ecs import LiveService
from tasks.eventbridge import aws_rule_name
from tasks.git import changed_paths, touches
from tasks.images import choose_builder, image_source_hash, image_tag
from tasks.lambda_functions import LiveVersion, version_description
from tasks.ledger import live_record
from tasks.s3_artifacts import artifact_key, read_artifact_metadata

_BUILD_ACTIONS = ("build", "reuse", "upload", "push")
_MADE = "made once by the release, before its first environment"


def target_ref(target: AwsTarget) -> TargetRef:
    """The target as a plan names it: no credentials, the account when STS already said it."""
    account = None
    with contextlib.suppress(Exception):  # guarded_target asked already (cached); else the plan says less
        account = target.identity().account
    return TargetRef(
        description=target.describe(), kind=target.kind, region=target.region, endpoint_url=target.endpoint_url,
        role_arn=target.role.arn if target.role else None, account=account,
    )  # fmt: skip


def _lambda_live(live: LiveVersion) -> Live:
    return Live(
        version=live.app_version, lambda_version=live.lambda_version, code_sha256=live.code_sha256 or None,
        weights=live.weights,
    )  # fmt: skip


def _environment_checks(
    checked: EnvironmentChecks, config: Config, environment: str, region: str | None = None
) -> list[Check]:
    """The checks :func:`flows.common.check_environment` made, of ``region`` (one of several; None: the first)."""
    env = config.environment(environment)
    try:  # guarded_target asked STS already (the answer is cached); without account_id it may not know
        who = checked.target.identity()
        matches = f", as environments.{environment}.account_id says" if env.account_id else ""
        account = f"{who.account} as {who.arn}{matches}"
    except Exception as exc:
        account = f"not known ({type(exc).__name__}); no account_id to compare"
    names = checked.alarms.names  # the region's names ({region} filled in)
    alarms = f"{', '.join(names)}: {checked.alarms.summary()}" if names else "none configured"
    return [
        Check(name="account", result=account),
        Check(name="alarms", result=alarms),
        Check(name="bucket", result=f"s3://{config.bucket_for(environment, region)} exists"),
    ]


def _health_step(config: Config, environment: str, url: str, target: AwsTarget, **more: JsonValue) -> Step:
    """The health check of ``url`` as the environment's ``health_check`` says; ``more`` inputs (expect_version)."""
    settings = config.environment(environment).health_check
    inputs: dict[str, JsonValue] = {
        "url": url, "resolved_url": target.resolve_url(url), "successes": settings.successes,
        "attempts": settings.attempts, "interval": settings.interval, "timeout": settings.timeout, **more,
    }  # fmt: skip
    return Step(action="health", text=f"health: {url} ({settings.successes} consecutive)", inputs=inputs)


def _smoke_step(checks: list[SmokeCheck], where: str, inputs: dict[str, JsonValue]) -> Step:
    """Smoke ``checks`` against ``where`` (the new version, a service's URL); ``inputs`` say where to the run."""
    listed = "; ".join(f"{s.method} {s.path} → {s.expect_status}" for s in checks)
    return Step(action="smoke", text=f"smoke {where}: {listed}",
                inputs={**inputs, "checks": [s.model_dump(mode="json") for s in checks]})  # fmt: skip


def _sample_step(config: Config, component: str, qualifier: str, what: str) -> Step:
    comp = config.lambda_component(component)
    assert comp.sample_event is not None
    event: JsonValue = json.loads((config.root / comp.sample_event).read_text())
    expect = json.dumps(comp.sample_expect, sort_keys=True) if comp.sample_expect else "no error"
    return Step(
        action="sample-event", text=f"invoke {what} with the sample event {comp.sample_event}; expect {expect}",
        inputs={"qualifier": qualifier, "file": comp.sample_event, "event": event, "expect": comp.sample_expect},
    )  # fmt: skip


def _rules_step(config: Config, component: str, environment: str, function: str, alias_arn: str) -> Step:
    rules = config.lambda_component(component).rules
    names = [aws_rule_name(config.project.name, environment, r.name) for r in rules]
    listed = ", ".join(f"{n} ({r.schedule or 'event pattern'})" for n, r in zip(names, rules, strict=True))
    text = f"EventBridge rules → {function}:live: {listed}" if rules else "EventBridge rules: none configured"
    return Step(
        action="rules", text=text + "; rules opcd made for it and no longer configured are removed",
        inputs={"function": function, "alias_arn": alias_arn, "rules": [r.model_dump(mode="json") for r in rules]},
    )  # fmt: skip


def _alarms_step(config: Config, environment: str, accepted: set[str], region: str | None = None) -> list[Step]:
    names = config.alarm_names(environment, region)
    if not names:
        return []
    held = f" (accepted as firing: {', '.join(sorted(accepted))})" if accepted else ""
    listed: list[JsonValue] = [name for name in names]
    kept: list[JsonValue] = [name for name in sorted(accepted)]
    return [Step(action="alarms", text=f"alarms: {', '.join(names)}{held}",
                 inputs={"names": listed, "accepted": kept})]  # fmt: skip


def _lock_steps(environment: str, component: str, what: str, region: str | None = None) -> list[Step]:
    lock = limit_name(environment, component, region)
    return [
        # In a release the release holds it, taken with the environment's others: the deploy takes nothing.
        Step(action="lock", text=f"take the lock {lock}", inputs={"lock": lock}),
        # Read again although the plan read it: another run may have moved it since, and the
        # rollback target must be what runs when the lock is held.
        Step(action="read-live", text=f"read {what} again under the lock: the rollback target", inputs={}),
    ]


def _record_step(outcome: str = "the outcome") -> Step:
    return Step(action="record", text=f"record {outcome}: ledger, the run's artifact, Slack", inputs={})


def _lambda_artifact(plan: Plan, version: str, release_build: ArtifactPlan | None) -> tuple[ArtifactPlan, list[Step]]:
    """The Lambda package: reused (same source) or built and uploaded; read from S3 unless the release builds it."""
    config, component = plan.config, plan.component
    comp = config.lambda_component(component)
    key = artifact_key(component, version)
    location = f"s3://{plan.bucket}/{key}"
    if release_build is not None:
        built = release_build.copy_from or release_build.location
        copy_from = built if built != location else None  # made in another region's bucket: copied here
        there = read_artifact_metadata.fn(plan.target, plan.bucket, component, version) if copy_from else None
        if there is not None:  # this region's bucket has the version already: refused now, or used as it is
            if there.get("source_hash") != release_build.source_hash:
                raise artifact_conflict(plan, version)
            artifact = ArtifactPlan(
                location=location, build=False, reason="built from the same source: reused, not copied",
                source_hash=release_build.source_hash, sha256=there.get("sha256"),
                code_sha256=there.get("code_sha256"), size=there.get("size"),
            )  # fmt: skip
            text = f"reuse {location} (same source, already there: not copied)"
            return artifact, [Step(action="reuse", text=text, inputs={"bucket": plan.bucket, "key": key})]
        artifact = release_build.model_copy(
            update={"location": location, "build": False, "reason": _MADE, "copy_from": copy_from}
        )
        copy = f"copy {built} to {location} (CopyObject), its sha256 checked"
        steps = [Step(action="copy", text=copy,
                      inputs={"from": built, "bucket": plan.bucket, "key": key})] if copy_from else []  # fmt: skip
        return artifact, [*steps, Step(action="reuse", text=f"use {location}, made by the release's build",
                                       inputs={"bucket": plan.bucket, "key": key})]  # fmt: skip
    hashed = lambda_source_hash(comp, config.source_dir(component))
    stored = read_artifact_metadata.fn(plan.target, plan.bucket, component, version)
    if stored is not None:
        if stored.get("source_hash") != hashed:
            raise artifact_conflict(plan, version)
        artifact = ArtifactPlan(
            location=location, build=False, reason="built from the same source: reused, not rebuilt",
            source_hash=hashed, sha256=stored.get("sha256"), code_sha256=stored.get("code_sha256"),
            size=stored.get("size"),
        )  # fmt: skip
        text = f"reuse {location} (same source, not rebuilt)"
        return artifact, [Step(action="reuse", text=text, inputs={"bucket": plan.bucket, "key": key})]
    days = config.project.artifact_retention_days
    artifact = ArtifactPlan(location=location, build=True, reason="not built yet", source_hash=hashed)
    return artifact, [
        Step(
            action="build",
            text=f"build {comp.source} for {comp.runtime} on {comp.architecture} ({comp.requirements})",
            inputs={
                "source": str(config.source_dir(component)),
                "runtime": comp.runtime,
                "architecture": comp.architecture,
                "requirements": comp.requirements,
            },
        ),  # fmt: skip
        Step(
            action="upload",
            text=f"check the bucket's retention rule ({days} days); upload {location} and its metadata",
            inputs={"bucket": plan.bucket, "key": key, "retention_days": days},
        ),  # fmt: skip
    ]


def _shift(config: Config, component: str, environment: str) -> tuple[ShiftPlan, str]:
    env, comp = config.environment(environment), config.lambda_component(component)
    strategy = env.strategy(component)
    if not strategy.gradual:
        return ShiftPlan(
            strategy=strategy.name, description=strategy.describe()
        ), "shift live → the new version (all at once)"
    guards = ["alarms"] * bool(env.alarms) + ["health"] * (component in env.health)
    guards += ["smoke on the new version"] * bool(env.bake.smoke and comp.smoke)
    guards += ["canary analysis (new vs old version on CloudWatch)"] * bool(env.bake.analysis)
    shift = ShiftPlan(
        strategy=strategy.name, description=strategy.describe(), poll_interval=env.bake.poll_interval,
        increments=tuple(Increment(percent=s.percent, bake_seconds=s.bake) for s in strategy.steps()),
        guards=tuple(guards),
    )  # fmt: skip
    text = (
        f"shift live by {strategy.describe()}; every {human_duration(env.bake.poll_interval)} check"
        f" {', '.join(guards) or 'nothing (no guards configured)'}"
    )
    return shift, text


def _lambda_deploy(
    plan: Plan, version: str, checked: EnvironmentChecks, release_build: ArtifactPlan | None
) -> DeployPlan:
    config, component, environment = plan.config, plan.component, plan.environment
    assert plan.live is not None  # read by the check
    live, function = plan.live, plan.function
    comp, env = config.lambda_component(component), config.environment(environment)
    artifact, steps = _lambda_artifact(plan, version, release_build)
    steps += _lock_steps(environment, component, f"{function}:live", plan.region)
    notes: list[str] = []
    if live.weights:
        split = ", ".join(f"{w * 100:g}% on version {v}" for v, w in live.weights.items())
        notes.append(f"live is split: {split}, the rest on version {live.lambda_version}")
        steps.append(Step(
            action="repair-split", text=f"repair: live is split ({split}); move all traffic back to"
            f" Lambda version {live.lambda_version} first", inputs={"function": function, "to": live.lambda_version},
        ))  # fmt: skip
    noop = bool(
        live.app_version == version and artifact.code_sha256 and live.code_sha256 == artifact.code_sha256
        and not live.weights
    )  # fmt: skip
    rules = _rules_step(config, component, environment, function, live.alias_arn)
    shift, shift_text = _shift(config, component, environment)
    if noop:  # rules are configuration: still applied
        steps += [rules, _record_step("'noop' (already live)")]
    else:
        key = artifact_key(component, version)
        description = version_description(component, version, artifact.sha256) if artifact.sha256 else None
        steps += [
            Step(action="update-code", text=f"update {function}'s code from {artifact.location}, verify its CodeSha256",
                 inputs={"function": function, "bucket": plan.bucket, "key": key, "code_sha256": artifact.code_sha256}),
            Step(action="publish", text=f"publish a Lambda version described 'opcd {component} {version} sha256=…'",
                 inputs={"function": function, "description": description}),
        ]  # fmt: skip
        if comp.migrations and config.migrates(environment, plan.region):
            secret = config.database_secret(environment, plan.region)
            steps.append(Step(
                action="migrations", text=f"migrations: {comp.migrations.command} (database URL from the secret"
                f" {secret}, at most {human_duration(comp.migrations.timeout)})",
                inputs={"command": comp.migrations.command, "secret": secret,
                        "timeout": comp.migrations.timeout, "runtime": comp.runtime},
            ))  # fmt: skip
        elif comp.migrations:
            notes.append(
                f"migrations: not here: {environment}'s regions share one database (database_secret"
                f" {env.database_secret} names no {{region}}), migrated by {config.regions(environment)[0]}'s deploy,"
                " which must run this version first"
            )
        if comp.smoke:
            steps.append(_smoke_step(comp.smoke, "the new version", {"qualifier": "new"}))
        if comp.sample_event:
            steps.append(_sample_step(config, component, "new", "the new version"))
        steps += [
            rules,
            Step(action="record-shifting", text=f"ledger: 'shifting' from Lambda version {live.lambda_version}"
                 " (the rollback target, kept if the run dies)", inputs={"from": live.lambda_version}),
            Step(action="shift", text=shift_text, inputs={"function": function, "from": live.lambda_version,
                                                           "strategy": shift.strategy}),
        ]  # fmt: skip
        if (public := plan.health_url()) is not None:
            steps.append(_health_step(config, environment, public, plan.target, expect_version=version))
        if comp.sample_event:
            steps.append(_sample_step(config, component, "live", "live"))
        steps += _alarms_step(config, environment, plan.alarms.accepted, plan.region)
        verified = ", ".join(["the alias", *["health"] * bool(env.health.get(component)),
                              *["the sample event"] * bool(comp.sample_event)])  # fmt: skip
        steps += [
            Step(action="on-failure", text="on failure after the shift: roll live back to"
                 f" {_lambda_live(live).describe()} automatically; verify {verified}",
                 inputs={"function": function, "to": live.lambda_version}),
            _record_step(),
        ]  # fmt: skip
    checks = [
        Check(name="version", result=f"{version} is a version"),
        *_environment_checks(checked, config, environment, plan.region),
        Check(name="function", result=f"{function}:live exists, on Lambda version {live.lambda_version}"),
        Check(name="artifact", result=f"{artifact.location}: {artifact.reason}"),
    ]
    return DeployPlan(
        kind="lambda", component=component, environment=environment, region=plan.region, version=version,
        resource=function,
        resource_id=function, target=target_ref(plan.target), live=_lambda_live(live), rollback_to=_lambda_live(live),
        artifact=artifact, shift=shift, alarms=tuple(plan.alarms.names),
        accepted_alarms=tuple(sorted(plan.alarms.accepted)), noop=noop, steps=tuple(steps), checks=tuple(checks),
        notes=tuple(notes),
    )  # fmt: skip


def _service_live(plan: ServicePlan, service: Service) -> Live:
    version, digest = live_of(plan, service)
    return Live(version=version, image=service.image, digest=digest, status=service.status)


def _image_artifact(
    plan: ImagePlan, version: str, release_build: ArtifactPlan | None, notes: list[str]
) -> tuple[ArtifactPlan, list[Step]]:
    """The image: reused (pushed from the same source, digest unchanged) or built and pushed."""
    config, component, repository = plan.config, plan.component, plan.repository
    comp = config.image_component(component)
    tag = image_tag(version)
    identifier = repository.identifier(tag)
    if release_build is not None:
        built = release_build.copy_from or release_build.location
        copy_from = built if built != identifier else None  # pushed to another region's repository: copied here
        there = tag_digest(plan.target, repository.name, tag) if copy_from else None
        if there is not None and there != release_build.digest and release_build.digest:
            raise VersionConflict(  # refused before any change, not when the copy comes after region 1 moved
                f"{identifier} already exists in ECR as {there}; the release's image is {release_build.digest}",
                "a version names one image: pick a new version for changed source",
            )
        if there is not None and there == release_build.digest:  # this region has the image already: not copied
            artifact = release_build.model_copy(
                update={
                    "location": identifier,
                    "build": False,
                    "copy_from": None,
                    "reason": "the release's image, already here: not copied",
                }
            )
            return artifact, [Step(action="reuse", text=f"reuse {identifier} ({there}, already here: not copied)",
                                   inputs={"image": identifier})]  # fmt: skip
        artifact = release_build.model_copy(
            update={"location": identifier, "build": False, "reason": _MADE, "copy_from": copy_from}
        )
        copy = Step(action="copy", text=f"copy {built} to {identifier} (registry to registry, digests preserved),"
                    " ECR here checked for its digest", inputs={"from": built, "image": identifier})  # fmt: skip
        steps = [copy] if copy_from else []
        return artifact, [*steps, Step(action="reuse", text=f"use {identifier}, pushed by the release's build",
                                       inputs={"image": identifier})]  # fmt: skip
    hashed = image_source_hash(comp, config.source_dir(component))
    stored = read_artifact_metadata.fn(plan.target, plan.bucket, component, version)
    in_ecr = tag_digest(plan.target, repository.name, tag)
    if stored and stored.get("source_hash") == hashed and in_ecr and stored.get("image_digest") == in_ecr:
        artifact = ArtifactPlan(
            location=identifier, build=False, reason="pushed from the same source: reused, not rebuilt",
            source_hash=hashed, digest=in_ecr,
        )  # fmt: skip
        return artifact, [Step(action="reuse", text=f"reuse {identifier} ({in_ecr})", inputs={"image": identifier})]
    try:
        builder = choose_builder(comp.builder)
    except InputError as exc:  # the run fails at its build step unless its worker has one
        builder = "none found here"
        notes.append(f"no container builder here: {exc.message}")
    reason = (
        f"in ECR as {in_ecr}, not from this source: the push refuses unless the build has that digest"
        if in_ecr
        else "not in ECR"
    )
    artifact = ArtifactPlan(location=identifier, build=True, reason=reason, source_hash=hashed, digest=in_ecr)
    return artifact, [
        Step(action="build", text=f"build {comp.source}/{comp.dockerfile} with {builder} (reproducible: same source,"
             " same digest)", inputs={"source": str(config.source_dir(component)), "dockerfile": comp.dockerfile,
                                      "build_contexts": dict(comp.build_contexts), "builder": builder}),
        Step(action="push", text=f"push {identifier} and move :latest; keep its metadata in s3://{plan.bucket}",
             inputs={"image": identifier, "repository": repository.name, "bucket": plan.bucket}),
    ]  # fmt: skip


def _service_steps(plan: ServicePlan, service: Service, identifier: str) -> list[Step]:
    """UpdateService, follow it, check the service; on failure point it back at the image it runs now."""
    config, component, environment = plan.config, plan.component, plan.environment
    comp, env = config.apprunner_component(component), config.environment(environment)
    timeout, poll = comp.operation.timeout, comp.operation.poll_interval
    public = env.health.get(component) or f"{service.https_url}/"
    steps = [
        Step(action="update-service", text=f"UpdateService {service.name} → {identifier}",
             inputs={"service_arn": plan.service_arn, "image": identifier}),
        Step(action="follow-operation", text=f"follow the operation (every {human_duration(poll)},"
             f" at most {human_duration(timeout)})", inputs={"poll_interval": poll, "timeout": timeout}),
        Step(action="verify-image", text=f"{service.name} reports {identifier}", inputs={"image": identifier}),
        _health_step(config, environment, public, plan.target),
    ]  # fmt: skip
    if comp.smoke:
        steps.append(_smoke_step(comp.smoke, service.https_url, {"base_url": service.https_url}))
    steps += _alarms_step(config, environment, plan.alarms.accepted)
    steps += [
        Step(action="on-failure", text=f"on failure after it went live: point {service.name} back at {service.image},"
             " follow it, check its health", inputs={"image": service.image}),
        _record_step(),
    ]  # fmt: skip
    return steps


def _apprunner_deploy(
    plan: ServicePlan, version: str, checked: EnvironmentChecks, release_build: ArtifactPlan | None
) -> DeployPlan:
    config, component, environment = plan.config, plan.component, plan.environment
    assert plan.service is not None  # described by the check
    service = plan.service
    notes: list[str] = []
    artifact, steps = _image_artifact(plan, version, release_build, notes)
    identifier = artifact.location
    steps += _lock_steps(environment, component, f"{service.name}'s image")
    noop = service.image == identifier
    if noop:
        steps.append(_record_step("'noop' (already live)"))
    else:
        steps.append(Step(action="record-shifting", text=f"ledger: 'shifting' from {service.image} (the rollback"
                          " target, kept if the run dies)", inputs={"from": service.image}))  # fmt: skip
        steps += _service_steps(plan, service, identifier)
    live = _service_live(plan, service)
    checks = [
        Check(name="version", result=f"{version} is a version"),
        *_environment_checks(checked, config, environment),
        Check(name="service", result=f"{service.name} is {service.status}, runs {service.image}"),
        Check(name="repository", result=f"ECR repository {plan.repository.name} exists ({plan.repository.uri})"),
        Check(name="artifact", result=f"{artifact.location}: {artifact.reason}"),
    ]
    return DeployPlan(
        kind="apprunner", component=component, environment=environment, version=version, resource=service.name,
        resource_id=plan.service_arn, target=target_ref(plan.target), live=live, rollback_to=live, artifact=artifact,
        shift=ShiftPlan(strategy="app-runner", description="App Runner's own rolling deployment"),
        alarms=tuple(plan.alarms.names), accepted_alarms=tuple(sorted(plan.alarms.accepted)), noop=noop,
        steps=tuple(steps), checks=tuple(checks), notes=tuple(notes),
    )  # fmt: skip


def _ecs_live(plan: EcsPlan, live: LiveService) -> Live:
    version, digest = image_version(plan.target, plan.repository, live.image)
    return Live(
        version=version, image=live.image, digest=digest, task_definition=live.task_definition,
        status=f"{live.running}/{live.desired} tasks running",
    )  # fmt: skip


def _ecs_how(plan: EcsPlan) -> str:
    settings = plan.settings
    if settings.strategy == "blue-green":
        return f"blue-green (ECS's native blue/green, bake {settings.bake_minutes} min)"
    watched = watched_alarms(settings, plan.config.alarm_names(plan.environment, plan.region))
    alarms = f", alarms {', '.join(watched)}" if watched else ""
    return f"rolling (the deployment circuit breaker{alarms}, rollback on)"


def _ecs_service_steps(plan: EcsPlan, live: LiveService, revision: str, image: str) -> list[Step]:
    """UpdateService to ``revision``, follow ECS's deployment, check it; on failure the previous revision back."""
    config, component, environment = plan.config, plan.component, plan.environment
    comp = config.ecs_component(component)
    timeout, poll = comp.operation.timeout, comp.operation.poll_interval
    settings = plan.settings
    steps = [
        Step(action="update-service", text=f"UpdateService {settings.cluster}/{live.service} → {revision}:"
             f" {_ecs_how(plan)}", inputs={"cluster": settings.cluster, "service": live.service,
                                            "task_definition": revision, "strategy": settings.strategy,
                                            "alarms": list(watched_alarms(settings, plan.alarms.names))}),
        Step(action="follow-operation", text=f"follow the service deployment (every {human_duration(poll)},"
             f" at most {human_duration(timeout)})", inputs={"poll_interval": poll, "timeout": timeout}),
        Step(action="verify-revision", text=f"{live.service} runs {revision}", inputs={"task_definition": revision}),
        _health_step(config, environment, plan.health, plan.target),
    ]  # fmt: skip
    if comp.smoke:
        steps.append(_smoke_step(comp.smoke, plan.base_url, {"base_url": plan.base_url}))
    steps += _alarms_step(config, environment, plan.alarms.accepted, plan.region)
    steps += [
        Step(action="on-failure", text=f"on failure after it went live: back to {name_of(live.task_definition)}"
             f" ({live.image}), followed, health-checked",
             inputs={"task_definition": live.task_definition}),
        _record_step(),
    ]  # fmt: skip
    return steps


def _ecs_deploy(
    plan: EcsPlan, version: str, checked: EnvironmentChecks, release_build: ArtifactPlan | None
) -> DeployPlan:
    config, component, environment = plan.config, plan.component, plan.environment
    assert plan.live is not None  # described by the check
    live, settings = plan.live, plan.settings
    notes: list[str] = []
    artifact, steps = _image_artifact(plan, version, release_build, notes)
    steps += _lock_steps(environment, component, f"{live.service}'s task definition revision", plan.region)
    # The image goes in by its digest, never its tag: known now when ECR has it, else after the push.
    image = f"{plan.repository.uri}@{artifact.digest}" if artifact.digest else f"{plan.repository.uri}@<digest>"
    noop = bool(artifact.digest) and live.image == image
    if noop:
        steps.append(_record_step("'noop' (already live)"))
    else:
        revision = f"a new revision of {live.family}"
        steps += [
            Step(action="register-revision", text=f"register {revision} with container {plan.container} on {image}",
                 inputs={"family": live.family, "container": plan.container, "image": image}),
            Step(action="record-shifting", text=f"ledger: 'shifting' from {name_of(live.task_definition)} (the"
                 " rollback target, kept if the run dies)", inputs={"from": live.task_definition}),
            *_ecs_service_steps(plan, live, revision, image),
        ]  # fmt: skip
    now = _ecs_live(plan, live)
    checks = [
        Check(name="version", result=f"{version} is a version"),
        *_environment_checks(checked, config, environment, plan.region),
        Check(name="service", result=f"{settings.cluster}/{live.service} runs {describe_live(plan, live)},"
              f" {live.running}/{live.desired} tasks"),
        Check(name="repository", result=f"ECR repository {plan.repository.name} exists ({plan.repository.uri})"),
        Check(name="artifact", result=f"{artifact.location}: {artifact.reason}"),
    ]  # fmt: skip
    return DeployPlan(
        kind="ecs", component=component, environment=environment, region=plan.region, version=version,
        resource=live.service, resource_id=live.arn, target=target_ref(plan.target), live=now, rollback_to=now,
        artifact=artifact, shift=ShiftPlan(strategy=f"ecs-{settings.strategy}", description=_ecs_how(plan)),
        alarms=tuple(config.alarm_names(environment, plan.region)), accepted_alarms=tuple(sorted(plan.alarms.accepted)),
        noop=noop, steps=tuple(steps), checks=tuple(checks), notes=tuple(notes),
    )  # fmt: skip


def _ecs_rollback(
    config: Config, component: str, environment: str, to_version: str | None, force: bool, region: str | None = None
) -> RollbackPlan:
    checked = check_environment(config, environment, accept_firing=True, region=region)
    plan = check_ecs_deploy(config, component, environment, None, accept_firing=True, checked=checked, region=region)
    assert plan.live is not None
    live = plan.live
    revision, image, version = choose_revision(plan, live, to_version, force, register=False)
    digest = image.partition("@")[2] if image and "@" in image else None
    to = Live(version=version, image=image, digest=digest, task_definition=revision or None)
    noop = revision == live.task_definition
    steps = _lock_steps(environment, component, f"{live.service}'s revision (and choose the target again)", plan.region)
    if noop:
        steps.append(_record_step("'noop' (already live)"))
    else:
        shown = revision or f"a new revision of {live.family}"
        if not revision:  # --force to an image no revision ran: the rollback registers one
            steps.append(Step(action="register-revision", text=f"register {shown} with container {plan.container}"
                              f" on {image}", inputs={"family": live.family, "container": plan.container,
                                                      "image": image}))  # fmt: skip
        steps += _ecs_service_steps(plan, live, shown, image or "")
    checks = [
        *_environment_checks(checked, config, environment, plan.region),
        Check(name="service", result=f"{plan.settings.cluster}/{live.service} runs {describe_live(plan, live)}"),
        Check(name="target", result=(describe_revision(plan, revision, image) if revision else f"{image}")
              + (": --force" if force else ": seen live")),
    ]  # fmt: skip
    return RollbackPlan(
        kind="ecs", component=component, environment=environment, region=plan.region, resource=live.service,
        resource_id=live.arn,
        target=target_ref(plan.target), live=_ecs_live(plan, live), to=to, force=force, noop=noop,
        steps=tuple(steps), checks=tuple(checks),
    )  # fmt: skip


def build_deploy_plan(
    config: Config,
    component: str,
    environment: str,
    version: str,
    accept_alarms: list[str] | None = None,
    *,
    accept_firing: bool = False,
    checked: EnvironmentChecks | None = None,
    release_build: ArtifactPlan | None = None,
    region: str | None = None,
) -> DeployPlan:
    """The plan of ``opcd deploy``; InputError (nothing changed) when it cannot run.

    ``checked``: the environment's checks, made once for all its components (a release);
    ``release_build``: the artifact the release builds before its first environment (not read again).
    """
    check_version(version)
    kind = config.component(component).kind
    config.environment(environment)
    checked = checked or check_environment(config, environment, accept_alarms, accept_firing, region)
    request = (config, component, environment, version, accept_alarms, accept_firing, checked)
    if kind == "lambda":
        return _lambda_deploy(check_lambda_deploy(*request, region=region), version, checked, release_build)
    if kind == "ecs":
        return _ecs_deploy(check_ecs_deploy(*request, region=region), version, checked, release_build)
    return _apprunner_deploy(check_apprunner_deploy(*request), version, checked, release_build)


def build_rollback_plan(
    config: Config,
    component: str,
    environment: str,
    to_version: str | None = None,
    to_lambda_version: str | None = None,
    force: bool = False,
    region: str | None = None,
) -> RollbackPlan:
    """The plan of ``opcd rollback``: where live goes (the ledger's previous, or ``--to``), checked; in ``region``
    (one of the environment's; None: its first).

    An alarm firing now does not block a rollback (it is how incidents get fixed).
    """
    if to_version is not None and to_lambda_version is not None:
        raise InputError("give --to or --to-lambda-version, not both")
    comp = config.component(component)
    if comp.kind in ("apprunner", "ecs"):
        if to_lambda_version is not None:
            what = "an App Runner service" if comp.kind == "apprunner" else "an ECS service"
            raise InputError(f"{component} is {what}: it has no Lambda versions", "use --to VERSION")
        if comp.kind == "ecs":
            return _ecs_rollback(config, component, environment, to_version, force, region)
        return _apprunner_rollback(config, component, environment, to_version, force)
    comp = config.lambda_component(component)
    checked = check_environment(config, environment, accept_firing=True, region=region)
    plan = check_lambda_deploy(
        config, component, environment, to_version, accept_firing=True, checked=checked, region=region
    )
    assert plan.live is not None
    live, function = plan.live, plan.function
    number, app = choose_version(plan, live, to_version, to_lambda_version, force)
    to = Live(version=app, lambda_version=number)
    noop = number == live.lambda_version and not live.weights
    steps = _lock_steps(environment, component, f"{function}:live (and choose the target again)", plan.region)
    if noop:
        steps.append(_record_step("'noop' (already live)"))
    else:
        steps.append(Step(action="shift", text=f"shift live → Lambda version {number} ({app}) (all at once)",
                          inputs={"function": function, "from": live.lambda_version, "to": number,
                                  "strategy": "all-at-once"}))  # fmt: skip
        if (public := plan.health_url()) is not None:
            steps.append(_health_step(config, environment, public, plan.target, expect_version=app))
        if comp.sample_event:
            steps.append(_sample_step(config, component, "live", "live"))
        steps += _alarms_step(config, environment, plan.alarms.accepted, plan.region)
        steps += [
            Step(action="on-failure", text=f"on failure: move live back to {_lambda_live(live).describe()}, verify",
                 inputs={"function": function, "to": live.lambda_version}),
            _record_step(),
        ]  # fmt: skip
    checks = [
        *_environment_checks(checked, config, environment, plan.region),
        Check(name="function", result=f"{function}:live exists, on Lambda version {live.lambda_version}"),
        Check(name="target", result=f"Lambda version {number} ({app})" + (": --force" if force else ": seen live")),
    ]
    return RollbackPlan(
        kind="lambda", component=component, environment=environment, region=plan.region, resource=function,
        resource_id=function,
        target=target_ref(plan.target), live=_lambda_live(live), to=to, force=force, noop=noop, steps=tuple(steps),
        checks=tuple(checks),
    )  # fmt: skip


def _apprunner_rollback(
    config: Config, component: str, environment: str, to_version: str | None, force: bool
) -> RollbackPlan:
    checked = check_environment(config, environment, accept_firing=True)
    plan = check_apprunner_deploy(config, component, environment, to_version, accept_firing=True, checked=checked)
    assert plan.service is not None
    service = plan.service
    identifier, version = choose_image(plan, service, to_version, force)
    tag = plan.repository.tag_of(identifier)
    to = Live(version=version, image=identifier,
              digest=tag_digest(plan.target, plan.repository.name, tag) if tag else None)  # fmt: skip
    noop = identifier == service.image
    steps = _lock_steps(environment, component, f"{service.name}'s image (and choose the target again)")
    steps += [_record_step("'noop' (already live)")] if noop else _service_steps(plan, service, identifier)
    checks = [
        *_environment_checks(checked, config, environment),
        Check(name="service", result=f"{service.name} is {service.status}, runs {service.image}"),
        Check(name="target", result=f"{identifier}" + (": --force" if force else ": seen live")),
    ]
    return RollbackPlan(
        kind="apprunner", component=component, environment=environment, resource=service.name,
        resource_id=plan.service_arn, target=target_ref(plan.target), live=_service_live(plan, service), to=to,
        force=force, noop=noop, steps=tuple(steps), checks=tuple(checks),
    )  # fmt: skip


def _from_release(plan: DeployPlan) -> DeployPlan:
    """``plan`` with its build steps replaced by the release's build (made once, before the first environment)."""
    what = "pushed" if plan.kind == "apprunner" else "made"
    used = Step(action="reuse", text=f"use {plan.artifact.location}, {what} by the release's build", inputs={})
    steps = (used, *(s for s in plan.steps if s.action not in _BUILD_ACTIONS))
    artifact = plan.artifact.model_copy(update={"build": False, "reason": _MADE})
    return plan.model_copy(update={"steps": steps, "artifact": artifact})


def choose_components(
    config: Config, target: AwsTarget, requested: list[str] | None, git_sha: str | None, last_env: str
) -> tuple[list[str], str]:
    """(components, why): those asked for; else those changed since ``last_env``'s live commit."""
    if requested:
        for name in requested:
            config.component(name)
        return list(dict.fromkeys(requested)), "as asked"
    everything = list(config.components)
    if not git_sha:
        return everything, "all components: no commit given to compare"
    chosen, notes = [], []
    keys = config.region_keys(last_env)  # several regions: each (one may run another commit: --region deploys)
    targets = {key: target if key == config.region_key(last_env) else target_for(config, last_env, key) for key in keys}
    for name in everything:
        bases = list(dict.fromkeys(  # each region's live commit, in region order, once each
            (live.git_sha if live else None)
            for key in keys
            for live in [live_record(config, last_env, name, key, targets[key])]
        ))  # fmt: skip
        changed = [changed_paths(config.root, str(base), git_sha) if base else None for base in bases]
        since = ", ".join(str(base)[:12] for base in bases)
        if any(paths is None for paths in changed):
            chosen.append(name)
            notes.append(f"{name}: live commit in {last_env} unknown")
        elif any(touches(paths, config.source_dir(name)) for paths in changed if paths is not None):
            chosen.append(name)
            notes.append(f"{name}: changed since {since}")
        else:
            notes.append(f"{name}: unchanged since {since}, skipped")
    return chosen, "; ".join(notes)


def check_request(
    config: Config, version: str, git_sha: str | None, components: list[str], requested: list[str]
) -> list[str]:
    """The environments to release to, in opcd.toml's order; InputError for a request that skips a step.

    Leaving out an earlier environment (``--env prod`` alone) promotes what it already runs: each
    component's ``version`` must be live there (its ledger read as that environment's role), or the
    release is refused.
    """
    check_version(version)
    if git_sha is not None:
        check_git_sha(git_sha)
    everything = list(config.environments)
    chosen = config.ordered_environments(requested)
    for skipped in everything[: everything.index(chosen[-1])]:
        if skipped in chosen:
            continue
        for region in config.region_keys(skipped):  # several regions: in each of them
            target = target_for(config, skipped, region)
            for component in components:
                live = live_record(config, skipped, component, region, target)
                if live is None or live.version != version:
                    raise InputError(
                        f"{component} {version} is not live in {where(skipped, region)}, which comes before"
                        f" {chosen[-1]}",
                        f"release to {skipped} too (leave out --env), or deploy it there first"
                        f" ({deploy_command(component, skipped, version, region)})",
                    )
    return chosen


def build_release_plan(
    config: Config,
    version: str,
    git_sha: str | None = None,
    components: list[str] | None = None,
    environments: list[str] | None = None,
    on_failure: OnFailure = "rollback-all",
) -> ReleasePlan:
    """The plan of ``opcd release``: components, builds, then each environment's approval and deploys.

    Firing alarms do not stop the plan (they may clear before an environment's turn); each deploy
    reads them again when it starts, and refuses then.
    """
    check_version(version)
    if git_sha is not None:
        check_git_sha(git_sha)
    envs = config.ordered_environments(environments)
    chosen, why = choose_components(config, target_for(config, envs[-1]), components, git_sha, envs[-1])
    envs = check_request(config, version, git_sha, chosen, envs)
    if not chosen:
        return ReleasePlan(version=version, git_sha=git_sha, components=(), why=why, on_failure=on_failure)
    stages: list[Stage] = []
    builds: dict[str, ComponentBuild] = {}
    for environment in envs:
        deploys = []
        keys = config.region_keys(environment)  # [None]: one region
        for region in keys:  # several: each region's deploys, in order
            checked = check_environment(config, environment, accept_firing=True, region=region)
            for component in chosen:
                made = builds.get(component)
                plan = build_deploy_plan(
                    config, component, environment, version, accept_firing=True, checked=checked,
                    release_build=made.artifact if made else None, region=region,
                )  # fmt: skip
                # Accepted here only to plan past an alarm that may clear before its environment's turn: the
                # deploy reads the alarms again when it starts, and refuses then (no alarm accepted by name).
                plan = plan.model_copy(update={"accepted_alarms": ()})
                if made is None:  # the first environment (its first region): the release builds there, once
                    steps = tuple(s for s in plan.steps if s.action in _BUILD_ACTIONS)
                    builds[component] = ComponentBuild(component=component, artifact=plan.artifact, steps=steps)
                    plan = _from_release(plan)
                deploys.append(plan)
        approval = config.environment(environment).approval
        gate = (
            ApprovalGate(approvers=tuple(approval.approvers), timeout=approval.timeout, verify=approval.verify)
            if approval
            else None
        )
        first = environment == next(iter(config.environments))
        tested = tuple(c for c in chosen if first and config.component(c).load_test)
        several = tuple(k for k in keys if k)
        stages.append(
            Stage(environment=environment, approval=gate, regions=several, deploys=tuple(deploys), load_tests=tested)
        )
    return ReleasePlan(
        version=version, git_sha=git_sha, components=tuple(chosen), why=why, builds=tuple(builds.values()),
        stages=tuple(stages), on_failure=on_failure,
    )  # fmt: skip
