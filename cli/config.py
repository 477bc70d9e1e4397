"""``opcd config check`` and ``opcd iam policy``: what opcd.toml says, read without Prefect or AWS."""

from __future__ import annotations

import argparse

from opcd.config import config_path, load_config
from opcd.iam import policy, render


def cmd_config_check(args: argparse.Namespace) -> int:
    path = config_path(args.path or args.config)
    config = load_config(path)
    print(f"{path}: ok ({len(config.components)} components, {len(config.environments)} environments)")
    return 0


def cmd_iam(args: argparse.Namespace) -> int:
    print(render(policy(load_config(args.config), args.role)), end="")
    return 0
