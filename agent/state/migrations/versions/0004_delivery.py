"""Delivery: every email/SMS send of a link, and the smart-reminder steps taken per link.

Revision ID: 0004
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0004"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "sends",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("link_id", sa.String(32), sa.ForeignKey("links.id"), nullable=False, index=True),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("sent_at", lt.UTCDateTime, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("provider_message_id", sa.String(191)),
    )
    op.create_table(
        "reminders",
        sa.Column("link_id", sa.String(32), sa.ForeignKey("links.id"), primary_key=True),
        sa.Column("step", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_at", lt.UTCDateTime, nullable=False),
        sa.Column("updated_at", lt.UTCDateTime, nullable=False),
        sa.Column("send_id", sa.Integer),
    )


def downgrade() -> None:
    op.drop_table("reminders")
    op.drop_table("sends")
