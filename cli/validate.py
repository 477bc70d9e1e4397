"""``opcd validate``: the pull request checks on a checkout."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from cli.common import ended_with, quiet_console
from flows.pr_validation import pr_validation, table
from opcd.config import config_path
from tasks.checks import CheckResult


def cmd_validate(args: argparse.Namespace) -> int:
    """``opcd validate [PATH]``: the pr-validation flow on a local checkout, its table on stdout."""

    quiet_console()
    explicit = str(config_path(args.config).resolve()) if args.config else None
    state = pr_validation(
        path=args.path, repository=args.repository, pull_request=args.pull_request, head_sha=args.head_sha,
        config_path=explicit, return_state=True,
    )  # fmt: skip
    data = ended_with(state, list, "pr-validation")
    print(table([CheckResult(**row) for row in data]))
    if state.is_failed():
        print(f"error: {state.message}", file=sys.stderr)
        return 1
    print("all required checks passed")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"validate": cmd_validate}
