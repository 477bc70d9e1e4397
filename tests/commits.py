"""A project under git and a worker's checkout of it one commit behind, for the tests of the exact commit."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

from tests.conftest import Project

MARKER = "# changed in the commit released, not in the worker's checkout"


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=root, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def checkout_behind(project: Project, checkout: Path) -> tuple[str, str]:
    """(A, B): the project committed at A, its worker changed at B (HEAD); ``checkout`` a clone left at A.

    The clone's origin is the project's repository, and its state directory (.opcd) points at the
    same sandbox: a worker's long-lived checkout that nothing updated after the merge of B.
    """
    (project.root / ".gitignore").write_text(".opcd/\ndata/\n*.log\n")
    git(project.root, "init", "-q", "-b", "main")
    first = commit(project.root, "A")
    with (project.worker / "worker.py").open("a") as module:
        module.write(f"\n{MARKER}\n")
    second = commit(project.root, "B: the worker changed")
    git(checkout.parent, "clone", "-q", str(project.root), checkout.name)
    git(checkout, "checkout", "-q", first)
    shutil.copytree(project.root / ".opcd", checkout / ".opcd", ignore=shutil.ignore_patterns("build*", "git"))
    return first, second


def built_from(project: Project, component: str, version: str) -> tuple[str, bool]:
    """(metadata.json's git_sha, whether the stored package holds the released commit's change)."""
    s3 = project.client("s3")
    meta = json.loads(
        s3.get_object(Bucket="outreachpass-artifacts", Key=f"{component}/{version}/metadata.json")["Body"].read()
    )
    package = s3.get_object(Bucket="outreachpass-artifacts", Key=f"{component}/{version}/lambda.zip")["Body"].read()
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        changed = MARKER in archive.read("worker.py").decode()
    return str(meta["git_sha"]), changed


def committed(project: Project) -> str:
    """The project as a git repository (branch main) with everything committed; the commit's sha."""
    (project.root / ".gitignore").write_text(".opcd/\ndata/\n*.log\n")
    git(project.root, "init", "-q", "-b", "main")
    return commit(project.root, "A")
