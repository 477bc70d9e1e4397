"""``opcd deploy``, ``rollback`` (their plans: ``--dry-run`` shows one, ``--json`` too), ``promote``, ``abort``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from cli.common import print_target, run_flow
from cli.progress import showing_progress
from flows.components import deploy_flow
from flows.plan.build import build_deploy_plan, build_rollback_plan
from flows.plan.models import ArtifactPlan, DeployPlan, ReleasePlan, RollbackPlan
from flows.plan.render import render_json, render_text
from flows.rollback import rollback
from opcd.aws import target_for
from opcd.config import Config, config_path, load_config, where
from opcd.errors import DeployFailed, InputError, OpcdError, explain_aws_error
from opcd.outcomes import Outcome
from opcd.versions import check_git_sha, check_version
from tasks.bake_control import find_running_bake, send_bake_command, wait_for_alias
from tasks.ecr import tag_digest
from tasks.images import image_tag
from tasks.ledger import actor
from tasks.s3_artifacts import read_artifact_metadata


def _check_request(args: argparse.Namespace, config: Config, version: str | None) -> None:
    """What opcd.toml and the arguments alone say is wrong, refused before any AWS target is resolved."""
    if args.json and not args.dry_run:
        raise InputError("--json prints the plan of a dry run", "add --dry-run")
    config.component(args.component)
    config.environment(args.environment)
    if version is not None:
        check_version(version)
    if getattr(args, "git_sha", None) is not None:
        check_git_sha(args.git_sha)


def print_plan(plan: DeployPlan | RollbackPlan | ReleasePlan, as_json: bool) -> int:
    """The dry run: the plan the run would execute, as text or as its JSON; nothing changed."""
    print(render_json(plan) if as_json else render_text(plan))
    return 0


def print_plans(plans: Sequence[DeployPlan | RollbackPlan], as_json: bool) -> int:
    """The dry run of each region's plan: one plan as :func:`print_plan`; several (an environment of several
    regions) as text one after the other, or as one JSON document, the list of the plans in deploy order."""
    if len(plans) == 1 or not as_json:
        for plan in plans:
            print_plan(plan, as_json)
        return 0
    print("[\n" + ",\n".join(render_json(plan) for plan in plans) + "\n]")
    return 0


def show_plan(plan: DeployPlan | RollbackPlan | ReleasePlan) -> None:
    """Before a run: the plan it executes (its target line is already printed)."""
    print("\n".join(render_text(plan, dry_run=False).splitlines()[1:]), flush=True)


def cmd_deploy(args: argparse.Namespace) -> int:
    """Build the deploy's plan once (every check before anything changes), show it or run it.

    An environment of several regions: ``--region R`` deploys to that one; without it, each region in turn
    (the first one first), each plan made before anything changes; a failed region stops the rest."""
    config = load_config(args.config)
    _check_request(args, config, args.app_version)
    regions = config.region_keys(args.environment, args.region)  # [None]: its only one
    if not args.dry_run:
        print_target(config, args.environment)
    plans = [
        build_deploy_plan(
            config, args.component, args.environment, args.app_version, args.accept_alarms or None, region=region
        )
        for region in regions
    ]  # fmt: skip
    if args.dry_run:
        return print_plans(plans, args.json)
    built: ArtifactPlan | None = None
    changed: list[str] = []  # the regions this command moved to the new version
    for plan in plans:
        try:
            if built is not None:  # a further region: the first region's package, copied (planned again to say so)
                plan = build_deploy_plan(
                    config, args.component, args.environment, args.app_version, args.accept_alarms or None,
                    region=plan.region, release_build=built,
                )  # fmt: skip
            if deploy_one(config, args, plan) and plan.region:
                changed.append(plan.region)
            if built is None and len(plans) > 1:  # the first region's build, for the next regions to copy
                built = package_of(config, plan) if plan.kind == "lambda" else image_of(config, plan)
        except Exception:
            roll_back_regions(config, args, changed)  # an environment is not left with its regions apart
            raise
    return 0


def roll_back_regions(config: Config, args: argparse.Namespace, regions: list[str]) -> None:
    """After a later region failed: each region this deploy changed goes back to what ran before it (the
    ``rollback`` flow: verified, recorded). Said on stderr; a rollback that fails is said and the rest go on."""
    for region in regions:
        what = f"{args.component} in {where(args.environment, region)}"
        print(f"a later region failed: rolling back {what}", file=sys.stderr)
        try:
            result = run_flow(
                rollback, component=args.component, environment=args.environment,
                config_path=str(config_path(args.config).resolve()), region=region,
            )  # fmt: skip
        except OpcdError as exc:
            print(f"error: the rollback of {what} FAILED: {exc} — act now: opcd status --env {args.environment}",
                  file=sys.stderr)  # fmt: skip
            continue
        runs = f"{result.live_image} ({result.live_image_digest})" if result.live_image else (
            f"Lambda version {result.live_lambda_version}"
        )  # fmt: skip
        print(f"rolled back {what} to {result.live_version} ({runs})", file=sys.stderr)


def package_of(config: Config, plan: DeployPlan) -> ArtifactPlan:
    """The Lambda package ``plan``'s deploy used (its metadata in its bucket), for the next regions to copy."""
    target = target_for(config, plan.environment, plan.region)
    bucket = config.bucket_for(plan.environment, plan.region)
    stored = read_artifact_metadata.fn(target, bucket, plan.component, plan.version) or {}
    if not stored.get("code_sha256"):  # the next regions would build again instead of copying this build
        raise DeployFailed(f"s3://{bucket} has no metadata of {plan.component} {plan.version} after its deploy")
    return ArtifactPlan(
        location=plan.artifact.location, build=False, reason=f"made by the deploy to {plan.region}",
        source_hash=stored.get("source_hash"), sha256=stored.get("sha256"), code_sha256=stored.get("code_sha256"),
        size=stored.get("size"),
    )  # fmt: skip


