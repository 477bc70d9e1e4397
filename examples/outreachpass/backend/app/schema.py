"""Tables of the OutreachPass database (the migrations create them)."""

import sqlalchemy as sa

metadata = sa.MetaData()

passes = sa.Table(
    "passes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("event", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, server_default=sa.func.current_timestamp()),
)

digests = sa.Table(
    "digests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, server_default=sa.func.current_timestamp()),
)
