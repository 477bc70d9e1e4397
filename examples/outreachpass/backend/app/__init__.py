"""OutreachPass API: a small HTTP API (API Gateway HTTP API, payload v2) on AWS Lambda.

Routes:
    GET  /health            liveness, with the running build's version
    GET  /passes            passes issued so far (newest first)
    POST /passes            issue a pass: {"email": "...", "event": "..."}
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from app.schema import passes

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@cache
def build_info() -> dict[str, Any]:
    """What opcd wrote into the package when it was built (component, version, git sha)."""
    path = Path(__file__).resolve().parent.parent / "BUILD_INFO.json"
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        info = {"version": "dev"}
    return info


@cache
def engine() -> sa.Engine:
    return sa.create_engine(os.environ["DATABASE_URL"])


def _response(status: int, body: Any) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body, default=str),
    }


def health() -> dict[str, Any]:
    return _response(200, {"status": "ok", "version": build_info().get("version")})


def list_passes() -> dict[str, Any]:
    with engine().connect() as conn:
        rows = conn.execute(sa.select(passes).order_by(passes.c.id.desc()).limit(50)).mappings()
        return _response(200, {"passes": [dict(row) for row in rows]})


def create_pass(body: str | None) -> dict[str, Any]:
    try:
        data = json.loads(body or "")
    except ValueError:
        return _response(400, {"error": "body must be JSON"})
    email, event = data.get("email", ""), data.get("event", "")
    if not _EMAIL.match(str(email)) or not event:
        return _response(400, {"error": "email and event are required"})
    with engine().begin() as conn:
        new_id = conn.execute(sa.insert(passes).values(email=email, event=event)).inserted_primary_key
    return _response(201, {"id": new_id[0] if new_id else None, "email": email, "event": event})


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    http = event.get("requestContext", {}).get("http", {})
    method, path = http.get("method", "GET"), event.get("rawPath", "/")
    if path == "/health" and method == "GET":
        return health()
    if path == "/passes" and method == "GET":
        return list_passes()
    if path == "/passes" and method == "POST":
        body = event.get("body")
        if body and event.get("isBase64Encoded"):
            import base64

            body = base64.b64decode(body).decode()
        return create_pass(body)
    return _response(404, {"error": f"no route for {method} {path}"})
