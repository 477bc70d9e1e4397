"""The example backend's own tests: migrations, then the API routes against SQLite."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def event(method: str, path: str, body: Any = None) -> dict[str, Any]:
    return {
        "rawPath": path,
        "requestContext": {"http": {"method": method, "path": path}},
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    import app as module
    from app import migrate

    module.engine.cache_clear()
    assert migrate.main() == 0
    yield module
    module.engine().dispose()
    module.engine.cache_clear()


def test_health_names_the_version(app: Any) -> None:
    answer = app.handler(event("GET", "/health"), None)
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"]) == {"status": "ok", "version": "dev"}


def test_issue_and_list_passes(app: Any) -> None:
    created = app.handler(event("POST", "/passes", {"email": "ada@example.org", "event": "launch"}), None)
    assert created["statusCode"] == 201
    listed = json.loads(app.handler(event("GET", "/passes"), None)["body"])["passes"]
    assert [(p["email"], p["event"]) for p in listed] == [("ada@example.org", "launch")]


def test_bad_requests(app: Any) -> None:
    assert app.handler(event("POST", "/passes", {"email": "nope"}), None)["statusCode"] == 400
    assert app.handler({**event("POST", "/passes"), "body": "{"}, None)["statusCode"] == 400
    assert app.handler(event("GET", "/nowhere"), None)["statusCode"] == 404


def test_migrate_needs_a_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import migrate

    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert migrate.main() == 2
