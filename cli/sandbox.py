"""``opcd sandbox …``: the embedded AWS, found through the ``opcd.sandbox`` entry point (never imported)."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
from typing import Any

from opcd.config import config_path
from opcd.errors import InputError

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
    elif args.action == "traffic":
        result = commands.traffic(path, args.url, args.rps, args.duration)
    else:
        result = commands.env(path)
    return result
