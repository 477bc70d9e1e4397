"""Bring the database at $DATABASE_URL to the newest schema: ``python -m app.migrate``.

Migrations must stay backward compatible with the previous release: a rollback moves code, not
schema.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("DATABASE_URL is not set", file=sys.stderr)
        return 2
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
    with create_engine(url).connect() as conn:
        revision = MigrationContext.configure(conn).get_current_revision()
    print(f"database schema at revision {revision}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
