"""The ``opcd`` command line.

Exit codes: 0 success, 1 a deploy/rollback/health check that ran and failed, 2 bad input (nothing
was changed), 3 ``opcd drift`` found drift. Errors are one line on stderr: ``error: what is wrong — how to fix it``.

Flows and tasks are imported inside the commands that run them, so ``--help`` and
``config check`` stay fast and never start Prefect.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import botocore.exceptions
import httpx
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, PartialCredentialsError
from pydantic import ValidationError

from opcd import __version__
from opcd.config import Config, config_path, load_config
from opcd.errors import ConfigError, DeployFailed, InputError, OpcdError, explain_aws_error, failure_text
from opcd.iam import Role, acting_as
from opcd.outcomes import Outcome
from opcd.versions import check_git_sha, check_version

EPILOG = """examples:
  opcd sandbox up --detach                     start the embedded AWS (demo, tests)
  opcd deploy backend --env dev --version v2   build, deploy blue/green, check health
  opcd rollback backend --env dev --to v1      move live back to v1 (health-checked)
  opcd promote backend --env prod              end a canary/linear bake now: all traffic to the new version
  opcd abort backend --env prod --reason "…"   end a bake now: all traffic back to the old version
  opcd release --version v2                    build, deploy to dev, approval, deploy to prod
  opcd pending                                 runs waiting for an approval (with their UI links)
  opcd approve RUN --approver alice --reason … resume a waiting release (reject: the same, refusing)
  opcd status --env dev                        what is live where
  opcd validate                                the pull request checks on this checkout
  opcd setup                                   prepare the Prefect server: pools, locks, secrets, deployments
  opcd terraform plan --git-sha SHA            plan each environment, keep the plans for apply
  opcd terraform apply --git-sha SHA           apply dev's reviewed plan, approval, prod's
  opcd drift --env prod                        live state against the ledger and Terraform (exit 3: drift)
  opcd iam policy --role deploy > deploy.json  the deploy role's IAM policy, scoped to opcd.toml's names
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opcd",
        description="Continuous delivery for OutreachPass on Prefect: build, deploy blue/green, roll back.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="PATH", help="opcd.toml to use (default: $OPCD_CONFIG or ./opcd.toml)")
    parser.add_argument("--version", action="version", version=f"opcd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = sub.add_parser("config", help="check opcd.toml").add_subparsers(dest="action", required=True)
    check = config.add_parser("check", help="validate opcd.toml; list every problem with its key path")
    check.add_argument("path", nargs="?", help="file to check (default: the --config file)")

    sandbox = sub.add_parser("sandbox", help="the embedded AWS on 127.0.0.1 (moto + invoke shim + gateway)")
    sandbox_sub = sandbox.add_subparsers(dest="action", required=True)
    sb_up = sandbox_sub.add_parser("up", help="start and seed the sandbox (foreground unless --detach)")
    sb_up.add_argument("--port", type=int, default=4566, help="port on 127.0.0.1 (default 4566; 0 picks a free one)")
    sb_up.add_argument("--detach", action="store_true", help="run in the background and return once it answers")
    sandbox_sub.add_parser("down", help="stop the background sandbox")
    sandbox_sub.add_parser("env", help="print export lines that point AWS tools at the sandbox")
    fire = sandbox_sub.add_parser("fire-rule", help="deliver an EventBridge rule's event to its Lambda targets")
    fire.add_argument("rule", help="rule name from opcd.toml (nightly-digest) or its full AWS name")
    fire.add_argument("--env", dest="environment", default="dev", help="environment (default dev)")

    deploy = sub.add_parser("deploy", help="deploy one component to one environment")
    deploy.add_argument("component", help="a component of opcd.toml, e.g. backend")
    deploy.add_argument("--env", required=True, dest="environment", help="environment, e.g. dev")
    deploy.add_argument("--version", required=True, dest="app_version", help="version to deploy, e.g. v2 or 1.4.0")
    deploy.add_argument("--git-sha", help="commit the version was built from (recorded in metadata)")
    deploy.add_argument(
        "--accept-alarm", action="append", default=[], metavar="NAME", dest="accept_alarms",
        help="deploy although this alarm fires (name each one; recorded). Without it a firing alarm refuses",
    )  # fmt: skip
    deploy.add_argument("--dry-run", action="store_true", help="check everything and show the plan; change nothing")

    rollback = sub.add_parser("rollback", help="move live back to the previous or a named version")
    rollback.add_argument("component")
    rollback.add_argument("--env", required=True, dest="environment")
    target = rollback.add_mutually_exclusive_group()
    target.add_argument("--to", dest="to_version", metavar="VERSION", help="app version to go back to")
    target.add_argument("--to-lambda-version", metavar="N", help="Lambda version number to go back to")
    rollback.add_argument("--dry-run", action="store_true", help="show what would be live; change nothing")
    rollback.add_argument(
        "--force", action="store_true",
        help="go to a version the ledger never saw live (its deploy failed or was rolled back); recorded",
    )  # fmt: skip

    for action, text in (
        ("promote", "end a running canary/linear bake now: all traffic to the new version"),
        ("abort", "end a running canary/linear bake now: all traffic back to the old version"),
    ):
        bake = sub.add_parser(action, help=text, description=text + " (through the flow run that bakes it)")
        bake.add_argument("component", help="a Lambda component of opcd.toml, e.g. backend")
        bake.add_argument("--env", required=True, dest="environment", help="environment, e.g. prod")
        bake.add_argument("--reason", help="why (recorded in the ledger and the run's log)")
        bake.add_argument(
            "--no-wait", action="store_true", help="return once the run has the command; do not follow the alias"
        )
        bake.add_argument("--timeout", type=float, default=120.0, help="seconds to follow the alias (default 120)")

    release = sub.add_parser(
        "release", help="release a version: build, deploy to each environment in parallel, approval before prod",
        description="Build every component once, deploy them to each environment in turn (in parallel within "
        "one), pause for an approval where opcd.toml asks for one, stop before the next environment on any failure.",
    )  # fmt: skip
    release.add_argument("--version", required=True, dest="app_version", help="version to release, e.g. v2 or 1.4.0")
    release.add_argument("--git-sha", help="commit it is built from; without --component, picks what changed")
    release.add_argument(
        "--component", action="append", dest="components", metavar="NAME",
        help="a component to release (repeat; default: those changed since prod's live commit, else all)",
    )  # fmt: skip
    release.add_argument(
        "--env", action="append", dest="environments", metavar="ENV",
        help="an environment (repeat; default: all); they always go in opcd.toml's order, dev before prod",
    )  # fmt: skip
    release.add_argument("--dry-run", action="store_true", help="check everything and show the plan; change nothing")

    pending = sub.add_parser("pending", help="list the runs waiting for an approval, with their UI links")
    pending.add_argument("--json", action="store_true", help="machine-readable output")
    for action, text in (
        ("approve", "approve a run waiting for an approval (as the Prefect UI's Resume form does)"),
        ("reject", "reject a run waiting for an approval: it ends without deploying there"),
    ):
        answer = sub.add_parser(action, help=text, description=text)
        answer.add_argument("run", metavar="RUN", help="flow run id or name (see `opcd pending`)")
        answer.add_argument("--approver", help="who answers: one of the environment's approvers (verify = none)")
        answer.add_argument(
            "--github-run", type=int, metavar="ID",
            help="verify = github: the approval workflow's run that a required reviewer approved (the run checks it)",
        )  # fmt: skip
        answer.add_argument(
            "--reason", default="", help="why (recorded, sent to Slack)" + ("; required" if action == "reject" else "")
        )

    validate = sub.add_parser(
        "validate", help="run the pull request checks on a checkout (tests, lint, types, security, build)"
    )
    validate.add_argument("path", nargs="?", default=".", help="the checkout to check (default: .)")
    validate.add_argument("--repository", help="owner/name: also post statuses and the PR comment to GitHub")
    validate.add_argument("--pull-request", type=int, help="PR number for the comment (with --repository)")
    validate.add_argument("--head-sha", help="commit for the statuses (with --repository)")

    setup = sub.add_parser(
        "setup", help="prepare the Prefect server at PREFECT_API_URL: pools, locks, secrets, deployments",
        description="Create or update, on the Prefect server that PREFECT_API_URL names: the work pools, one "
        "concurrency limit per lock, the secret blocks opcd.toml names (values from OPCD_SECRET_<BLOCK>), and "
        "the deployments of prefect.yaml. Idempotent: prints what it changed; a second run changes nothing.",
    )  # fmt: skip
    setup.add_argument("--prefect-file", default="prefect.yaml", help="the deployments (default: ./prefect.yaml)")
    setup.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")

    terraform = sub.add_parser("terraform", help="Terraform plan and apply, as the terraform-* flows")
    tf_sub = terraform.add_subparsers(dest="action", required=True)
    tf_plan = tf_sub.add_parser(
        "plan", help="plan each environment in parallel; keep the saved plans; comment on the PR",
        description="Plan each environment in parallel, summarise the plans (destroys first), keep the saved "
        "plans in the artifact bucket under the commit's sha (not with --no-store, nor for a pull request: those "
        "are only shown), and comment on the pull request when one is named.",
    )  # fmt: skip
    tf_plan.add_argument("--env", action="append", dest="environments", metavar="ENV", help="(repeat; default: all)")
    tf_plan.add_argument("--git-sha", help="the commit planned: names the saved plans (default: latest)")
    tf_plan.add_argument("--pull-request", type=int, help="PR number to comment on (with --repository)")
    tf_plan.add_argument("--repository", help="owner/name on GitHub (default: $GITHUB_REPOSITORY)")
    tf_plan.add_argument(
        "--no-store", dest="store", action="store_false",
        help="only show the plan: keep nothing, take no state lock (read-only role; always so with --pull-request)",
    )  # fmt: skip
    tf_apply = tf_sub.add_parser(
        "apply", help="apply the reviewed plans: dev, then each gated environment after its approval",
        description="Apply the saved plans of --git-sha in opcd.toml's order. Behind an approval gate the "
        "environment is planned again after the approval and applied only if nothing changed since review.",
    )  # fmt: skip
    tf_apply.add_argument("--git-sha", required=True, help="the commit whose reviewed plans to apply")
    tf_apply.add_argument("--env", action="append", dest="environments", metavar="ENV", help="(repeat; default: all)")

    drift = sub.add_parser(
        "drift", help="check live state against the ledger, opcd.toml and Terraform; exit 3 on drift",
        description="The drift-check flow: each environment's live aliases, weights, rules, services, alarms and "
        "the bucket's retention rules against what opcd recorded, and a Terraform plan. Exit 0 clean, 3 drift.",
    )  # fmt: skip
    drift.add_argument("--env", action="append", dest="environments", metavar="ENV", help="(repeat; default: all)")
    drift.add_argument("--skip-terraform", action="store_true", help="check live state only (no terraform plan)")
    drift.add_argument("--json", action="store_true", help="machine-readable output")

    status = sub.add_parser("status", help="what is live in each environment")
    status.add_argument("--env", dest="environment", help="only this environment")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    iam = sub.add_parser("iam", help="the IAM policies opcd's roles need").add_subparsers(dest="action", required=True)
    iam_policy = iam.add_parser(
        "policy", help="print a role's IAM policy (JSON), scoped to the names in opcd.toml",
        description="deploy: the deploy pool's workers and whoever deploys, rolls back, releases. read: terraform "
        "plan, drift check and pull-request checks (also enough for opcd status and dry runs).",
    )  # fmt: skip
    iam_policy.add_argument("--role", choices=["deploy", "read"], default="deploy", help="(default: deploy)")

    health = sub.add_parser("health", help="check a health URL: N consecutive 2xx answers")
    health.add_argument("url")
    health.add_argument("--successes", type=int, default=3, help="consecutive 2xx answers needed (default 3)")
    health.add_argument("--attempts", type=int, default=10, help="requests before giving up (default 10)")
    health.add_argument("--interval", type=float, default=1.0, help="seconds between requests (default 1)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    health.add_argument("--expect-version", help="fail unless the answer names this version")
    return parser


def _print_target(config: Config, environment: str | None = None) -> Any:
    """``AWS target: …, account … as …`` (the environment's role, when it has one)."""
    from opcd.aws import target_for

    target = target_for(config, environment)
    with contextlib.suppress(Exception):  # STS cannot say: the line says less, the command says why
        target.identity()
    print(target.describe(), flush=True)
    return target


def cmd_config_check(args: argparse.Namespace) -> int:
    path = config_path(args.path or args.config)
    config = load_config(path)
    print(f"{path}: ok ({len(config.components)} components, {len(config.environments)} environments)")
    return 0


SANDBOX_EXTRA_MODULES = ("moto", "werkzeug", "flask", "flask_cors")  # what `opcd[sandbox]` installs (moto[server])


def _sandbox_commands() -> Any:
    """The sandbox's commands, found through the ``opcd.sandbox`` entry point (product code never imports it)."""
    found = importlib.metadata.entry_points(group="opcd.sandbox", name="commands")
    if not found:
        raise InputError(
            "the sandbox is not installed", "pip install 'opcd[sandbox]' from a checkout (or make install)"
        )
    return next(iter(found)).load()


def cmd_sandbox(args: argparse.Namespace) -> int:
    # Only `up` runs moto; down, env and fire-rule talk to a running sandbox and need nothing more.
    if args.action == "up" and not all(importlib.util.find_spec(m) for m in SANDBOX_EXTRA_MODULES):
        raise InputError("the sandbox needs the sandbox extra", "pip install 'opcd[sandbox]' (or make install)")
    commands = _sandbox_commands()
    path = config_path(args.config)
    if args.action == "up":
        result: int = commands.up(path, args.port, args.detach)
    elif args.action == "down":
        result = commands.down(path)
    elif args.action == "fire-rule":
        result = commands.fire_rule(path, args.rule, args.environment)
    else:
        result = commands.env(path)
    return result


class _ExpectedErrorsWithoutTraceback(logging.Filter):
    """On the console, an expected error is its one-line message; the Prefect UI keeps everything.

    Expected: an OpcdError, AWS's answer (ClientError) or AWS not answering, which the run turns
    into the one ``error:`` line. Anything else (a bug) keeps its traceback.
    """

    EXPECTED = (OpcdError, ClientError, botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.EXPECTED):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_console() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _ExpectedErrorsWithoutTraceback) for f in handler.filters):
            handler.addFilter(_ExpectedErrorsWithoutTraceback())


