"""An approval verified by GitHub: the proof an answer carries, checked against the stand-in of GitHub's REST API.

tests/flows/test_release.py runs the same checks inside a release that waits at prod's gate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from opcd.config import Approval
from tasks.approval import Proof, Refused, verify_with_github
from tests.github_stub import GitHubStub, serving

REPO = "outreachpass/outreachpass"
FLOW_RUN = "0b5c7e3a-2f4d-4c1e-9a8b-6d7e8f9a0b1c"
OPENED = datetime.now(UTC) - timedelta(minutes=5)  # when the gate opened
APPROVE = f"opcd approve {FLOW_RUN} for prod"  # the run-name of approve.yml


def settings(github_api: str) -> Approval:
    """prod's gate as opcd.toml writes it, asking GitHub at ``github_api``."""
    return Approval.model_validate({
        "approvers": [{"name": "alice", "github": "alice-gh"}, {"name": "bob", "github": "bob-gh"}],
        "verify": "github", "repository": REPO, "github_api": github_api,
    })  # fmt: skip


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubStub]:
    with serving(monkeypatch) as stub:
        yield stub


def check(github: GitHubStub, run: int | None, approved: bool = True, reason: str = "") -> Proof:
    return verify_with_github("prod", settings(github.url), FLOW_RUN, OPENED, run, approved, reason)


def test_an_approval_by_a_required_reviewer_is_recorded_under_their_opcd_name(github: GitHubStub) -> None:
    github.add_run(REPO, 101, APPROVE, [("approved", "Bob-GH", "prod-approval", "ship it")])
    proof = check(github, 101)
    assert proof == Proof(True, "bob", "ship it", f"verified by GitHub: Bob-GH approved run 101 of {REPO}")
    assert check(github, 101, reason="dev looks good").reason == "dev looks good"  # the answer's own reason first
    assert [(m, p) for m, p, _ in github.requests[:2]] == [
        ("GET", f"/repos/{REPO}/actions/runs/101"), ("GET", f"/repos/{REPO}/actions/runs/101/approvals"),
    ]  # fmt: skip
    assert github.authorization == {"Bearer ghs_worker_token"}  # the worker's own token, nothing else


def test_a_reviewers_rejection_is_a_rejection(github: GitHubStub) -> None:
    github.add_run(REPO, 102, APPROVE, [("rejected", "alice-gh", "prod-approval", "not on a Friday")])
    proof = check(github, 102)  # even when the answer said approve
    assert proof == Proof(False, "alice", "not on a Friday", f"verified by GitHub: alice-gh rejected run 102 of {REPO}")
    # `opcd reject --github-run`: the reviewer's why
    assert check(github, 102, approved=False, reason="see GitHub") == proof
    # a reviewer who approved a run titled "reject": the answer is a rejection, checked as such
    github.add_run(REPO, 103, f"opcd reject {FLOW_RUN} for prod", [("approved", "alice-gh", "prod-approval", "")])
    assert check(github, 103, approved=False, reason="freeze").approved is False
    with pytest.raises(Refused, match="alice-gh approved that, not this answer"):
        check(github, 103, approved=True)


@pytest.mark.parametrize(
    ("setup", "refusal"),
    [
        pytest.param({}, "names no approval run", id="no proof (the form, opcd approve)"),
        pytest.param({"run": 999}, f"run 999 of {REPO} could not be checked: GitHub answered 404", id="forged id"),
        pytest.param({"repo": "mallory/fork"}, "could not be checked: GitHub answered 404", id="another repository"),
        pytest.param({"full_name": "mallory/fork"}, "belongs to mallory/fork, not to", id="run of another repository"),
        pytest.param({"path": ".github/workflows/main.yml"}, "not a run of .github/workflows/approve.yml",
                     id="another workflow"),
        pytest.param({"event": "push"}, "is a push run", id="not dispatched"),
        pytest.param({"title": "opcd approve 11111111-2222-3333-4444-555555555555 for prod"},
                     "is titled .*: it is not `opcd approve", id="another flow run"),
        pytest.param({"title": f"opcd approve {FLOW_RUN} for dev"}, "is titled .*: it is not `opcd approve",
                     id="another env"),
        pytest.param({"created_at": OPENED - timedelta(seconds=1)}, "before this approval was asked for",
                     id="older than the pause"),
        pytest.param({"reviews": [("approved", "mallory-gh", "prod-approval", "")]},
                     "reviewed for prod-approval by mallory-gh: not an approver of prod", id="wrong reviewer"),
        pytest.param({"reviews": [("approved", "alice-gh", "dev-approval", "")]},
                     "nobody approved run 104", id="approved for another environment"),
        pytest.param({"reviews": []}, "nobody approved run 104", id="no review"),
    ],
)  # fmt: skip
def test_an_answer_without_valid_proof_is_refused(github: GitHubStub, setup: dict, refusal: str) -> None:  # type: ignore[type-arg]
    github.add_run(
        setup.get("repo", REPO), 104, setup.get("title", APPROVE),
        setup.get("reviews", [("approved", "alice-gh", "prod-approval", "")]),
        created_at=setup.get("created_at"), path=setup.get("path", ".github/workflows/approve.yml"),
        event=setup.get("event", "workflow_dispatch"), full_name=setup.get("full_name"),
    )  # fmt: skip
    with pytest.raises(Refused, match=refusal):
        check(github, setup.get("run", 104) if setup else None)


