"""Payment-plan reminders (issue 27): one row per (plan, instalment, step), the email before an instalment is
collected and the one after it failed, each sent at most once by the same rule as a link's reminder steps.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0021"
down_revision = "0020"


def upgrade() -> None:
    op.create_table(
        "plan_reminders",
        sa.Column("plan_id", sa.String(32), sa.ForeignKey("plans.id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("step", sa.String(32), primary_key=True, comment="before (the instalment is coming) or failed"),
        sa.Column("status", sa.String(16), nullable=False, comment="sending, sent, failed, unknown or skipped"),
        sa.Column("due_at", lt.UTCDateTime(), nullable=False),
        sa.Column("updated_at", lt.UTCDateTime(), nullable=False),
        sa.Column("recipient", sa.Text),
        sa.Column("sent_at", lt.UTCDateTime()),
        sa.Column("result", sa.Text, comment="'ok' or the error text"),
        sa.Column("message_id", sa.String(191), comment="the SMTP Message-ID"),
    )


def downgrade() -> None:
    op.drop_table("plan_reminders")
