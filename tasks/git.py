"""What changed between two commits; the tree of the commit a flow is given, materialized by the flow.

A flow given a commit (``git_sha``) never builds what a worker's checkout happens to hold. It
fetches that commit into a cache in the state directory (``.opcd/git/cache.git``, a bare
repository whose ``origin`` is ``project.repository``, else the checkout's ``origin``, else the
checkout itself), checks it out in a worktree of its own (``.opcd/commits/SHA12-RUN``), verifies
its ``HEAD`` and removes the worktree when the flow ends. The cache keeps what it fetched: a second
flow of the same commit (a resumed release, terraform-apply after terraform-plan) fetches nothing.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.context import FlowRunContext

from opcd.config import config_path as config_file
from opcd.config import load_config
from opcd.errors import InputError
from opcd.logs import run_logger
from opcd.versions import check_git_sha

# Directories this process materialized (a release's child deploys run in it) → (full sha, cache).
_TREES: dict[Path, tuple[str, Path]] = {}


def _call(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str] | None:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}  # a worker has no one to type a password
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def _git(root: Path, *args: str) -> str | None:
    done = _call(root, *args)
    return done.stdout if done is not None and done.returncode == 0 else None


def changed_paths(root: Path, base: str, head: str) -> list[Path] | None:
    """Absolute paths of files that differ between commits ``base`` and ``head``; None when git cannot tell.

    None (not an empty list) when ``root`` is not in a git checkout or either commit is unknown to
    it, e.g. a shallow clone: the caller must then treat everything as changed. In a tree a flow
    materialized, a commit the cache lacks is fetched first (only its tree is needed).
    """
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    known = _materialized(root)
    for sha in (base, head):
        if _resolve(root, sha) is None:
            if known is None or not _is_sha(sha):
                return None
            with _locked(known[1]):
                _fetch(known[1], sha)
            if _resolve(root, sha) is None:
                return None
    out = _git(root, "diff", "--name-only", "--no-renames", base, head)
    if out is None:
        return None
    return [Path(top.strip()) / line for line in out.splitlines() if line]


def touches(paths: list[Path], directory: Path) -> bool:
    """Whether any of ``paths`` lies under ``directory``."""
    directory = directory.resolve()
    return any(p.resolve().is_relative_to(directory) for p in paths)


def _is_sha(text: str) -> bool:
    try:
        check_git_sha(text)
    except InputError:
        return False
    return True


def _redact(text: str) -> str:
    """A URL's user and token out of ``text`` (a repository URL may carry them)."""
    return re.sub(r"(?<=://)[^/@\s]+@", "", text)


def _is_url(repository: str) -> bool:
    return "://" in repository or re.match(r"^[\w.-]+@[\w.-]+:", repository) is not None


def _source(repository: str | None, directory: Path, top: Path | None) -> str | None:
    """Where a commit is fetched from: ``project.repository``, else the checkout's origin, else the checkout."""
    if repository:
        return repository if _is_url(repository) else str((directory / repository).resolve())
    if top is None:
        return None
    origin = (_git(top, "remote", "get-url", "origin") or "").strip()
    if not origin:
        return str(top)
    return origin if _is_url(origin) or Path(origin).is_absolute() else str((top / origin).resolve())


def _materialized(path: Path) -> tuple[str, Path] | None:
    """(full sha, cache) of the tree this process materialized that holds ``path``."""
    path = path.resolve()
    for tree, known in list(_TREES.items()):
        if path.is_relative_to(tree):
            return known
    return None


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One git operation on the cache at a time, across processes (fetches share its shallow file)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with (cache.parent / "cache.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _resolve(root: Path, sha: str) -> str | None:
    out = _git(root, "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}")
    return out.strip() if out else None


def _fetch(cache: Path, *refspecs: str, depth: bool = True) -> str:
    """Fetch from the cache's origin: "" when done, else git's last line of error (credentials removed)."""
    args = ["fetch", "--quiet", "--no-tags", *(["--depth=1"] if depth else []), "origin", *refspecs]
    done = _call(cache, *args, timeout=600)
    if done is None:
        return "git fetch did not end within 10 minutes"
    if done.returncode:
        lines = done.stderr.strip().splitlines() or ["git fetch failed"]
        return _redact(next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[-1]))
    return ""


