"""A flow given a commit builds that commit, whatever the worker's checkout holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.commits import built_from, checkout_behind, commit, git
from tests.conftest import Project, start_in_thread, wait_for_pending


def test_a_release_from_a_checkout_one_commit_behind_builds_and_records_the_commit_given(
    project: Project, prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from flows.release import release

    checkout = tmp_path_factory.mktemp("worker") / "checkout"
    first, second = checkout_behind(project, checkout)

    summary = release(
        version=second[:12], git_sha=second, components=["worker"], environments=["dev"],
        config_path=str(checkout / "opcd.toml"),
    )  # fmt: skip

    assert summary["outcome"] == "released" and summary["git_sha"] == second
    assert built_from(project, "worker", second[:12]) == (second, True)  # B's source, recorded as B
    record = project.ledger("dev", "worker")
    assert (record["outcome"], record["git_sha"], record["version"]) == ("deployed", second, second[:12])
    assert git(checkout, "rev-parse", "HEAD") == first  # the checkout itself untouched, and no worktree left
    assert not list((checkout / ".opcd" / "commits").iterdir())


def test_a_commit_that_cannot_be_fetched_is_refused_before_anything_changes(
    project: Project, prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    checkout = tmp_path_factory.mktemp("worker") / "checkout"
    checkout_behind(project, checkout)
    before = project.live("outreachpass-worker-dev")

    code, out, err = project.cli("--config", str(checkout / "opcd.toml"), "release", "--version", "v9",
                                 "--git-sha", "ab" * 20, "--component", "worker", "--env", "dev")  # fmt: skip

    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: commit {'ab' * 20} cannot be fetched from {project.root}: "), line
    assert project.live("outreachpass-worker-dev") == before


def test_without_a_commit_the_checkout_is_built_as_it_is(tmp_path: Path) -> None:
    from tasks.git import commit_config

    with commit_config(str(tmp_path / "opcd.toml"), None) as (path, sha):
        assert (path, sha) == (str(tmp_path / "opcd.toml"), None)


def test_a_commit_cannot_lift_the_gate_of_the_checkout_that_runs_it(
    project: Project, prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from flows.release import release
    from tasks.approval import answer, find_waiting

    checkout = tmp_path_factory.mktemp("worker") / "checkout"
    checkout_behind(project, checkout)
    gate = 'approval = { approvers = ["alice", "bob"], timeout = "120s", poll_interval = "1s" }'
    project.set_config(gate, "approval = false")  # the commit's own opcd.toml: prod without approval
    ungated = commit(project.root, "C: prod needs no approval")
    before = project.live("outreachpass-worker-prod")

    run = start_in_thread(
        release, version="v-c", git_sha=ungated, components=["worker"], environments=["dev", "prod"],
        config_path=str(checkout / "opcd.toml"),
    )  # fmt: skip

    waiting = wait_for_pending(run)  # the gate of the worker's checkout, not the commit's
    assert waiting["environment"] == "prod" and waiting["approvers"] == ["alice", "bob"]
    answer(find_waiting(waiting["id"]), False, "alice", "not through a commit's own gate")
    run.result(timeout=120)
    assert project.live("outreachpass-worker-prod") == before
    assert project.ledger("dev", "worker")["git_sha"] == ungated  # the commit's sources were what dev got
