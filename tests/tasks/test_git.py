"""Which components a release picks: those whose source changed since the commit live in prod."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import Project


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


def live_at(project: Project, component: str, sha: str | None) -> None:
    body = json.dumps({"component": component, "outcome": "deployed", "git_sha": sha})
    project.client("s3").put_object(
        Bucket="outreachpass-artifacts", Key=f"ledger/prod/{component}/live.json", Body=body.encode()
    )


def test_only_changed_components_are_released(project: Project) -> None:
    from flows.release import choose_components
    from opcd.aws import resolve_target
    from opcd.config import load_config
    from tasks.git import changed_paths

    git(project.root, "init", "-q")
    first = commit(project.root, "v1")
    (project.worker / "worker.py").write_text((project.worker / "worker.py").read_text() + "\n# changed\n")
    second = commit(project.root, "worker changed")
    config = load_config(project.config_path)
    target = resolve_target(config.state_dir(), config.project.region)

    # nothing in the ledger: every component's live commit is unknown, all are released
    chosen, why = choose_components(config, target, None, second, "prod")
    assert chosen == ["backend", "worker", "frontend"] and "live commit in prod unknown" in why
    for component in ("backend", "worker", "frontend"):
        live_at(project, component, first)
    chosen, why = choose_components(config, target, None, second, "prod")
    assert chosen == ["worker"], why
    assert f"backend: unchanged since {first[:12]}, skipped" in why

    live_at(project, "frontend", "0" * 40)  # a commit this checkout does not have: assume changed
    assert choose_components(config, target, None, second, "prod")[0] == ["worker", "frontend"]
    assert choose_components(config, target, ["backend"], second, "prod") == (["backend"], "as asked")
    assert choose_components(config, target, None, None, "prod")[0] == ["backend", "worker", "frontend"]
    assert changed_paths(project.root / "src", first, second) == [project.worker / "worker.py"]
    assert changed_paths(project.root.parent, first, second) is None  # not a git checkout: git cannot tell


def test_the_tree_of_another_commit_is_a_temporary_worktree(tmp_path: Path) -> None:
    import pytest

    from opcd.errors import InputError
    from tasks.git import tree_of_commit

    # given: a checkout of main whose sub-directory app/ changed after the pull request's commit
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "a.txt").write_text("pull request\n")
    git(tmp_path, "init", "-q")
    pr_head = commit(tmp_path, "pr")
    (tmp_path / "app" / "a.txt").write_text("main\n")
    main = commit(tmp_path, "main")

    # then: the checkout's own commit (or none) is the checkout itself; another is a worktree, removed after
    with tree_of_commit(tmp_path / "app", main[:12]) as same, tree_of_commit(tmp_path / "app", None) as none:
        assert same == none == tmp_path / "app"
    with tree_of_commit(tmp_path / "app", pr_head) as tree:
        assert tree != tmp_path / "app" and (tree / "a.txt").read_text() == "pull request\n"
    assert not tree.exists()
    assert (tmp_path / "app" / "a.txt").read_text() == "main\n"  # the checkout itself untouched
    assert len(git(tmp_path, "worktree", "list").splitlines()) == 1  # the worktree is gone from git too
    with pytest.raises(InputError, match="is not in the checkout"), tree_of_commit(tmp_path, "ab" * 20):
        pass
