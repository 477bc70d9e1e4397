"""Which components a release picks: those whose source changed since the commit live in prod."""

from __future__ import annotations

import json
from pathlib import Path

from tests.commits import commit, git
from tests.conftest import Project


def live_at(project: Project, component: str, sha: str | None) -> None:
    body = json.dumps({
        "component": component, "environment": "prod", "action": "deploy", "outcome": "deployed", "version": "v1",
        "git_sha": sha,
    })  # fmt: skip
    project.client("s3").put_object(
        Bucket="outreachpass-artifacts", Key=f"ledger/prod/{component}/live.json", Body=body.encode()
    )


def test_only_changed_components_are_released(project: Project) -> None:
    from flows.plan.build import choose_components
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


def upstream_and_checkout_behind(tmp_path: Path) -> tuple[Path, Path, str, str]:
    """A repository at commits A then B (app/a.txt "one", then "two") and a clone of it left at A."""
    up = tmp_path / "upstream"
    (up / "app").mkdir(parents=True)
    (up / "app" / "a.txt").write_text("one\n")
    git(up, "init", "-q", "-b", "main")
    first = commit(up, "A")
    (up / "app" / "a.txt").write_text("two\n")
    second = commit(up, "B")
    git(tmp_path, "clone", "-q", str(up), "checkout")
    checkout = tmp_path / "checkout"
    git(checkout, "checkout", "-q", first)
    return up, checkout, first, second


def test_a_commit_is_fetched_into_a_worktree_of_its_own_whatever_the_checkout_holds(tmp_path: Path) -> None:
    from tasks.git import commit_tree

    up, checkout, first, second = upstream_and_checkout_behind(tmp_path)
    (checkout / "app" / "a.txt").write_text("edited, never committed\n")
    state = checkout / ".opcd"

    with commit_tree(checkout / "app", second, None, state) as (tree, full):
        assert full == second and tree != checkout / "app"
        assert (tree / "a.txt").read_text() == "two\n"  # the commit's file, not the checkout's
        assert git(tree, "rev-parse", "HEAD") == second
        assert (tree / ".opcd").resolve() == state.resolve()  # the worker's state: sandbox, build cache
        # a child flow of the same run given the same commit (or its short sha) takes the same tree
        with commit_tree(tree, second[:12], None, tree / ".opcd") as (again, same):
            assert again == tree and same == second
    assert not tree.exists() and not list((state / "commits").iterdir())
    assert state.is_dir() and (state / "git" / "cache.git").is_dir()  # only the link was removed, and the cache kept
    assert git(state / "git" / "cache.git", "worktree", "list").count("\n") == 0  # git forgot the worktree too
    assert git(checkout, "rev-parse", "HEAD") == first  # the checkout untouched
    assert (checkout / "app" / "a.txt").read_text() == "edited, never committed\n"

    # a short sha is resolved (from the repository's branches) and checked
    with commit_tree(checkout / "app", second[:8], None, state) as (tree, full):
        assert full == second and (tree / "a.txt").read_text() == "two\n"


def test_a_commit_comes_from_project_repository_else_origin_else_the_checkout(tmp_path: Path) -> None:
    import pytest

    from opcd.errors import InputError
    from tasks.git import commit_tree

    up, checkout, first, second = upstream_and_checkout_behind(tmp_path)
    git(tmp_path, "clone", "-q", str(up), "fork")
    (tmp_path / "fork" / "app" / "a.txt").write_text("fork\n")
    forked = commit(tmp_path / "fork", "C")
    state = tmp_path / "state"

    with pytest.raises(InputError) as refused, commit_tree(checkout / "app", forked, None, state):
        pass  # origin (upstream) has no such commit
    assert str(refused.value).startswith(f"commit {forked} cannot be fetched from {up}: ")
    assert "\n" not in str(refused.value)
    with commit_tree(checkout / "app", forked, "../../fork", state) as (tree, full):  # relative to it
        assert full == forked and (tree / "a.txt").read_text() == "fork\n"

    git(checkout, "remote", "remove", "origin")  # no origin: the checkout's own commits
    with commit_tree(checkout / "app", first, None, state) as (tree, _):
        assert (tree / "a.txt").read_text() == "one\n"

    plain = tmp_path / "plain"  # in no checkout, no repository: built as it is
    plain.mkdir()
    with commit_tree(plain, first, None, state) as (tree, full):
        assert tree == plain and full == first

    # a repository URL's credentials never reach a message
    secret = "https://opcd:s3cr3t-t0ken@127.0.0.1:9/outreachpass.git"  # pragma: allowlist secret
    with pytest.raises(InputError) as refused, commit_tree(checkout / "app", "ab" * 20, secret, state):
        pass
    assert "s3cr3t" not in str(refused.value) and "https://127.0.0.1:9/outreachpass.git" in str(refused.value)


