"""GitHub's REST API over real HTTP, against the local stand-in of tests/github_stub.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opcd.errors import InputError
from tasks.github import GitHub, github_token, report_to_github
from tests.github_stub import GitHubStub, serving
from tests.tasks.conftest import logged

SHA = "4d3c2b1a" * 5
MARKER = "<!-- opcd-report -->"


@pytest.fixture
def no_secret_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Prefect Secret block (loading one would need a Prefect server)."""
    from prefect.blocks.system import Secret

    def absent(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("Unable to find block document named github-token")

    monkeypatch.setattr(Secret, "load", absent)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, no_secret_block: None) -> Iterator[GitHubStub]:
    with serving(monkeypatch) as started:
        yield started


def report(number: int | None = 7, sha: str | None = SHA, comment: str = f"{MARKER}\nall green") -> str:
    statuses = [("opcd/tests", "success", "42 passed"), ("opcd/lint", "failure", "x" * 200)]
    action: str = report_to_github.fn("octo/op", number, sha, statuses, comment, MARKER, "https://prefect/run/1")
    return action


def test_statuses_and_one_comment_reach_github_with_the_token(stub: GitHubStub, run_log: Any) -> None:
    assert report() == "created"
    assert stub.statuses == [
        {
            "state": "success",
            "context": "opcd/tests",
            "description": "42 passed",
            "target_url": "https://prefect/run/1",
        },
        {"state": "failure", "context": "opcd/lint", "description": "x" * 140, "target_url": "https://prefect/run/1"},
    ]
    assert [c["body"] for c in stub.comments.values()] == [f"{MARKER}\nall green"]
    assert stub.authorization == {"Bearer ghs_worker_token"}
    assert logged(run_log) == ["PR #7 comment created (1000)"]


def test_the_comment_is_edited_not_repeated(stub: GitHubStub, run_log: Any) -> None:
    stub.comments[999] = {"id": 999, "issue": 7, "body": "someone else's comment"}
    report()
    assert report(comment=f"{MARKER}\nnow red") == "updated"
    mine = [c for c in stub.comments.values() if MARKER in c["body"]]
    assert [c["body"] for c in mine] == [f"{MARKER}\nnow red"]
    assert stub.comments[999]["body"] == "someone else's comment"
    assert ("PATCH", f"/repos/octo/op/issues/comments/{mine[0]['id']}", {"body": f"{MARKER}\nnow red"}) in stub.requests


def test_without_a_pull_request_only_statuses_are_set(stub: GitHubStub, run_log: Any) -> None:
    assert report(number=None) == "statuses only"
    assert len(stub.statuses) == 2 and not stub.comments


def test_without_a_token_nothing_is_sent_and_the_run_says_so(
    monkeypatch: pytest.MonkeyPatch, no_secret_block: None, run_log: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    assert github_token() is None
    assert report() == "not reported (no token)"
    assert logged(run_log, logging.WARNING) == [
        "No GITHUB_TOKEN (nor Secret block 'github-token'): the report stays in this run"
    ]


def test_a_refusal_is_one_line_naming_the_permission(stub: GitHubStub) -> None:
    client = GitHub("ghs_worker_token")  # GITHUB_API_URL: the stand-in
    try:
        with pytest.raises(InputError) as caught:
            client.workflow_run("octo/op", 404404)
        assert str(caught.value) == (
            "GitHub answered 404 to GET /repos/octo/op/actions/runs/404404 — the run does not exist there,"
            " or the token lacks `actions: read` on the repository"
        )
    finally:
        client.close()


def test_a_server_error_is_raised_for_the_tasks_retries() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, json={"message": "bad gateway"})

    client = GitHub("t", api_url="https://github.example/api/v3/", transport=httpx.MockTransport(answer))
    with pytest.raises(httpx.HTTPStatusError, match="502 Bad Gateway"):
        client.set_status("octo/op", SHA, "opcd/tests", "success", "ok", None)
    client.close()


def test_a_forbidden_status_says_which_permissions_the_token_needs() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(403, json={"message": "Resource not accessible by integration"})

    client = GitHub("t", api_url="https://github.example/api/v3/", transport=httpx.MockTransport(answer))
    with pytest.raises(InputError) as caught:
        client.set_status("octo/op", SHA, "opcd/tests", "success", "ok", None)
    client.close()
    assert str(caught.value) == (
        f"GitHub answered 403 to POST /repos/octo/op/statuses/{SHA}"
        " — the token needs `statuses: write` and `pull-requests: write` on the repository"
    )
    assert str(seen[0].url) == f"https://github.example/api/v3/repos/octo/op/statuses/{SHA}"
    assert seen[0].headers["x-github-api-version"] == "2022-11-28"
