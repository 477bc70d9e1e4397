"""The ``opcd`` command line: its parser, which module runs each command, and the one-line errors.

Exit codes: 0 success, 1 a deploy/rollback/health check that ran and failed, 2 bad input (nothing
was changed), 3 ``opcd drift`` found drift. Errors are one line on stderr: ``error: what is wrong — how to fix it``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import httpx
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, PartialCredentialsError

from cli.config import cmd_config_check, cmd_iam
from cli.sandbox import cmd_sandbox
from opcd import __version__
from opcd.config import config_path
from opcd.errors import OpcdError, explain_aws_error
from opcd.iam import Role, acting_as

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
  opcd history backend --env prod              its deploys, rollbacks, releases and load tests, newest first
  opcd validate                                the pull request checks on this checkout
  opcd setup                                   prepare the Prefect server: pools, locks, secrets, deployments
  opcd terraform plan --git-sha SHA            plan each environment, keep the plans for apply
  opcd terraform apply --git-sha SHA           apply dev's reviewed plan, approval, prod's
  opcd drift --env prod                        live state against the ledger and Terraform (exit 3: drift)
  opcd iam policy --role deploy > deploy.json  the deploy role's IAM policy, scoped to opcd.toml's names
"""


def _verbose(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-v", "--verbose", action="store_true",
        help="show Prefect's full log on the console too (it always goes to the log file named at the start)",
    )  # fmt: skip


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
    traffic = sandbox_sub.add_parser("traffic", help="send GET requests to a URL the sandbox serves, at a steady rate")
    traffic.add_argument("url", help="a public URL the gateway maps (https://api.outreachpass.example/health)")
    traffic.add_argument("--rps", type=float, default=10.0, help="requests per second (default 10, at most 200)")
    traffic.add_argument("--for", dest="duration", default="30s", help="how long (default 30s, at most 10m)")

    deploy = sub.add_parser("deploy", help="deploy one component to one environment")
    deploy.add_argument("component", help="a component of opcd.toml, e.g. backend")
    deploy.add_argument("--env", required=True, dest="environment", help="environment, e.g. dev")
    deploy.add_argument("--version", required=True, dest="app_version", help="version to deploy, e.g. v2 or 1.4.0")
    deploy.add_argument("--git-sha", help="commit the version was built from (recorded in metadata)")
    deploy.add_argument(
        "--region", help="one region of an environment of several (default: each of them, in turn, the first first)"
    )  # fmt: skip
    deploy.add_argument(
        "--accept-alarm", action="append", default=[], metavar="NAME", dest="accept_alarms",
        help="deploy although this alarm fires (name each one; recorded). Without it a firing alarm refuses",
    )  # fmt: skip
    deploy.add_argument("--dry-run", action="store_true", help="check everything and show the plan; change nothing")
    _verbose(deploy)
    deploy.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")

    rollback = sub.add_parser("rollback", help="move live back to the previous or a named version")
    rollback.add_argument("component")
    rollback.add_argument("--env", required=True, dest="environment")
    rollback.add_argument(
        "--region", help="one region of an environment of several (default: each of them, in turn)"
    )  # fmt: skip
    target = rollback.add_mutually_exclusive_group()
    target.add_argument("--to", dest="to_version", metavar="VERSION", help="app version to go back to")
    target.add_argument("--to-lambda-version", metavar="N", help="Lambda version number to go back to")
    rollback.add_argument("--dry-run", action="store_true", help="show what would be live; change nothing")
    rollback.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    rollback.add_argument(
        "--force", action="store_true",
        help="go to a version the ledger never saw live (its deploy failed or was rolled back); recorded",
    )  # fmt: skip
    _verbose(rollback)

    for action, text in (
        ("promote", "end a running canary/linear bake now: all traffic to the new version"),
        ("abort", "end a running canary/linear bake now: all traffic back to the old version"),
    ):
        bake = sub.add_parser(action, help=text, description=text + " (through the flow run that bakes it)")
        bake.add_argument("component", help="a Lambda component of opcd.toml, e.g. backend")
        bake.add_argument("--env", required=True, dest="environment", help="environment, e.g. prod")
        bake.add_argument("--region", help="the bake in this region of an environment of several (default: the first)")
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
    _verbose(release)
    release.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")

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

    history = sub.add_parser(
        "history", help="every deploy, rollback, release and load test the ledger keeps, newest first",
        description="Every deploy, rollback, release and load test the ledger keeps, newest first: version, "
        "outcome, who, when, how long, the run (a link when PREFECT_UI_URL is known), the canary analysis's verdict.",
    )  # fmt: skip
    history.add_argument("component", nargs="?", help="only this component (default: all)")
    history.add_argument("--env", dest="environment", help="only this environment (default: all)")
    history.add_argument("--limit", type=int, default=20, help="at most this many entries, newest first (default 20)")
    history.add_argument("--json", action="store_true", help="machine-readable output")

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


def _role(args: argparse.Namespace) -> Role:
    """The role a command's AWS calls need: ``read`` for the commands that change nothing."""
    reads = args.command in ("status", "drift", "validate", "history") or getattr(args, "dry_run", False)
    shown = args.command == "terraform" and args.action == "plan" and not (args.store and args.pull_request is None)
    return "read" if reads or shown else "deploy"


Handler = Callable[[argparse.Namespace], int]

# The commands that read only opcd.toml, and the sandbox's (found through its entry point).
CHEAP: dict[str, Handler] = {"config": cmd_config_check, "iam": cmd_iam, "sandbox": cmd_sandbox}


def _handler(command: str) -> Handler:
    """The function that runs ``command``, its module (and the flows and tasks it needs) imported now.

    Imported here rather than at the top: importing every command's flows and tasks (and Prefect)
    costs 5.7 s of CPU that ``opcd --help``, ``config check``, ``iam`` and ``sandbox`` never use
    (measured: ``opcd --help`` 6.9 s of CPU with them, 1.2 s without).
    """
    if command in CHEAP:
        return CHEAP[command]
    if command in ("deploy", "rollback", "promote", "abort"):
        from cli.deploy import COMMANDS as deploy_commands

        return deploy_commands[command]
    if command in ("release", "pending", "approve", "reject"):
        from cli.release import COMMANDS as release_commands

        return release_commands[command]
    if command in ("status", "health"):
        from cli.status import COMMANDS as status_commands

        return status_commands[command]
    if command == "history":
        from cli.history import COMMANDS as history_commands

        return history_commands[command]
    if command == "validate":
        from cli.validate import COMMANDS as validate_commands

        return validate_commands[command]
    from cli.infra import COMMANDS as infra_commands

    return infra_commands[command]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no phoning home from CI
    try:
        with acting_as(_role(args), str(config_path(args.config))):
            return _handler(args.command)(args)
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
        # Flow runs turn their AWS errors into DeployFailed (cli.common.run_flow): one that reaches here came
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
