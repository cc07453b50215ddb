"""Sync quarantine: source rows that could not be used (a bad amount), kept aside while the rest syncs; and the
instance lease (holder, fencing token, expiry) that an active/standby pair on a PostgreSQL store takes turns on.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0007"
down_revision = "0006"


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


    op.create_table(
        "agent_lease",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.Text),
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("acquired_at", lt.UTCDateTime),
        sa.Column("expires_at", lt.UTCDateTime),
    )


def downgrade() -> None:
    op.drop_table("agent_lease")
    op.drop_table("sync_quarantine")
