"""Sync quarantine: source rows that could not be used (a bad amount), kept aside while the rest syncs.

Revision ID: 0007
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0007"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "sync_quarantine",
        sa.Column("entity", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(191), primary_key=True),
        sa.Column("raw_key", sa.Text),
        sa.Column("number", sa.Text),
        sa.Column("field", sa.String(32)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("first_seen", lt.UTCDateTime, nullable=False),
        sa.Column("last_seen", lt.UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sync_quarantine")
