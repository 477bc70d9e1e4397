"""``opcd deploy``, ``rollback`` (their dry runs too), ``promote`` and ``abort``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from cli.common import print_target, run_flow
from cli.progress import showing_progress
from flows.components import deploy_flow
from flows.ecs_deploy import dry_run_lines, plan_ecs_deploy, rollback_target
from flows.frontend_deploy import choose_image, describe_image, plan_apprunner_deploy
from flows.lambda_deploy import plan_lambda_deploy
from flows.rollback import choose_version, rollback
from opcd.config import Config, config_path, load_config
from opcd.errors import DeployFailed, InputError, explain_aws_error
from opcd.outcomes import Outcome
from opcd.versions import check_git_sha, check_version
from tasks.apprunner import read_service
from tasks.bake_control import find_running_bake, send_bake_command, wait_for_alias
from tasks.build import lambda_source_hash
from tasks.ecr import tag_digest
from tasks.images import choose_builder, image_tag
from tasks.lambda_functions import read_live
from tasks.ledger import actor
from tasks.s3_artifacts import artifact_key, read_artifact_metadata


def _preflight(args: argparse.Namespace, version: str | None) -> tuple[Config, Any]:
    """Check the request before Prefect starts: bad input fails fast and changes nothing."""
    config = load_config(args.config)
    comp = config.component(args.component)
    config.environment(args.environment)
    if version is not None:
        check_version(version)
    if getattr(args, "git_sha", None) is not None:
        check_git_sha(args.git_sha)
    target = print_target(config, args.environment)
    accept = getattr(args, "accept_alarms", None)
    if comp.kind in ("apprunner", "ecs"):
        if getattr(args, "to_lambda_version", None) is not None:
            what = "an App Runner service" if comp.kind == "apprunner" else "an ECS service"
            raise InputError(f"{args.component} is {what}: it has no Lambda versions", "use --to VERSION")
        (plan_ecs_deploy if comp.kind == "ecs" else plan_apprunner_deploy)(
            args.component, args.environment, version, str(config_path(args.config)), accept,
            accept_firing=args.command == "rollback",
        )  # fmt: skip
        return config, target
    plan_lambda_deploy(
        args.component, args.environment, version, str(config_path(args.config)), accept,
        accept_firing=args.command == "rollback",
    )  # fmt: skip
    return config, target


def cmd_deploy(args: argparse.Namespace) -> int:
    config, target = _preflight(args, args.app_version)
    apprunner = config.component(args.component).kind in ("apprunner", "ecs")
    if args.dry_run and config.component(args.component).kind == "ecs":
        lines, code = dry_run_lines(args.component, args.environment, args.app_version, str(config_path(args.config)))
        print("\n".join(lines))
        return code
    if args.dry_run:
        return (_dry_run_apprunner if apprunner else _dry_run_deploy)(args, config, target)
    params: dict[str, Any] = {
        "environment": args.environment, "version": args.app_version, "git_sha": args.git_sha,
        "config_path": str(config_path(args.config).resolve()), "accept_alarms": args.accept_alarms or None,
    }  # fmt: skip
    flow, extra = deploy_flow(config, args.component)
    # The place for the deploy's plan, rendered: it is what then runs.
    print(f"deploy {args.component} {args.app_version} to {args.environment}", flush=True)
    with showing_progress(config, "deploy", [(args.component, args.environment)], args.verbose):
        result = run_flow(flow, **params, **extra)
    if result.outcome is Outcome.NOOP:
        print(f"{args.component} {args.app_version} is already live in {args.environment}: nothing changed")
        return 0
    if result.live_task_definition:  # ECS
        runs_on = f"{result.live_task_definition.rpartition('/')[2]} ({result.live_image})"
    elif apprunner:
        runs_on = f"{result.live_image} ({result.live_image_digest})"
    else:
        runs_on = f"live on Lambda version {result.live_lambda_version}"
    print(f"deployed {args.component} {args.app_version} to {args.environment}: {runs_on}")
    return 0


def _dry_run_apprunner(args: argparse.Namespace, config: Config, target: Any) -> int:
    plan = plan_apprunner_deploy(args.component, args.environment, args.app_version, str(config_path(args.config)))
    comp = config.apprunner_component(args.component)
    service = read_service(target, plan.service_arn)
    tag = image_tag(args.app_version)
    identifier = plan.repository.identifier(tag)
    existing = tag_digest(target, plan.repository.name, tag)
    env = config.environment(args.environment)
    print(f"dry run: deploy {args.component} {args.app_version} to {args.environment} ({service.name})")
    print(f"  live now: {describe_image(plan, service.image)}, service {service.status}")
    if service.image == identifier:
        print("  nothing to do: that version is already live")
        return 0
    steps = [
        f"build {comp.source}/{comp.dockerfile} with {choose_builder(comp.builder)} (reproducible: same source,"
        " same digest)",
        f"{identifier} is in ECR as {existing}: reuse it when pushed from this source; else build, and refuse"
        " unless the build has that digest"
        if existing
        else f"push {identifier} and move :latest",
        f"UpdateService {service.name} → {identifier}; follow the operation (every"
        f" {comp.operation.poll_interval:g}s, at most {comp.operation.timeout:g}s)",
        f"health: {env.health.get(args.component) or service.https_url + '/'}"
        f" ({env.health_check.successes} consecutive)",
    ]
    steps += [f"smoke: {s.method} {s.path} → {s.expect_status}" for s in comp.smoke]
    if env.alarms:
        steps.append(f"alarms: {', '.join(env.alarms)}")
    steps.append(f"on failure after it went live: point {service.name} back at {service.image}")
    if service.status != "RUNNING":
        steps.insert(0, f"REFUSE: the service is {service.status}; a deploy waits for RUNNING")
    for number, step in enumerate(steps, 1):
        print(f"  {number}. {step}")
    print("no changes made (dry run)")
    return 2 if service.status != "RUNNING" else 0


def _dry_run_deploy(args: argparse.Namespace, config: Config, target: Any) -> int:
    function = config.function_name(args.component, args.environment)
    live = read_live(target, function)
    comp = config.lambda_component(args.component)
    hashed = lambda_source_hash(comp, config.source_dir(args.component))
    bucket = config.project.artifact_bucket
    key = artifact_key(args.component, args.app_version)
    stored = read_artifact_metadata.fn(target, bucket, args.component, args.app_version)
    env = config.environment(args.environment)
    print(f"dry run: deploy {args.component} {args.app_version} to {args.environment} ({function})")
    print(f"  live now: {live.app_version or 'not deployed by opcd'} (Lambda version {live.lambda_version})")
    if stored and stored.get("source_hash") != hashed:
        print(f"  artifact: s3://{bucket}/{key} exists, built from OTHER source — the deploy would refuse")
        return 2
    print(f"  artifact: {'reuse' if stored else 'build and upload'} s3://{bucket}/{key}")
    if live.app_version == args.app_version and stored and live.code_sha256 == stored.get("code_sha256"):
        print("  nothing to do: that version is already live")
        return 0
    steps = ["update code from S3, verify sha256, publish a version"]
    if comp.migrations:
        steps.append(f"migrations: {comp.migrations.command}")
    steps += [f"smoke: {s.method} {s.path} → {s.expect_status}" for s in comp.smoke]
    strategy = env.strategy(args.component)
    if strategy.gradual:
        guards = ["alarms"] * bool(env.alarms) + ["health"] * (args.component in env.health)
        guards += ["smoke on the new version"] * bool(env.bake.smoke and comp.smoke)
        guards += ["canary analysis (new vs old version on CloudWatch)"] * bool(env.bake.analysis)
        steps.append(
            f"shift live by {strategy.describe()}; every {env.bake.poll_interval:g}s check"
            f" {', '.join(guards) or 'nothing (no guards configured)'}"
        )
    else:
        steps.append("shift live → new version (all at once)")
    if live.weights:
        steps.insert(0, f"repair: live is split {live.weights}; move all traffic back to {live.lambda_version}")
    if args.component in env.health:
        steps.append(f"health: {env.health[args.component]} ({env.health_check.successes} consecutive)")
    if env.alarms:
        steps.append(f"alarms: {', '.join(env.alarms)}")
    steps.append("on failure after the shift: roll live back automatically")
    for number, step in enumerate(steps, 1):
        print(f"  {number}. {step}")
    print("no changes made (dry run)")
    return 0


def _rollback_target(args: argparse.Namespace, config: Config, target: Any) -> str:
    """Where the rollback would go, checked before any flow runs: '<from> to <to>'; InputError if nowhere."""
    path = str(config_path(args.config))
    if config.component(args.component).kind == "ecs":
        return rollback_target(args.component, args.environment, args.to_version, path, args.force)
    if config.component(args.component).kind == "apprunner":
        service_plan = plan_apprunner_deploy(args.component, args.environment, None, path, accept_firing=True)
        service = read_service(target, service_plan.service_arn)
        identifier, _version = choose_image(service_plan, service, args.to_version, args.force)
        return (
            f"{service.name} from {describe_image(service_plan, service.image)}"
            f" to {describe_image(service_plan, identifier)}"
        )
    plan = plan_lambda_deploy(args.component, args.environment, args.to_version, path, accept_firing=True)
    live = read_live(target, plan.function)
    version, app = choose_version(plan, live, args.to_version, args.to_lambda_version, args.force)
    return f"{plan.function}:live from Lambda version {live.lambda_version} ({live.app_version}) to {version} ({app})"


def cmd_rollback(args: argparse.Namespace) -> int:
    config, target = _preflight(args, args.to_version)
    where_to = _rollback_target(args, config, target)
    if args.dry_run:
        print(f"dry run: would move {where_to}")
        print("no changes made (dry run)")
        return 0
    print(f"rollback: move {where_to}", flush=True)
    with showing_progress(config, "rollback", [(args.component, args.environment)], args.verbose):
        result = run_flow(
            rollback, component=args.component, environment=args.environment, to_version=args.to_version,
            to_lambda_version=args.to_lambda_version, config_path=str(config_path(args.config).resolve()),
            force=args.force,
        )  # fmt: skip
    where = f"{args.component} in {args.environment}"
    if result.outcome is Outcome.NOOP:
        print(f"{where} is already on {result.version or 'that version'}: nothing changed")
    elif result.live_image:
        print(f"rolled back {where} to {result.live_version} ({result.live_image}, {result.live_image_digest})")
    else:
        app = result.live_version or "a version opcd did not deploy"
        print(f"rolled back {where} to {app} (Lambda version {result.live_lambda_version})")
    return 0


def cmd_bake_command(args: argparse.Namespace) -> int:
    """``opcd promote`` / ``opcd abort``: act on a running bake through its flow run."""

    config = load_config(args.config)
    comp = config.component(args.component)
    if comp.kind != "lambda":
        raise InputError(f"{args.component} is an App Runner service: it has no bake to {args.command}")
    config.environment(args.environment)
    target = print_target(config, args.environment)
    bake = find_running_bake(config, target, args.component, args.environment)
    print(
        f"{bake.flow_run_name}: baking Lambda version {bake.new_version} ({bake.app_version}) against"
        f" {bake.primary} on {bake.function}:live"
    )
    send_bake_command(bake, args.command, actor(), args.reason)
    print(f"sent {args.command} to {bake.flow_run_name}; it acts at its next guard poll")
    if args.no_wait:
        return 0
    goal = bake.new_version if args.command == "promote" else bake.primary
    try:
        wait_for_alias(
            target, bake.function, goal, args.timeout,
            on_wait=lambda v, w: print(f"  live: version {v}, weights {w or 'none'}", flush=True),
        )  # fmt: skip
    except ClientError as exc:  # the command is sent: the run acts on it whatever happens here
        message, hint = explain_aws_error(exc)
        raise DeployFailed(f"{args.command} sent to {bake.flow_run_name}, but following {bake.function}:live"
                           f" failed: {message}", hint) from None  # fmt: skip
    done = "promoted: all traffic on" if args.command == "promote" else "aborted: all traffic back on"
    print(f"{done} Lambda version {goal} of {bake.function}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "deploy": cmd_deploy,
    "rollback": cmd_rollback,
    "promote": cmd_bake_command,
    "abort": cmd_bake_command,
}