def image_of(config: Config, plan: DeployPlan) -> ArtifactPlan:
    """The image ``plan``'s deploy pushed (ECR's digest under the version's tag), for the next regions to copy."""
    target = target_for(config, plan.environment, plan.region)
    repository = config.image_component(plan.component).repository
    digest = tag_digest(target, repository, image_tag(plan.version))
    if digest is None:  # the next regions would build again instead of copying this image
        raise DeployFailed(f"ECR in {target.region} has no {repository}:{image_tag(plan.version)} after its deploy")
    return ArtifactPlan(
        location=plan.artifact.location, build=False, reason=f"pushed by the deploy to {plan.region}",
        source_hash=plan.artifact.source_hash, digest=digest,
    )  # fmt: skip


def deploy_one(config: Config, args: argparse.Namespace, plan: DeployPlan) -> bool:
    """Run ``plan`` (one region's deploy) through the component's deploy flow; say what is live after it.
    True when it changed what runs (not "already live")."""
    params: dict[str, Any] = {
        "environment": args.environment, "version": args.app_version, "git_sha": args.git_sha,
        "config_path": str(config_path(args.config).resolve()), "accept_alarms": args.accept_alarms or None,
        "plan": plan,
    }  # fmt: skip
    flow, extra = deploy_flow(config, args.component)
    show_plan(plan)
    with showing_progress(config, "deploy", [(args.component, args.environment)], args.verbose):
        result = run_flow(flow, **params, **extra)
    place = where(args.environment, plan.region)
    if result.outcome is Outcome.NOOP:
        print(f"{args.component} {args.app_version} is already live in {place}: nothing changed")
        return False
    if result.live_task_definition:  # ECS
        runs_on = f"{result.live_task_definition.rpartition('/')[2]} ({result.live_image})"
    elif plan.kind == "apprunner":
        runs_on = f"{result.live_image} ({result.live_image_digest})"
    else:
        runs_on = f"live on Lambda version {result.live_lambda_version}"
    print(f"deployed {args.component} {args.app_version} to {place}: {runs_on}")
    return True


def cmd_rollback(args: argparse.Namespace) -> int:
    """Build the rollback's plan once per region (where live goes, checked), show them or run them in turn.

    ``--region R``: that region of the environment; default: each of its regions (one plan when it has one)."""
    config = load_config(args.config)
    _check_request(args, config, args.to_version)
    regions = config.region_keys(args.environment, args.region)  # [None]: its only one
    if args.to_lambda_version is not None and len(regions) > 1:
        raise InputError(
            f"--to-lambda-version names a version of one region, and {args.environment} has several"
            " (Lambda version numbers differ per region)", "add --region R, or use --to VERSION",
        )  # fmt: skip
    if not args.dry_run:
        print_target(config, args.environment)
    plans = [  # every region's plan before anything changes
        build_rollback_plan(
            config, args.component, args.environment, args.to_version, args.to_lambda_version, args.force, region
        )
        for region in regions
    ]  # fmt: skip
    versions = {plan.live.version for plan in plans}  # app versions: Lambda version numbers differ per region
    if args.to_version is None and len(versions) > 1:  # "back" is not the same step everywhere
        raise InputError(
            f"the regions of {args.environment} run different versions"
            f" ({'; '.join(f'{plan.region}: {plan.live.describe()}' for plan in plans)})",
            "roll back one region with --region R, or all of them to one version with --to VERSION",
        )  # fmt: skip
    if args.dry_run:
        return print_plans(plans, args.json)
    for plan in plans:
        show_plan(plan)
        with showing_progress(config, "rollback", [(args.component, args.environment)], args.verbose):
            result = run_flow(
                rollback, component=args.component, environment=args.environment, to_version=args.to_version,
                to_lambda_version=args.to_lambda_version, config_path=str(config_path(args.config).resolve()),
                force=args.force, region=plan.region,
            )  # fmt: skip
        what = f"{args.component} in {where(args.environment, plan.region)}"
        if result.outcome is Outcome.NOOP:
            print(f"{what} is already on {result.version or 'that version'}: nothing changed")
        elif result.live_image:
            print(f"rolled back {what} to {result.live_version} ({result.live_image}, {result.live_image_digest})")
        else:
            app = result.live_version or "a version opcd did not deploy"
            print(f"rolled back {what} to {app} (Lambda version {result.live_lambda_version})")
    return 0


def cmd_bake_command(args: argparse.Namespace) -> int:
    """``opcd promote`` / ``opcd abort``: act on a running bake through its flow run."""

    config = load_config(args.config)
    comp = config.component(args.component)
    if comp.kind != "lambda":
        raise InputError(f"{args.component} is an App Runner service: it has no bake to {args.command}")
    config.environment(args.environment)
    region = config.region_key(args.environment, args.region)  # several regions: the bake of one (default: first)
    target = print_target(config, args.environment, region)
    bake = find_running_bake(config, target, args.component, args.environment, region)
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
