"""What changed between two commits, from the checkout's git history (no network); the tree of a
given commit, for a flow that must check or plan exactly that commit (a pull request's head)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opcd.errors import InputError


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


@contextmanager
def tree_of_commit(root: Path, sha: str | None) -> Iterator[Path]:
    """``root`` as it is in commit ``sha``.

    ``root`` itself when no sha is given, when it is not in a git checkout, or when its checkout is
    at that commit; otherwise a temporary worktree at that commit (fetched from ``origin`` when the
    checkout lacks it, as a worker's checkout of main lacks a pull request's head), removed after.
    """
    top = _git(root, "rev-parse", "--show-toplevel")
    head = _git(root, "rev-parse", "HEAD")
    if sha is None or top is None or (head is not None and head.strip().startswith(sha)):
        yield root
        return
    base = Path(top.strip())
    if _git(root, "cat-file", "-e", f"{sha}^{{commit}}") is None:
        _git(root, "fetch", "--quiet", "origin", sha)
        if _git(root, "cat-file", "-e", f"{sha}^{{commit}}") is None:
            raise InputError(
                f"commit {sha} is not in the checkout at {base} and `git fetch origin {sha}` did not bring it",
                "check the sha, or fetch it into the worker's checkout (git fetch origin pull/N/head)",
            )
    work = Path(tempfile.mkdtemp(prefix="opcd-commit-"))
    try:
        if _git(root, "worktree", "add", "--detach", str(work / "tree"), sha) is None:
            raise InputError(f"cannot check out commit {sha} from {base}", "see `git worktree add` in that checkout")
        yield work / "tree" / root.resolve().relative_to(base.resolve())
    finally:
        _git(root, "worktree", "remove", "--force", str(work / "tree"))
        shutil.rmtree(work, ignore_errors=True)


def check_checkout_at(root: Path, sha: str) -> None:
    """InputError when ``root`` is in a git checkout whose HEAD is not commit ``sha``.

    What gets built is the checkout's tree: building another commit's tree and calling it ``sha``
    would deploy code nobody asked for. (Not a git checkout: nothing to compare, nothing refused.)
    """
    head = _git(root, "rev-parse", "HEAD")
    if head is None or head.strip().startswith(sha):
        return
    raise InputError(
        f"the checkout at {root} is at commit {head.strip()[:12]}, not {sha[:12]}: it would build other code",
        f"bring the checkout to that commit (git fetch && git checkout {sha[:12]}), or release the commit it has",
    )
