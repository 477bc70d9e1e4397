"""GitHub's REST API through httpx: commit statuses and one PR comment kept up to date.

The token is ``GITHUB_TOKEN`` (what GitHub Actions provides) or the Prefect Secret block
``github-token``; ``GITHUB_API_URL`` (set by Actions, also for GitHub Enterprise) picks the API for
reports (statuses, PR comments), which prove nothing. Verifying an approval names its API itself,
from opcd.toml (``approval.github_api``): a flow run can set its environment, and a fake GitHub
there could forge an approval and receive the worker's token.
The token is sent only in the Authorization header and never logged.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from prefect import task
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd.errors import InputError

API = "https://api.github.com"
SECRET_BLOCK = "github-token"
_ACTIONS_READ = "the run does not exist there, or the token lacks `actions: read` on the repository"


def github_token() -> str | None:
    token = os.environ.get("GITHUB_TOKEN")
    if token:
        return token
    try:
        value = Secret.load(SECRET_BLOCK).get()  # type: ignore[union-attr]
    except Exception:  # no block: not configured
        return None
    return str(value) if value else None


class GitHub:
    def __init__(self, token: str, api_url: str | None = None, transport: httpx.BaseTransport | None = None) -> None:
        # Without api_url, GITHUB_API_URL: fine for reports (Actions sets it, also for GitHub Enterprise),
        # never for what must be trusted (approvals pass opcd.toml's address).
        self._http = httpx.Client(
            base_url=(api_url or os.environ.get("GITHUB_API_URL") or API).rstrip("/"),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "opcd",
            },
            timeout=30,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, hint: str | None = None, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code in (401, 403, 404):
            raise InputError(
                f"GitHub answered {response.status_code} to {method} {path}",
                hint or "the token needs `statuses: write` and `pull-requests: write` on the repository",
            )
        response.raise_for_status()
        return response.json() if response.content else None

    def set_status(self, repo: str, sha: str, context: str, state: str, description: str, url: str | None) -> None:
        body = {"state": state, "context": context, "description": description[:140]}
        if url:
            body["target_url"] = url
        self._request("POST", f"/repos/{repo}/statuses/{sha}", json=body)

    def workflow_run(self, repo: str, run_id: int) -> dict[str, Any]:
        """``GET /repos/{repo}/actions/runs/{run_id}``: the run (repository, path, event, display_title, created_at)."""
        run: dict[str, Any] = self._request("GET", f"/repos/{repo}/actions/runs/{run_id}", hint=_ACTIONS_READ)
        return run

    def run_approvals(self, repo: str, run_id: int) -> list[dict[str, Any]]:
        """``GET /repos/{repo}/actions/runs/{run_id}/approvals``: the run's review history (its environments'
        required reviewers): state, environments, user, comment."""
        reviews: list[dict[str, Any]] = self._request(
            "GET", f"/repos/{repo}/actions/runs/{run_id}/approvals", hint=_ACTIONS_READ
        )
        return reviews

    def upsert_comment(self, repo: str, number: int, marker: str, body: str) -> tuple[str, int]:
        """Edit the comment carrying ``marker`` or create it: (``created``/``updated``, comment id)."""
        page = 1
        while True:
            comments = self._request(
                "GET", f"/repos/{repo}/issues/{number}/comments", params={"per_page": 100, "page": page}
            )
            for comment in comments:
                if marker in (comment.get("body") or ""):
                    self._request("PATCH", f"/repos/{repo}/issues/comments/{comment['id']}", json={"body": body})
                    return "updated", int(comment["id"])
            if len(comments) < 100:
                break
            page += 1
        created = self._request("POST", f"/repos/{repo}/issues/{number}/comments", json={"body": body})
        return "created", int(created["id"])


@task(name="report-to-github", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def report_to_github(
    repo: str, number: int | None, sha: str | None, statuses: list[tuple[str, str, str]], comment: str, marker: str,
    run_url: str | None,
) -> str:  # fmt: skip
    """One commit status per check on ``sha``; the report as the PR's one opcd comment."""
    token = github_token()
    if not token:
        get_run_logger().warning("No GITHUB_TOKEN (nor Secret block %r): the report stays in this run", SECRET_BLOCK)
        return "not reported (no token)"
    client = GitHub(token)
    try:
        if sha:
            for context, state, description in statuses:
                client.set_status(repo, sha, context, state, description, run_url)
        if number is not None:
            action, comment_id = client.upsert_comment(repo, number, marker, comment)
            get_run_logger().info("PR #%s comment %s (%s)", number, action, comment_id)
            return action
        return "statuses only"
    finally:
        client.close()
