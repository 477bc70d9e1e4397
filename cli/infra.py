"""``opcd setup`` (the Prefect server), ``terraform plan``/``apply`` and ``drift``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from cli.common import ended_with, print_target, quiet_console, run_flow
from deployments.setup import setup
from flows.drift import EXIT_DRIFT, drift_check
from flows.terraform import terraform_apply, terraform_plan
from opcd.config import config_path, load_config


def cmd_setup(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    changes = setup(config, Path(args.prefect_file), dry_run=args.dry_run)
    changed = [c for c in changes if c.action in ("created", "updated")]
    missing = [c for c in changes if c.action == "missing"]
    verb = "would change" if args.dry_run else "changed"
    print(f"{verb} {len(changed)} of {len(changes)}" + (f"; {len(missing)} missing (see above)" if missing else ""))
    return 0


def cmd_terraform(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    explicit = str(config_path(args.config).resolve())
    print_target(config)
    if args.action == "plan":
        result = run_flow(
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
    result = run_flow(terraform_apply, git_sha=args.git_sha, environments=args.environments, config_path=explicit)
    for env in config.environments:
        if env in result:
            print(f"{env}: {result[env]}")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not args.json:
        print_target(config)
    quiet_console()
    state = drift_check(
        environments=args.environments, terraform=not args.skip_terraform,
        config_path=str(config_path(args.config).resolve()), return_state=True,
    )  # fmt: skip
    data = ended_with(state, dict, "drift-check")
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


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "setup": cmd_setup,
    "terraform": cmd_terraform,
    "drift": cmd_drift,
}
