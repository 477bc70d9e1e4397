"""What changed between two commits, from the checkout's git history (no network)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def changed_paths(root: Path, base: str, head: str) -> list[Path] | None:
    """Absolute paths of files that differ between commits ``base`` and ``head``; None when git cannot tell.

    None (not an empty list) when ``root`` is not in a git checkout or either commit is unknown to
    it, e.g. a shallow clone: the caller must then treat everything as changed.
    """
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    for sha in (base, head):
        if _git(root, "cat-file", "-e", f"{sha}^{{commit}}") is None:
            return None
    out = _git(root, "diff", "--name-only", "--no-renames", base, head)
    if out is None:
        return None
    return [Path(top.strip()) / line for line in out.splitlines() if line]


def touches(paths: list[Path], directory: Path) -> bool:
    """Whether any of ``paths`` lies under ``directory``."""
    directory = directory.resolve()
    return any(p.resolve().is_relative_to(directory) for p in paths)
