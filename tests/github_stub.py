"""A local stand-in for the parts of GitHub's REST API that opcd calls, recording every request.

Commit statuses (``POST /repos/{repo}/statuses/{sha}``) and issue comments (list, create, edit)
answer as GitHub documents them, with the JSON fields opcd reads (``id``, ``body``).
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class GitHubStub:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []  # (method, path with query, JSON body)
        self.comments: dict[int, dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.authorization: set[str] = set()
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

    def start(self) -> GitHubStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
