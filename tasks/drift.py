"""Live-state drift: what runs in AWS against what opcd's ledger and opcd.toml say should run.

One task per system read, each returning findings (no finding: that part matches):

- Lambda: the ``live`` alias points at the version the ledger's ``live.json`` names, carries no
  leftover canary/linear weights, and no deploy stopped half-way (``latest.json`` says shifting);
- EventBridge: each configured rule of a deployed component exists and targets only ``live``;
- App Runner: the service runs the image the ledger recorded;
- ECS: the service runs the task definition revision the ledger recorded, no deployment is left
  half-way, every desired task runs;
- CloudWatch: every configured alarm exists;
- S3: the artifact bucket keeps its retention rule for each component.

A component opcd never deployed to an environment (no ``live.json``) has no recorded version to
compare: only what needs no record (weights, alarms, the bucket) is checked for it.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd.aws import AwsTarget, error_code
from opcd.config import Config, LambdaComponent, where
from opcd.errors import ResourceMissing
from opcd.outcomes import Outcome
from tasks.apprunner import find_service, read_service
from tasks.cloudwatch import describe_alarms
from tasks.ecs import describe_service
from tasks.eventbridge import TARGET_ID, aws_rule_name
from tasks.lambda_functions import ALIAS, read_live
from tasks.ledger import Record, read_latest
from tasks.s3_artifacts import lifecycle_rules, retention_problem
from tasks.terraform import workspace


@dataclass(frozen=True)
class Drift:
    environment: str
    resource: str  # what drifted: a function's alias, a rule, a service, an alarm, the bucket
    problem: str  # what is wrong, in one line
    fix: str  # how to put it right
    source: str = "live"  # live (against the ledger and opcd.toml) | terraform (against the configuration)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _live_record(
    config: Config, target: AwsTarget, environment: str, component: str, region: str | None = None
) -> Record | None:
    bucket = config.bucket_for(environment, region)
    return read_latest(target, bucket, environment, component, "live.json", config.region_key(environment, region))


def _half_done(environment: str, resource: str, component: str, latest: Record, doing: str) -> Drift:
    """``environment``: as a finding names it (``prod us-west-2`` in an environment of several regions)."""
    run = latest.flow_run_name or latest.flow_run_id or "unknown"
    return Drift(
        environment, resource, f"a deploy of {latest.version} stopped while {doing} (run {run})",
        f"check `opcd status --env {environment.partition(' ')[0]}`, then deploy or roll back {component}",
    )  # fmt: skip


@task(name="check-lambda-aliases", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def check_lambda_aliases(config: Config, target: AwsTarget, environment: str, region: str | None = None) -> list[Drift]:
    """Each function's ``live`` alias against the ledger (``region``: one of the environment's several)."""
    findings = []
    bucket, key = config.bucket_for(environment, region), config.region_key(environment, region)
    place = where(environment, key)  # what the findings name
    in_region = f" --region {key}" if key else ""  # a hint's command acts on this region alone
    for component in config.environment(environment).functions:
        function = config.function_name(component, environment, region)
        resource = f"{function}:live"
        try:
            live = read_live(target, function)
        except ResourceMissing as exc:
            findings.append(Drift(place, resource, exc.message, exc.hint or "create it (Terraform)"))
            continue
        if live.weights:
            split = ", ".join(f"version {v} {w:.0%}" for v, w in sorted(live.weights.items()))
            findings.append(Drift(
                place, resource, f"carries leftover weights ({split}) beside version {live.lambda_version}",
                f"finish or undo the shift: opcd promote / opcd abort {component} --env {environment}{in_region}",
            ))  # fmt: skip
        record = _live_record(config, target, environment, component, region)
        if record and record.live_lambda_version and record.live_lambda_version != live.lambda_version:
            findings.append(Drift(
                place, resource,
                f"points at version {live.lambda_version} ({live.app_version or 'not deployed by opcd'}); the ledger"
                f" says {record.live_lambda_version} ({record.live_version})",
                f"opcd rollback {component} --env {environment}{in_region} --to-lambda-version"
                f" {record.live_lambda_version} (or deploy again)",
            ))  # fmt: skip
        latest = read_latest(target, bucket, environment, component, region=key)
        if latest and latest.outcome is Outcome.SHIFTING:
            findings.append(_half_done(place, resource, component, latest, "shifting traffic"))
    return findings


@task(name="check-event-rules", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def check_event_rules(config: Config, target: AwsTarget, environment: str, region: str | None = None) -> list[Drift]:
    findings = []
    events, lam = target.client("events"), target.client("lambda")
    env = config.environment(environment)
    place = where(environment, config.region_key(environment, region))
    for component, comp in config.components.items():
        if (
            not isinstance(comp, LambdaComponent)
            or not comp.rules
            or component not in env.functions
            or not _live_record(config, target, environment, component, region)
        ):
            continue
        function = config.function_name(component, environment, region)
        alias_arn = lam.get_alias(FunctionName=function, Name=ALIAS)["AliasArn"]
        fix = f"deploy {component} to {environment} again: opcd puts its rules back on live"
        for rule in comp.rules:
            name = aws_rule_name(config.project.name, environment, rule.name)
            try:
                info = events.describe_rule(Name=name)
                targets = events.list_targets_by_rule(Rule=name)["Targets"]
            except Exception as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                findings.append(Drift(place, f"rule {name}", "does not exist", fix))
                continue
            if info.get("State") != ("ENABLED" if rule.enabled else "DISABLED"):
                findings.append(Drift(place, f"rule {name}", f"is {info.get('State')}", fix))
            wrong = [t["Arn"] for t in targets if t["Arn"] != alias_arn]
            if wrong:
                findings.append(Drift(
                    place, f"rule {name}", f"targets {', '.join(wrong)} instead of {function}:live", fix
                ))  # fmt: skip
            elif not any(t.get("Id") == TARGET_ID for t in targets):
                findings.append(Drift(place, f"rule {name}", f"has no target on {function}:live", fix))
    return findings


@task(name="check-apprunner-services", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def check_apprunner_services(config: Config, target: AwsTarget, environment: str) -> list[Drift]:
    findings = []
    for component, ref in config.environment(environment).services.items():
        try:
            service = read_service(target, find_service(target, ref))
        except ResourceMissing as exc:
            findings.append(Drift(environment, f"service {ref}", exc.message, exc.hint or "create it (Terraform)"))
            continue
        record = _live_record(config, target, environment, component)
        if record and record.live_image and record.live_image != service.image:
            findings.append(Drift(
                environment, f"service {service.name}",
                f"runs {service.image}; the ledger says {record.live_image} ({record.live_version})",
                f"opcd rollback {component} --env {environment} --to {record.live_version} (or deploy again)",
            ))  # fmt: skip
        latest = read_latest(target, config.project.artifact_bucket, environment, component)
        if latest and latest.outcome is Outcome.SHIFTING:
            findings.append(_half_done(environment, f"service {service.name}", component, latest, "moving the service"))
        if service.status != "RUNNING":
            findings.append(Drift(environment, f"service {service.name}", f"is {service.status}", "see App Runner"))
    return findings


@task(name="check-ecs-services", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def check_ecs_services(config: Config, target: AwsTarget, environment: str, region: str | None = None) -> list[Drift]:
    """What :func:`check_apprunner_services` compares for App Runner, for each ECS service: its revision
    (``region``: one of the environment's several)."""
    findings = []
    bucket, key = config.bucket_for(environment, region), config.region_key(environment, region)
    place = where(environment, key)  # what the findings name
    in_region = f" --region {key}" if key else ""  # a hint's command acts on this region alone
    for component in config.environment(environment).ecs:
        settings = config.ecs_service(component, environment, region)
        resource = f"ECS service {settings.cluster}/{settings.service}"
        try:
            live = describe_service(target, settings.cluster, settings.service, config.ecs_container(component))
        except ResourceMissing as exc:
            findings.append(Drift(place, resource, exc.message, exc.hint or "create it (Terraform)"))
            continue
        record = _live_record(config, target, environment, component, region)
        if record and record.live_task_definition and record.live_task_definition != live.task_definition:
            findings.append(Drift(
                place, resource,
                f"runs {live.task_definition.rpartition('/')[2]}; the ledger says"
                f" {record.live_task_definition.rpartition('/')[2]} ({record.live_version})",
                f"opcd rollback {component} --env {environment}{in_region} --to {record.live_version}"
                " (or deploy again)",
            ))  # fmt: skip
        latest = read_latest(target, bucket, environment, component, region=key)
        if latest and latest.outcome is Outcome.SHIFTING:
            findings.append(_half_done(place, resource, component, latest, "moving the service"))
        if live.rollout == "IN_PROGRESS":
            findings.append(Drift(place, resource, "is deploying", "see its service deployments in ECS"))
        elif live.running < live.desired:
            findings.append(Drift(
                place, resource, f"runs {live.running} of {live.desired} desired tasks",
                "see the service's events in ECS (tasks failing to start or their health checks)",
            ))  # fmt: skip
    return findings


@task(name="check-alarms-exist", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def check_alarms_exist(config: Config, target: AwsTarget, environment: str, region: str | None = None) -> list[Drift]:
    """The environment's alarms exist (in ``region``: one of its several)."""
    names = config.alarm_names(environment, region)
    if not names:
        return []
    found = describe_alarms(target, names)
    place = where(environment, config.region_key(environment, region))
    return [
        Drift(place, f"alarm {n}", "does not exist", "create it (Terraform), or fix opcd.toml's alarms")
        for n in names
        if n not in found
    ]


@task(name="check-retention-rules", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def check_retention_rules(config: Config, target: AwsTarget) -> list[Drift]:
    bucket, days = config.project.artifact_bucket, config.project.artifact_retention_days
    rules = lifecycle_rules(target, bucket)
    fix = "apply Terraform: it owns the bucket's lifecycle rules (a deploy only warns of them)"
    return [
        Drift("all", f"bucket {bucket}", problem, fix)
        for component in config.components
        if (problem := retention_problem(rules, component, days))
    ]


@task(name="check-terraform-drift", cache_policy=NO_CACHE)
def check_terraform_drift(config: Config, environment: str) -> list[Drift]:
    """A plan with -detailed-exitcode: exit 2 means the live resources differ from the configuration.

    Read-only: the plan takes no state lock (``-lock=false``) and is thrown away, never kept.
    """
    logger = get_run_logger()
    with workspace(config, environment, logger.info) as tf, tempfile.TemporaryDirectory() as work:
        tf.init()
        summary = tf.plan_summary(Path(work) / "drift.tfplan", lock=False)
    if not summary.changed:
        return []
    fix = "apply Terraform (terraform-plan, review, terraform-apply), or change the configuration to match"
    findings = []
    if not summary.changes_resources:  # exit code 2 all the same
        outputs = ", ".join(summary.outputs) or "-"
        problem = f"has changes but no resource changes (outputs: {outputs})"
        findings.append(Drift(environment, "terraform plan", problem, fix, "terraform"))
    for kind, verb in (("destroy", "would be destroyed"), ("replace", "would be replaced"), ("add", "would be created"),
                       ("change", "would be changed")):  # fmt: skip
        for address in getattr(summary, kind):
            problem = f"{verb} by Terraform: it differs from the configuration"
            findings.append(Drift(environment, address, problem, fix, "terraform"))
    return findings
