"""A local stand-in for Slack's incoming webhooks and Web API, for the tests and ``make demo``.

It speaks the parts of the real protocol opcd uses: ``POST /webhook/...`` with a JSON body answered
``ok`` (as Slack's webhooks do), and ``POST /api/chat.postMessage`` answered with
``{"ok": true, "ts": ...}``. ``fail_next`` makes the next requests answer with given statuses (a
429 carries ``Retry-After: 0``), to exercise retries.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class SlackSink:
    """Records every message; with ``echo``, also prints each one's text as it arrives."""

    def __init__(self, echo: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.requests = 0
        self.fail_next: list[int] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with sink._lock:
                    sink.requests += 1
                    failure = sink.fail_next.pop(0) if sink.fail_next else None
                if failure:
                    self.send_response(failure)
                    if failure == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b"rate_limited" if failure == 429 else b"internal_error")
                    return
                if "json" in self.headers.get("content-type", ""):
                    payload = json.loads(body or b"{}")
                else:
                    payload = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                    if isinstance(payload.get("blocks"), str):
                        payload["blocks"] = json.loads(payload["blocks"])
                with sink._lock:
                    ts = f"1700000000.{len(sink.messages):06d}"
                    sink.messages.append({"path": self.path, "auth": self.headers.get("authorization"), **payload})
                if echo:
                    print(f"  [slack] {payload.get('text', '')}", flush=True)
                if self.path.startswith("/api/"):
                    answer = json.dumps({"ok": True, "ts": ts, "channel": payload.get("channel")}).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                else:
                    answer = b"ok"
                    self.send_response(200)
                    self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhook/T0SANDBOX/B0SANDBOX/sandbox-webhook-token"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def texts(self) -> list[str]:
        return [str(m.get("text", "")) for m in self.messages]

    def start(self) -> SlackSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