def _prepare(cache: Path, source: str) -> None:
    """The bare cache, created once, its origin pointed at ``source``."""
    if not (cache / "HEAD").is_file():
        done = _call(cache.parent, "init", "--quiet", "--bare", str(cache))
        if done is None or done.returncode:
            raise InputError(f"cannot create the commit cache {cache}", "check that the state directory is writable")
    current = _git(cache, "config", "--get", "remote.origin.url")
    if current is None:
        _call(cache, "remote", "add", "origin", source)
    elif current.strip() != source:
        _call(cache, "remote", "set-url", "origin", source)


def _fetch_commit(cache: Path, sha: str, source: str) -> str:
    """The full sha of ``sha``, fetched into the cache unless it is there (a short sha: from the branches)."""
    error = ""
    if len(sha) == 40:
        if _resolve(cache, sha) is None:
            error = _fetch(cache, sha)  # the commit alone (depth 1): a pull request's head is on no branch
    else:  # a short sha cannot be fetched: fetch the branches, then find it among their commits
        error = _fetch(cache, "+refs/heads/*:refs/remotes/origin/*", depth=False)
    full = _resolve(cache, sha)
    if full is None or not full.startswith(sha):
        raise InputError(
            f"commit {sha} cannot be fetched from {_redact(source)}: {error or 'no such commit'}",
            "check the sha (a short one must be on a branch) and that this machine can read the repository"
            " (project.repository in opcd.toml, else the checkout's origin)",
        )
    return full


def _run_key() -> str:
    """The flow run's id (a resumed run finds its own directory again), else a random one."""

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id)[:8] if ctx and ctx.flow_run else uuid.uuid4().hex[:8]


def _remove_worktree(cache: Path, tree: Path, link: Path) -> None:
    if link.is_symlink():  # the link to the state directory goes first, never what it names
        link.unlink()
    _call(cache, "worktree", "remove", "--force", str(tree))
    shutil.rmtree(tree, ignore_errors=True)
    _call(cache, "worktree", "prune")


def _check_on_branch(cache: Path, full: str, branch: str, source: str) -> None:
    """Refuse commit ``full`` unless it is on (an ancestor of, or equal to) ``branch`` of the cache's origin."""
    error = _fetch(cache, f"+refs/heads/{branch}:refs/remotes/origin/{branch}", depth=False)
    if error:
        raise InputError(
            f"cannot read branch {branch} of {_redact(source)} to check commit {full[:12]}: {error}",
            "check project.release_branch in opcd.toml and that this machine can read the repository",
        )
    done = _call(cache, "merge-base", "--is-ancestor", full, f"refs/remotes/origin/{branch}")
    if done is None or done.returncode:
        raise InputError(
            f"commit {full[:12]} is not on branch {branch} of {_redact(source)}",
            f"deploy only reviewed commits: merge it into {branch} first (project.release_branch)",
        )


def _clean_head(top: Path, sha: str) -> str | None:
    """The checkout's full HEAD when it is commit ``sha`` and no tracked file differs from it, else None."""
    head = _resolve(top, "HEAD")
    if head is None or not head.startswith(sha):
        return None
    status = _call(top, "status", "--porcelain", "--untracked-files=no")
    return head if status is not None and status.returncode == 0 and not status.stdout.strip() else None