def test_a_run_of_the_second_the_gate_opened_counts_as_after_it(github: GitHubStub) -> None:
    opened = datetime(2026, 11, 29, 21, 19, 39, 600000, tzinfo=UTC)  # the server's time has microseconds
    github.add_run(REPO, 106, APPROVE, [("approved", "alice-gh", "prod-approval", "")], created_at=opened)
    assert verify_with_github("prod", settings(github.url), FLOW_RUN, opened, 106, True, "").approved
    with pytest.raises(Refused, match="before this approval was asked for"):
        verify_with_github("prod", settings(github.url), FLOW_RUN, opened + timedelta(seconds=1), 106, True, "")


def test_without_a_token_or_with_github_down_the_answer_is_refused(
    github: GitHubStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    github.add_run(REPO, 105, APPROVE, [("approved", "alice-gh", "prod-approval", "")])
    down = settings("http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(Refused, match="could not be checked \\(ConnectError"):
        verify_with_github("prod", down, FLOW_RUN, OPENED, 105, True, "")
    monkeypatch.delenv("GITHUB_TOKEN")
    monkeypatch.setattr("tasks.approval.github_token", lambda: None)  # and no Secret block either
    with pytest.raises(Refused, match="the worker has no GitHub token"):
        check(github, 105)


def test_github_is_asked_where_opcd_toml_says_never_where_the_runs_environment_says(
    github: GitHubStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a run started with --job-variable env='{"GITHUB_API_URL": …}' points at a GitHub of its own that approves
    forger = GitHubStub().start()
    try:
        forger.add_run(REPO, 107, APPROVE, [("approved", "alice-gh", "prod-approval", "")])
        monkeypatch.setenv("GITHUB_API_URL", forger.url)
        with pytest.raises(Refused, match=f"run 107 of {REPO} could not be checked: GitHub answered 404"):
            check(github, 107)  # the configured GitHub knows no such run
        assert forger.requests == [] and forger.authorization == set()  # nor did the worker's token go there
        assert [p for _, p, _ in github.requests] == [f"/repos/{REPO}/actions/runs/107"]
    finally:
        forger.stop()
    assert Approval.model_validate({"approvers": ["alice"]}).github_api == "https://api.github.com"


def test_a_rejection_dispatched_with_approve_in_its_flow_run_input_is_no_approval(github: GitHubStub) -> None:
    # approve.yml dispatched with decision=reject and flow_run="<id> approve": the reviewer approves a rejection
    tampered = f"opcd reject {FLOW_RUN} approve for prod"
    github.add_run(REPO, 108, tampered, [("approved", "alice-gh", "prod-approval", "")])
    for approved in (True, False):
        with pytest.raises(Refused, match=f"run 108 of {REPO} is titled '{tampered}': it is not `opcd approve"):
            check(github, 108, approved=approved, reason="tampered")
    reviews = [("approved", "alice-gh", "prod-approval", "")]
    github.add_run(REPO, 109, f"opcd approve {FLOW_RUN} for prod please", reviews)
    with pytest.raises(Refused, match="is titled"):
        check(github, 109)


def test_the_gate_opened_at_the_first_pause_of_this_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.states import Paused

    from tasks import approval

    @dataclass
    class Run:
        id: str = FLOW_RUN

    @dataclass
    class Context:
        flow_run: Run

    class Client:  # answers as PrefectClient.read_flow_run_states does: the run's states
        def __init__(self, **_: object) -> None:
            pass

        def __enter__(self) -> Client:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def read_flow_run_states(self, run_id: str) -> list[object]:
            return states

    states = [Paused(pause_key=key, timeout_seconds=60) for key in ("approval-prod-eu-1", "approval-prod-1")]
    monkeypatch.setattr(approval.FlowRunContext, "get", classmethod(lambda cls: Context(Run())))
    monkeypatch.setattr(approval, "get_client", Client)
    assert approval.gate_opened("prod") == states[1].timestamp  # prod-eu's earlier pause is not prod's
    assert approval.gate_opened("prod-eu") == states[0].timestamp
    assert approval.gate_opened("dev") is None
    assert [approval.is_gate_key(k, "prod") for k in ("approval-prod-2", "approval-prod-eu-2", "approval-prod-")] == [
        True, False, False,
    ]  # fmt: skip
