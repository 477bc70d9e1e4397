"""create the passes table

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "passes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, server_default=sa.func.current_timestamp()),
    )


def downgrade() -> None:
    op.drop_table("passes")