def test_what_changed_is_read_in_a_materialized_tree_whose_cache_lacks_the_base(tmp_path: Path) -> None:
    from tasks.git import changed_paths, commit_tree

    up, checkout, first, second = upstream_and_checkout_behind(tmp_path)
    with commit_tree(checkout, second, None, checkout / ".opcd") as (tree, _):
        assert changed_paths(tree, first, second) == [tree / "app" / "a.txt"]  # A fetched for the diff


def test_a_deploy_takes_only_a_commit_on_the_release_branch(tmp_path: Path) -> None:
    import pytest

    from opcd.errors import InputError
    from tasks.git import commit_tree

    up, checkout, first, second = upstream_and_checkout_behind(tmp_path)
    git(up, "checkout", "-q", "-b", "feature")  # a pushed branch, never merged: the head of a pull request
    (up / "app" / "a.txt").write_text("unreviewed\n")
    unreviewed = commit(up, "C")
    git(up, "checkout", "-q", "main")
    state = tmp_path / "state"

    with pytest.raises(InputError) as refused, commit_tree(checkout / "app", unreviewed, None, state, "main"):
        pass
    assert refused.value.message == f"commit {unreviewed[:12]} is not on branch main of {up}"
    assert not (state / "commits").exists()  # refused before anything was checked out
    for sha in (first, second):  # an ancestor of main, and main's head itself
        with commit_tree(checkout / "app", sha, None, state, "main") as (tree, full):
            assert full == sha and git(tree, "rev-parse", "HEAD") == sha
            with commit_tree(tree, sha, None, state, "main") as (again, _):  # a child flow: checked again
                assert again == tree
    with (
        pytest.raises(InputError, match="cannot read branch trunk of"),
        commit_tree(checkout / "app", second, None, state, "trunk"),
    ):
        pass
    with commit_tree(checkout / "app", unreviewed, None, state) as (tree, _):  # a plan: any commit
        assert (tree / "a.txt").read_text() == "unreviewed\n"


def test_a_deploy_refuses_a_sha_it_cannot_build_from(tmp_path: Path) -> None:
    import pytest

    from opcd.errors import InputError
    from tasks.git import commit_tree

    plain = tmp_path / "plain"  # in no checkout, and no project.repository: nothing names that commit
    plain.mkdir()
    with pytest.raises(InputError) as refused, commit_tree(plain, "1234567", None, tmp_path / "state", "main"):
        pass
    assert refused.value.message.startswith(f"cannot deploy commit 1234567: {plain} is in no git checkout")
    assert "set project.repository in opcd.toml, or run from a git checkout" in str(refused.value)


def test_a_plan_of_the_checkout_at_its_head_fetches_nothing(tmp_path: Path) -> None:
    import pytest

    from opcd.errors import InputError
    from tasks.git import commit_tree

    up, checkout, first, second = upstream_and_checkout_behind(tmp_path)
    git(checkout, "remote", "set-url", "origin", "https://127.0.0.1:9/private.git")  # no credentials here
    (checkout / "untracked.txt").write_text("a build's leftovers\n")
    state = tmp_path / "state"
    with commit_tree(checkout / "app", first[:12], None, state) as (tree, full):
        assert tree == checkout / "app" and full == first  # the checkout itself
    assert not (state / "git").exists()  # no fetch was tried

    (checkout / "app" / "a.txt").write_text("edited\n")  # a tracked change: not that commit any more
    with (
        pytest.raises(InputError, match="cannot be fetched from https://127.0.0.1:9/private.git"),
        commit_tree(checkout / "app", first, None, state),
    ):
        pass
