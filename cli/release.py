"""``opcd release`` (and its dry run), ``pending``, ``approve`` and ``reject``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from cli.common import print_target, run_flow
from cli.progress import showing_progress
from flows.release import check_request, choose_components, live_now, preflight, release
from opcd.aws import target_for
from opcd.config import Config, config_path, load_config
from opcd.versions import check_git_sha, check_version
from tasks.approval import answer, find_waiting, pending


def cmd_release(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    check_version(args.app_version)
    if args.git_sha is not None:
        check_git_sha(args.git_sha)
    envs = config.ordered_environments(args.environments)
    target = print_target(config)
    last = target_for(config, envs[-1])  # the ledger as that environment's role reads it
    components, why = choose_components(config, last, args.components, args.git_sha, envs[-1])
    envs = check_request(config, args.app_version, args.git_sha, components, envs)
    path = str(config_path(args.config).resolve())
    if components:
        preflight(path, components, envs, args.app_version)
    if args.dry_run:
        return _dry_run_release(config, target, args.app_version, components, why, envs)
    params = {
        "version": args.app_version, "git_sha": args.git_sha, "components": components or None,
        "environments": envs, "config_path": path,
    }  # fmt: skip
    if not components:
        print(f"nothing to release: {why}")
        return 0
    print(what_will_run(config, args.app_version, components, why, envs), flush=True)
    with showing_progress(config, "release", release_rows(config, components, envs), args.verbose):
        summary = run_flow(release, **params)
    print(f"released {', '.join(summary['components'])} {args.app_version} to {', '.join(envs)}")
    for decision in summary["approvals"]:
        print(f"  {decision['environment']}: approved by {decision['approver']}: {decision['reason'] or '-'}")
    return 0


def what_will_run(config: Config, version: str, components: list[str], why: str, envs: list[str]) -> str:
    """What the release will do, said before it starts."""
    # The place for the release's plan, rendered: it is what then runs.
    gates = []
    for env in envs:
        approval = config.environment(env).approval
        gates.append(f"{env} (approval by {' or '.join(approval.approvers)} first)" if approval else env)
    return f"release {version}: {', '.join(components)} → {' → '.join(gates)}\n  components: {why}"


def release_rows(config: Config, components: list[str], envs: list[str]) -> list[tuple[str, str]]:
    """The progress table's rows: each build, then per environment its approval and its deploys."""
    rows = [(c, "build") for c in components]
    for env in envs:
        rows += [("approval", env)] if config.environment(env).approval else []
        rows += [(c, env) for c in components]
    return rows


def _dry_run_release(
    config: Config, target: Any, version: str, components: list[str], why: str, envs: list[str]
) -> int:
    print(f"dry run: release {version} — nothing will be changed")
    print(f"components: {', '.join(components) or 'none'} ({why})")
    for env in envs:
        approval = config.environment(env).approval
        gate = f"approval by {' or '.join(approval.approvers)} first" if approval else "no approval"
        print(f"{env} ({gate}):")
        for component in components:
            print(f"  {component}: live now {live_now(config, target, env, component)} → {version}")
        tested = [c for c in components if config.component(c).load_test and env == next(iter(config.environments))]
        if tested:
            print(f"  then a load test of {', '.join(tested)}, judged against its last passing result")
    return 0


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
