"""The worker's own test: a digest of the passes in a real SQLite database."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "backend"))


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    import worker as module

    module.engine.cache_clear()
    yield module
    module.engine().dispose()
    module.engine.cache_clear()


def test_no_schema_yet(worker: Any) -> None:
    assert worker.handler({}, None)["note"] == "no passes table yet"


def test_digest_counts_recent_passes_and_is_stored(worker: Any) -> None:
    from app import migrate

    assert migrate.main() == 0
    with worker.engine().begin() as conn:
        for event in ("launch", "launch", "meetup"):
            conn.execute(sa.text("INSERT INTO passes (email, event) VALUES ('a@b.co', :e)"), {"e": event})
    sample = json.loads((HERE / "sample_event.json").read_text())
    digest = worker.handler(sample, None)
    assert digest == {"status": "ok", "since_hours": 24, "passes": 3, "by_event": {"launch": 2, "meetup": 1}}
    with worker.engine().connect() as conn:
        stored = conn.execute(sa.text("SELECT body FROM digests")).scalars().all()
    assert [json.loads(b)["passes"] for b in stored] == [3]
