"""A local stand-in for the parts of GitHub's REST API that opcd calls, recording every request.

Commit statuses (``POST /repos/{repo}/statuses/{sha}``) and issue comments (list, create, edit)
answer as GitHub documents them, with the JSON fields opcd reads (``id``, ``body``). Workflow runs
(``GET /repos/{repo}/actions/runs/{run_id}``) and their review history ("get the review history for a
workflow run", ``GET /repos/{repo}/actions/runs/{run_id}/approvals``) answer with the fields of
GitHub's ``workflow-run`` and ``environment-approvals`` schemas; a run asked for under another
repository than its own is 404, as on GitHub.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class GitHubStub:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []  # (method, path with query, JSON body)
        self.comments: dict[int, dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.authorization: set[str] = set()
        self.runs: dict[tuple[str, int], dict[str, Any]] = {}  # (owner/name, run id) -> workflow-run
        self.reviews: dict[tuple[str, int], list[dict[str, Any]]] = {}  # -> environment-approvals
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length)) if length else None
                stub.requests.append((method, self.path, body))
                stub.authorization.add(self.headers.get("authorization", ""))
                path = urlsplit(self.path).path
                if method == "POST" and re.fullmatch(r"/repos/[^/]+/[^/]+/statuses/[0-9a-f]+", path):
                    stub.statuses.append(body)
                    return self._answer(201, {"id": len(stub.statuses), **body})
                if match := re.fullmatch(r"/repos/[^/]+/[^/]+/issues/(\d+)/comments", path):
                    if method == "GET":
                        listed = [c for c in stub.comments.values() if c["issue"] == int(match[1])]
                        return self._answer(200, [{"id": c["id"], "body": c["body"]} for c in listed])
                    comment_id = 1000 + len(stub.comments)
                    stub.comments[comment_id] = {"id": comment_id, "issue": int(match[1]), "body": body["body"]}
                    return self._answer(201, {"id": comment_id, "body": body["body"]})
                if (match := re.fullmatch(r"/repos/[^/]+/[^/]+/issues/comments/(\d+)", path)) and method == "PATCH":
                    stub.comments[int(match[1])]["body"] = body["body"]
                    return self._answer(200, {"id": int(match[1]), "body": body["body"]})
                match = re.fullmatch(r"/repos/([^/]+/[^/]+)/actions/runs/(\d+)(/approvals)?", path)
                if match and method == "GET" and (match[1], int(match[2])) in stub.runs:
                    key = (match[1], int(match[2]))
                    return self._answer(200, stub.reviews[key] if match[3] else stub.runs[key])
                self._answer(404, {"message": "Not Found"})

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PATCH(self) -> None:  # noqa: N802
                self._handle("PATCH")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add_run(
        self, repo: str, run_id: int, title: str, reviews: Sequence[tuple[str, str, str, str]] = (),
        created_at: datetime | None = None, path: str = ".github/workflows/approve.yml",
        event: str = "workflow_dispatch", full_name: str | None = None,
    ) -> None:  # fmt: skip
        """A workflow run of ``repo`` (created now unless told) and its reviews: (state, login, environment, comment).

        ``full_name`` makes the run's own ``repository`` another one than the path it is served under
        (what a renamed or transferred repository's redirect target would say).
        """
        owner, name = (full_name or repo).split("/")
        repository = {"id": 1296269, "name": name, "full_name": f"{owner}/{name}", "owner": {"login": owner}}
        created = (created_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.runs[(repo, run_id)] = {
            "id": run_id, "name": "approve", "display_title": title, "path": path, "event": event,
            "status": "in_progress", "conclusion": None, "run_attempt": 1, "workflow_id": 159038,
            "head_branch": "main", "head_sha": "4d3c2b1a" * 5, "created_at": created, "updated_at": created,
            "run_started_at": created, "html_url": f"https://github.com/{repo}/actions/runs/{run_id}",
            "actor": {"login": "someone"}, "triggering_actor": {"login": "someone"},
            "repository": repository, "head_repository": repository,
        }  # fmt: skip
        self.reviews[(repo, run_id)] = [
            {
                "state": state, "comment": comment, "user": {"login": login, "id": 583231, "type": "User"},
                "environments": [{
                    "id": 161088068, "node_id": "EN_kwDOA", "name": environment,
                    "url": f"https://api.github.com/repos/{repo}/environments/{environment}",
                    "html_url": f"https://github.com/{repo}/deployments/activity_log?environments_filter={environment}",
                    "created_at": created, "updated_at": created,
                }],
            }
            for state, login, environment, comment in reviews
        ]  # fmt: skip

    def start(self) -> GitHubStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def serving(monkeypatch: Any, token: str = "ghs_worker_token") -> Iterator[GitHubStub]:
    """A started stand-in that opcd's GitHub client reaches with ``token`` (``GITHUB_TOKEN``).

    Reports find it through ``GITHUB_API_URL``; approvals are verified only at opcd.toml's
    ``approval.github_api``, which a test sets to ``stub.url``.
    """
    stub = GitHubStub().start()
    monkeypatch.setenv("GITHUB_TOKEN", token)
    monkeypatch.setenv("GITHUB_API_URL", stub.url)
    try:
        yield stub
    finally:
        stub.stop()