@contextmanager
def commit_tree(
    directory: Path, sha: str, repository: str | None, state_dir: Path, release_branch: str | None = None
) -> Iterator[tuple[Path, str]]:
    """``directory`` as it is in commit ``sha`` (in a worktree of that commit), and the commit's full sha.

    The worktree's ``.opcd`` beside ``directory`` links to ``state_dir`` (the sandbox's endpoints,
    the build cache). ``directory`` itself, with ``sha`` as given, when it lies in a tree this
    process materialized for that commit, or when it is in no git checkout and no ``repository``
    is given (nothing to fetch from: the directory is what gets built, and the log says so).

    With ``release_branch`` (a deploy): the commit must be on that branch of the repository, and a
    directory with nothing to fetch from is refused. Without it (a plan, a check of a pull request):
    a checkout whose HEAD is ``sha`` with no tracked change is used as it is, fetching nothing (a
    pull request's runner has no credentials to fetch with).
    """
    check_git_sha(sha)
    directory = directory.resolve()
    known = _materialized(directory)
    if known is not None and known[0].startswith(sha):
        if release_branch is not None:
            with _locked(known[1]):
                origin = (_git(known[1], "config", "--get", "remote.origin.url") or "").strip()
                _check_on_branch(known[1], known[0], release_branch, origin)
        yield directory, known[0]
        return
    top_out = _git(directory, "rev-parse", "--show-toplevel")
    top = Path(top_out.strip()).resolve() if top_out else None
    if release_branch is None and top is not None and (head := _clean_head(top, sha)) is not None:
        run_logger("opcd.git").info("Using the checkout %s as it is: its HEAD is commit %s", top, head[:12])
        yield directory, head
        return
    source = _source(repository, directory, top)
    if source is None and release_branch is not None:
        raise InputError(
            f"cannot deploy commit {sha}: {directory} is in no git checkout and opcd.toml names no project.repository",
            "set project.repository in opcd.toml, or run from a git checkout of the project",
        )
    if source is None:
        run_logger("opcd.git").warning(
            "%s is in no git checkout and opcd.toml names no project.repository: building it as it is, as commit %s",
            directory, sha,
        )  # fmt: skip
        yield directory, sha
        return
    state = state_dir.resolve()
    cache = state / "git" / "cache.git"
    relative = directory.relative_to(top) if top is not None else Path()
    started = time.monotonic()
    with _locked(cache):
        _prepare(cache, source)
        full = _fetch_commit(cache, sha, source)
        if release_branch is not None:
            _check_on_branch(cache, full, release_branch, source)
        tree = state / "commits" / f"{full[:12]}-{_run_key()}"
        link = tree / relative / ".opcd"
        if tree.exists():  # left by a run that was killed: made again
            _remove_worktree(cache, tree, link)
        added = _call(cache, "worktree", "add", "--detach", str(tree), full)
    try:
        head = (_git(tree, "rev-parse", "HEAD") or "").strip()
        if added is None or added.returncode or head != full:
            why = (added.stderr.strip().splitlines() or ["?"])[-1] if added is not None else "git did not answer"
            raise InputError(f"cannot check out commit {full[:12]} (HEAD {head[:12] or 'none'}): {why}")
        target = tree / relative
        if not target.is_dir():
            raise InputError(f"commit {full[:12]} has no directory {relative}", "check the sha and the checkout")
        if link.exists() or link.is_symlink():
            raise InputError(
                f"commit {full[:12]} tracks {relative / '.opcd'}, opcd's local state",
                "remove it from the repository (git rm -r --cached .opcd) and list .opcd/ in .gitignore",
            )
        link.symlink_to(state, target_is_directory=True)
        _TREES[tree] = (full, cache)
        run_logger("opcd.git").info(
            "Building commit %s from a worktree of it (%s, fetched from %s) in %.1f s",
            full[:12], tree, _redact(source), time.monotonic() - started,
        )  # fmt: skip
        yield target, full
    finally:
        _TREES.pop(tree, None)
        with _locked(cache):
            _remove_worktree(cache, tree, link)


@contextmanager
def commit_config(
    config_path: str | None, git_sha: str | None, *, release: bool = True
) -> Iterator[tuple[str | None, str | None]]:
    """(opcd.toml, git sha) for a flow given ``git_sha``: opcd.toml in a worktree of the commit, its full sha.

    The opcd.toml written there is the trusted one, ``config_path`` (the flow code's checkout),
    not the commit's: a commit supplies sources and the Terraform module, never its own approval
    gate, approvers or AWS account. Pass both to the tasks and child flows: they load that
    opcd.toml, so every source, sample event and Terraform module is that commit's, while the
    state directory stays the worker's (the worktree's ``.opcd`` links to it). Without a sha, or
    where :func:`commit_tree` uses the directory as it is: the path as given. ``release`` (every
    flow that changes something): the commit must be on ``project.release_branch``.
    """
    if git_sha is None:
        yield config_path, None
        return

    check_git_sha(git_sha)
    file = config_file(config_path).resolve()
    config = load_config(file)
    branch = config.project.release_branch if release else None
    with commit_tree(file.parent, git_sha, config.project.repository, config.state_dir(), branch) as (directory, full):
        if directory == file.parent:  # the directory as it is (or a tree materialized with the trusted copy)
            yield config_path, full
            return
        trusted = directory / file.name
        if trusted.is_symlink():  # a commit's symlink must not redirect the write
            trusted.unlink()
        trusted.write_bytes(file.read_bytes())
        yield str(trusted), full
