"""``opcd release`` (its plan: ``--dry-run`` shows it, ``--json`` as JSON), ``pending``, ``approve`` and ``reject``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from cli.common import print_target, run_flow
from cli.progress import showing_progress
from flows.plan.build import build_release_plan
from flows.plan.models import ReleasePlan
from flows.plan.render import render_json, render_text
from flows.release import release
from opcd.config import Config, config_path, load_config
from opcd.errors import InputError
from opcd.versions import check_git_sha, check_version
from tasks.approval import answer, find_waiting, pending


def cmd_release(args: argparse.Namespace) -> int:
    """Build the release's plan once (components, environments, every deploy checked), show it or run it."""
    if args.json and not args.dry_run:
        raise InputError("--json prints the plan of a dry run", "add --dry-run")
    config = load_config(args.config)
    check_version(args.app_version)  # what the arguments alone say is wrong: before any AWS target
    if args.git_sha is not None:
        check_git_sha(args.git_sha)
    for component in args.components or []:
        config.component(component)
    config.ordered_environments(args.environments)
    if not args.json:
        print_target(config)
    plan = build_release_plan(
        config, args.app_version, args.git_sha, args.components, args.environments, config.release.on_failure
    )
    if args.dry_run:
        print(render_json(plan) if args.json else render_text(plan))
        return 0
    if not plan.components:
        print(f"nothing to release: {plan.why}")
        return 0
    envs = [stage.environment for stage in plan.stages]
    params = {
        "version": args.app_version, "git_sha": args.git_sha, "components": list(plan.components),
        "environments": envs, "config_path": str(config_path(args.config).resolve()), "plan": plan,
    }  # fmt: skip
    print(what_will_run(plan), flush=True)
    with showing_progress(config, "release", release_rows(config, list(plan.components), envs), args.verbose):
        summary = run_flow(release, **params)
    print(f"released {', '.join(summary['components'])} {args.app_version} to {', '.join(envs)}")
    for decision in summary["approvals"]:
        print(f"  {decision['environment']}: approved by {decision['approver']}: {decision['reason'] or '-'}")
    return 0


def what_will_run(plan: ReleasePlan) -> str:
    """What the release will do, said before it starts: its plan (the target line is already printed)."""
    return "\n".join(render_text(plan, dry_run=False).splitlines()[1:])


def release_rows(config: Config, components: list[str], envs: list[str]) -> list[tuple[str, str]]:
    """The progress table's rows: each build, then per environment its approval and its deploys."""
    rows = [(c, "build") for c in components]
    for env in envs:
        rows += [("approval", env)] if config.environment(env).approval else []
        rows += [(c, env) for c in components]
    return rows


def cmd_pending(args: argparse.Namespace) -> int:
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
    waiting = find_waiting(args.run)
    approved = args.command == "approve"
    answer(waiting, approved, args.approver, args.reason, args.github_run)
    verb = "approved" if approved else "rejected"
    who = f"with GitHub run {args.github_run}, which it checks" if args.github_run else f"as {args.approver}"
    print(f"{verb} {waiting.run.name} ({waiting.environment}) {who}: the run resumes")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "release": cmd_release,
    "pending": cmd_pending,
    "approve": cmd_answer,
    "reject": cmd_answer,
}
