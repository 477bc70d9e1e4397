"""OutreachPass worker: a nightly digest of the passes issued, fired by an EventBridge rule.

It reads the passes created in the last ``since_hours`` (from the event's input) from the
backend's database, prints the digest (its log), stores it in ``digests`` and returns it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa


@cache
def engine() -> sa.Engine:
    return sa.create_engine(os.environ["DATABASE_URL"])


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    since_hours = int((event or {}).get("since_hours", 24))
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=since_hours)
    meta = sa.MetaData()
    with engine().begin() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        if "passes" not in tables:
            return {
                "status": "ok",
                "since_hours": since_hours,
                "passes": 0,
                "by_event": {},
                "note": "no passes table yet",
            }
        passes = sa.Table("passes", meta, autoload_with=conn)
        rows = conn.execute(
            sa.select(passes.c.event, sa.func.count()).where(passes.c.created_at >= since).group_by(passes.c.event)
        ).all()
        by_event = {str(name): int(count) for name, count in rows}
        digest = {"status": "ok", "since_hours": since_hours, "passes": sum(by_event.values()), "by_event": by_event}
        if "digests" in tables:
            digests = sa.Table("digests", meta, autoload_with=conn)
            conn.execute(sa.insert(digests).values(body=json.dumps(digest, sort_keys=True)))
    print(json.dumps({"digest": digest}))
    return digest