def _run_flow(flow: Any, **params: Any) -> Any:
    """Run a flow in this process; turn a Failed run back into the OpcdError it raised."""
    _quiet_console()
    state = flow(**params, return_state=True)
    if state.is_completed():
        return state.result()
    error = state.result(raise_on_failure=False)
    if isinstance(error, OpcdError):
        raise error
    raise DeployFailed(
        f"flow run ended {state.name}: {failure_text(error) if isinstance(error, BaseException) else state.message}"
    )


def _preflight(args: argparse.Namespace, version: str | None) -> tuple[Config, Any]:
    """Check the request before Prefect starts: bad input fails fast and changes nothing."""
    from flows.lambda_deploy import plan_lambda_deploy

    config = load_config(args.config)
    comp = config.component(args.component)
    config.environment(args.environment)
    if version is not None:
        check_version(version)
    if getattr(args, "git_sha", None) is not None:
        check_git_sha(args.git_sha)
    target = _print_target(config, args.environment)
    accept = getattr(args, "accept_alarms", None)
    if comp.kind in ("apprunner", "ecs"):
        from flows.ecs_deploy import plan_ecs_deploy
        from flows.frontend_deploy import plan_apprunner_deploy

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
        from flows.ecs_deploy import dry_run_lines

        lines, code = dry_run_lines(args.component, args.environment, args.app_version, str(config_path(args.config)))
        print("\n".join(lines))
        return code
    if args.dry_run:
        return (_dry_run_apprunner if apprunner else _dry_run_deploy)(args, config, target)
    from flows.components import deploy_flow

    params: dict[str, Any] = {
        "environment": args.environment, "version": args.app_version, "git_sha": args.git_sha,
        "config_path": str(config_path(args.config).resolve()), "accept_alarms": args.accept_alarms or None,
    }  # fmt: skip
    flow, extra = deploy_flow(config, args.component)
    result = _run_flow(flow, **params, **extra)
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
    from flows.frontend_deploy import describe_image, plan_apprunner_deploy
    from tasks.apprunner import read_service
    from tasks.ecr import tag_digest
    from tasks.images import choose_builder, image_tag

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
    from tasks.build import lambda_source_hash
    from tasks.lambda_functions import read_live
    from tasks.s3_artifacts import artifact_key, read_artifact_metadata

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
        from flows.ecs_deploy import rollback_target

        return rollback_target(args.component, args.environment, args.to_version, path, args.force)
    if config.component(args.component).kind == "apprunner":
        from flows.frontend_deploy import choose_image, describe_image, plan_apprunner_deploy
        from tasks.apprunner import read_service

        service_plan = plan_apprunner_deploy(args.component, args.environment, None, path, accept_firing=True)
        service = read_service(target, service_plan.service_arn)
        identifier, _version = choose_image(service_plan, service, args.to_version, args.force)
        return (
            f"{service.name} from {describe_image(service_plan, service.image)}"
            f" to {describe_image(service_plan, identifier)}"
        )
    from flows.lambda_deploy import plan_lambda_deploy
    from flows.rollback import choose_version
    from tasks.lambda_functions import read_live

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
    from flows.rollback import rollback

    result = _run_flow(
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
    from opcd import control
    from tasks.ledger import actor

    config = load_config(args.config)
    comp = config.component(args.component)
    if comp.kind != "lambda":
        raise InputError(f"{args.component} is an App Runner service: it has no bake to {args.command}")
    config.environment(args.environment)
    target = _print_target(config, args.environment)
    bake = control.find_running_bake(config, target, args.component, args.environment)
    print(
        f"{bake.flow_run_name}: baking Lambda version {bake.new_version} ({bake.app_version}) against"
        f" {bake.primary} on {bake.function}:live"
    )
    control.send_bake_command(bake, args.command, actor(), args.reason)
    print(f"sent {args.command} to {bake.flow_run_name}; it acts at its next guard poll")
    if args.no_wait:
        return 0
    goal = bake.new_version if args.command == "promote" else bake.primary
    try:
        control.wait_for_alias(
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


def cmd_validate(args: argparse.Namespace) -> int:
    """``opcd validate [PATH]``: the pr-validation flow on a local checkout, its table on stdout."""
    from flows.pr_validation import pr_validation, table
    from tasks.checks import CheckResult

    _quiet_console()
    explicit = str(config_path(args.config).resolve()) if args.config else None
    state = pr_validation(
        path=args.path, repository=args.repository, pull_request=args.pull_request, head_sha=args.head_sha,
        config_path=explicit, return_state=True,
    )  # fmt: skip
    data = state.result(raise_on_failure=False)
    if isinstance(data, OpcdError):
        raise data
    if not isinstance(data, list):
        raise DeployFailed(f"pr-validation ended {state.name}: {data}")
    print(table([CheckResult(**row) for row in data]))
    if state.is_failed():
        print(f"error: {state.message}", file=sys.stderr)
        return 1
    print("all required checks passed")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from flows.release import check_request, choose_components, ordered_environments, preflight
    from opcd.aws import target_for

    config = load_config(args.config)
    check_version(args.app_version)
    if args.git_sha is not None:
        check_git_sha(args.git_sha)
    envs = ordered_environments(config, args.environments)
    target = _print_target(config)
    last = target_for(config, envs[-1])  # the ledger as that environment's role reads it
    components, why = choose_components(config, last, args.components, args.git_sha, envs[-1])
    envs = check_request(config, args.app_version, args.git_sha, components, envs)
    path = str(config_path(args.config).resolve())
    if components:
        preflight(path, components, envs, args.app_version)
    if args.dry_run:
        return _dry_run_release(config, target, args.app_version, components, why, envs)
    from flows.release import release

    params = {
        "version": args.app_version, "git_sha": args.git_sha, "components": components or None,
        "environments": envs, "config_path": path,
    }  # fmt: skip
    if not components:
        print(f"nothing to release: {why}")
        return 0
    summary = _run_flow(release, **params)
    print(f"released {', '.join(summary['components'])} {args.app_version} to {', '.join(envs)}")
    for decision in summary["approvals"]:
        print(f"  {decision['environment']}: approved by {decision['approver']}: {decision['reason'] or '-'}")
    return 0


def _dry_run_release(
    config: Config, target: Any, version: str, components: list[str], why: str, envs: list[str]
) -> int:
    from flows.release import live_now

    print(f"dry run: release {version} — nothing will be changed")
    print(f"components: {', '.join(components) or 'none'} ({why})")
    for env in envs:
        approval = config.environment(env).approval
        gate = f"approval by {' or '.join(approval.approvers)} first" if approval else "no approval"
        print(f"{env} ({gate}):")
        for component in components:
            print(f"  {component}: live now {live_now(config, target, env, component)} → {version}")
    return 0


def cmd_pending(args: argparse.Namespace) -> int:
    from tasks.approval import pending

    waiting = pending()
    if args.json:
        print(json.dumps([
            {"flow_run_id": str(w.run.id), "flow_run_name": w.run.name, "environment": w.environment,
             "approvers": w.approvers, "timeout_at": w.timeout_at, "ui_url": w.ui_url}
            for w in waiting
        ], indent=2))  # fmt: skip
        return 0
    if not waiting:
        print("no run is waiting for an approval")
        return 0
    for w in waiting:
        print(f"{w.run.id}  {w.run.name}  waiting for {w.environment}: {', '.join(w.approvers)}")
        print(f"    times out {w.timeout_at}")
        if w.ui_url:
            print(f"    {w.ui_url}")
        print(f"    opcd approve {w.run.id} --approver NAME --reason '…'   (or: opcd reject … --reason '…')")
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    from tasks.approval import answer, find_waiting

    waiting = find_waiting(args.run)
    approved = args.command == "approve"
    answer(waiting, approved, args.approver, args.reason, args.github_run)
    verb = "approved" if approved else "rejected"
    who = f"with GitHub run {args.github_run}, which it checks" if args.github_run else f"as {args.approver}"
    print(f"{verb} {waiting.run.name} ({waiting.environment}) {who}: the run resumes")
    return 0


def status_rows(config: Config, target: Any, environment: str | None) -> list[dict[str, Any]]:
    from flows.ecs_deploy import status_row
    from tasks.eventbridge import describe_rules
    from tasks.lambda_functions import read_live
    from tasks.ledger import read_latest

    envs = [environment] if environment else list(config.environments)
    rows = []
    for env_name in envs:
        env = config.environment(env_name)
        for comp, function in env.functions.items():
            live = read_live(target, function)
            latest = read_latest(target, config.project.artifact_bucket, env_name, comp)
            deployed = read_latest(target, config.project.artifact_bucket, env_name, comp, "live.json")
            recorded = deployed.live_lambda_version if deployed else None
            rows.append({
                "component": comp, "environment": env_name, "function": function,
                "version": live.app_version, "lambda_version": live.lambda_version,
                "split": live.weights or None,
                "deployed_at": deployed and deployed.finished_at, "flow_run": deployed and deployed.flow_run_name,
                "flow_run_id": deployed and deployed.flow_run_id, "last_outcome": latest and latest.outcome,
                "last_run": latest and latest.flow_run_name,
                "drift": bool(recorded and recorded != live.lambda_version),
                "rules": describe_rules(target, config.project.name, env_name, config.lambda_component(comp).rules),
            })  # fmt: skip
        rows += [service_row(config, target, env_name, comp, ref) for comp, ref in env.services.items()]
        rows += [status_row(config, target, env_name, comp) for comp in env.ecs]
    return rows


def service_row(config: Config, target: Any, env_name: str, comp: str, ref: str) -> dict[str, Any]:
    """One App Runner component's row: the image it runs (tag and digest) and the ledger's view."""
    from tasks.apprunner import find_service, read_service
    from tasks.ecr import describe_repository, tag_digest
    from tasks.images import version_of
    from tasks.ledger import read_latest

    service = read_service(target, find_service(target, ref))
    repository = config.apprunner_component(comp).repository
    tag = describe_repository(target, repository).tag_of(service.image)
    digest = tag_digest(target, repository, tag) if tag else None
    latest = read_latest(target, config.project.artifact_bucket, env_name, comp)
    deployed = read_latest(target, config.project.artifact_bucket, env_name, comp, "live.json")
    recorded = deployed.live_image if deployed else None
    return {
        "component": comp, "environment": env_name, "service": service.name, "service_status": service.status,
        "version": version_of(tag), "image": service.image, "image_digest": digest, "lambda_version": None,
        "split": None,
        "deployed_at": deployed and deployed.finished_at, "flow_run": deployed and deployed.flow_run_name,
        "flow_run_id": deployed and deployed.flow_run_id, "last_outcome": latest and latest.outcome,
        "last_run": latest and latest.flow_run_name, "drift": bool(recorded and recorded != service.image), "rules": [],
    }  # fmt: skip


def _runs_on(row: dict[str, Any]) -> str:
    """Lambda version number, or the image digest (short) and the service's status when not RUNNING."""
    if row.get("image") is None:
        return str(row["lambda_version"])
    if row.get("revision"):  # ECS: the task definition revision and its tasks
        busy = "" if row["service_status"] == "RUNNING" else f", {row['service_status']}"
        return f"{row['revision']} ({row['running']}/{row['desired']} running{busy})"
    digest = (row["image_digest"] or "-")[:19]
    return digest + ("" if row["service_status"] == "RUNNING" else f" ({row['service_status']})")


def _split_text(row: dict[str, Any]) -> str:
    """``25% on 3`` and what it means: a bake in progress, or a shift that died."""
    parts = ", ".join(f"{w * 100:g}% on {v}" for v, w in row["split"].items())
    running = row["last_outcome"] is Outcome.SHIFTING
    why = "a bake is running, or its run died" if running else "a shift died or someone split it"
    return f"{parts} ({why}; the next deploy moves it back to {row['lambda_version']} first)"


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.environment:
        config.environment(args.environment)
    if args.json:
        from opcd.aws import resolve_target

        target = resolve_target(config.state_dir(), config.project.region)
        print(json.dumps(status_rows(config, target, args.environment), indent=2))
        return 0
    target = _print_target(config)
    rows = status_rows(config, target, args.environment)
    header = ("COMPONENT", "ENV", "LIVE", "REVISION", "DEPLOYED AT", "BY RUN", "LAST RUN")
    table = [header] + [
        (
            r["component"], r["environment"], r["version"] or "-", _runs_on(r),
            (r["deployed_at"] or "-")[:19], r["flow_run"] or "-",
            (f"{r['last_run']}: {r['last_outcome']}" if r["last_outcome"] else "-")
            + (" DRIFT: ledger disagrees with live" if r["drift"] else "")
            + (" SPLIT: " + _split_text(r) if r["split"] else ""),
        )
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    print("  ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip())
    for row, data in zip(table[1:], rows, strict=True):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if data.get("image"):
            print(f"    image {data['image']}  {data['image_digest'] or ''}".rstrip())
        for rule in data["rules"]:
            targets = ", ".join(t.rsplit(":", 1)[-1] for t in rule["targets"]) or "no target"
            print(f"    rule {rule['name']}  {rule['trigger']}  {rule['state']}  → {targets}")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from opcd.aws import resolve_target
    from opcd.config import HealthCheck
    from tasks.health import wait_healthy

    url = args.url
    with contextlib.suppress(ConfigError):  # without an opcd.toml the URL is checked as given
        config = load_config(args.config)
        url = resolve_target(config.state_dir(), config.project.region).resolve_url(url)
    try:
        settings = HealthCheck(
            successes=args.successes, attempts=args.attempts, interval=args.interval, timeout=args.timeout
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise InputError(f"--{problem['loc'][0]}: {problem['msg']}", "see `opcd health --help`") from None
    if url != args.url:
        print(f"checking {args.url} (served by the sandbox at {url})")
    report = wait_healthy(
        url,
        settings,
        args.expect_version,
        on_probe=lambda p: print(f"  {'ok  ' if p.ok else 'FAIL'} {p.detail}", flush=True),
    )
    report.url = args.url
    print(report.summary())
    return 0 if report.healthy else 1


def cmd_setup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deployments.setup import setup

    config = load_config(args.config)
    changes = setup(config, Path(args.prefect_file), dry_run=args.dry_run)
    changed = [c for c in changes if c.action in ("created", "updated")]
    missing = [c for c in changes if c.action == "missing"]
    verb = "would change" if args.dry_run else "changed"
    print(f"{verb} {len(changed)} of {len(changes)}" + (f"; {len(missing)} missing (see above)" if missing else ""))
    return 0


def cmd_terraform(args: argparse.Namespace) -> int:
    from flows.terraform import terraform_apply, terraform_plan

    config = load_config(args.config)
    explicit = str(config_path(args.config).resolve())
    _print_target(config)
    if args.action == "plan":
        result = _run_flow(
            terraform_plan, environments=args.environments, pull_request=args.pull_request,
            repository=args.repository, git_sha=args.git_sha, config_path=explicit, store=args.store,
        )  # fmt: skip
        for plan in result["plans"]:
            destroys = "  (destroys!)" if plan["destroy"] or plan["replace"] else ""
            adds, gone = len(plan["add"]) + len(plan["replace"]), len(plan["destroy"]) + len(plan["replace"])
            print(f"{plan['environment']}: {adds} to add, {len(plan['change'])} to change, {gone} to destroy{destroys}")
        kept = f"saved as plan {result['plan_id']}" if result["stored"] else "not stored (shown only)"
        print(f"{kept}; PR comment: {result['comment']}")
        return 0
    result = _run_flow(terraform_apply, git_sha=args.git_sha, environments=args.environments, config_path=explicit)
    for env in config.environments:
        if env in result:
            print(f"{env}: {result[env]}")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from flows.drift import EXIT_DRIFT, drift_check

    config = load_config(args.config)
    if not args.json:
        _print_target(config)
    _quiet_console()
    state = drift_check(
        environments=args.environments, terraform=not args.skip_terraform,
        config_path=str(config_path(args.config).resolve()), return_state=True,
    )  # fmt: skip
    data = state.result(raise_on_failure=False)
    if isinstance(data, OpcdError):
        raise data
    if not isinstance(data, dict):
        raise DeployFailed(f"drift-check ended {state.name}: {data}")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"Terraform: {data['terraform']}")
        for f in data["findings"]:
            print(f"DRIFT  {f['environment']:<5} {f['resource']}: {f['problem']}\n       fix: {f['fix']}")
        for error in data["errors"]:
            print(f"ERROR  {error}")
        if data["findings"]:
            print(f"{len(data['findings'])} finding(s)")
        else:
            print(f"{len(data['errors'])} check(s) could not run: unknown there" if data["errors"] else "no drift")
    if data["findings"]:
        return EXIT_DRIFT
    return 1 if data["errors"] else 0


def cmd_iam(args: argparse.Namespace) -> int:
    from opcd.iam import policy, render

    print(render(policy(load_config(args.config), args.role)), end="")
    return 0


def _role(args: argparse.Namespace) -> Role:
    """The role a command's AWS calls need: ``read`` for the commands that change nothing."""
    reads = args.command in ("status", "drift", "validate") or getattr(args, "dry_run", False)
    shown = args.command == "terraform" and args.action == "plan" and not (args.store and args.pull_request is None)
    return "read" if reads or shown else "deploy"


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "setup": cmd_setup,
    "terraform": cmd_terraform,
    "drift": cmd_drift,
    "config": cmd_config_check,
    "sandbox": cmd_sandbox,
    "deploy": cmd_deploy,
    "rollback": cmd_rollback,
    "status": cmd_status,
    "promote": cmd_bake_command,
    "validate": cmd_validate,
    "abort": cmd_bake_command,
    "health": cmd_health,
    "release": cmd_release,
    "pending": cmd_pending,
    "approve": cmd_answer,
    "reject": cmd_answer,
    "iam": cmd_iam,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no phoning home from CI
    try:
        with acting_as(_role(args), str(config_path(args.config))):
            return COMMANDS[args.command](args)
    except OpcdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (NoCredentialsError, PartialCredentialsError):
        print(
            "error: no AWS credentials found — start the sandbox (`opcd sandbox up --detach`)"
            " or configure AWS credentials (AWS_PROFILE, ...)",
            file=sys.stderr,
        )
        return 2
    except EndpointConnectionError as exc:
        print(f"error: cannot reach {exc.kwargs.get('endpoint_url')} — is the sandbox or network up?", file=sys.stderr)
        return 2
    except ClientError as exc:
        # Flow runs turn their AWS errors into DeployFailed (_run_flow): one that reaches here came
        # from a read before any change (preflight, status, dry run), except in the sandbox's own
        # commands (seeding, firing a rule) and after promote/abort sent its command (cmd_bake_command).
        message, hint = explain_aws_error(exc)
        if args.command == "sandbox":
            print(f"error: {message} — {hint}", file=sys.stderr)
            return 1
        print(f"error: {message} — {hint}; nothing was changed", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:  # the Prefect API (pending, approve, reject, any flow run)
        print(f"error: the Prefect API did not answer as expected: {exc} — is PREFECT_API_URL right and its"
              " server up?", file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
