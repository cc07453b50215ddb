"""Links, provider cursors and events, payments and the postings outbox.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0002"
down_revision = "0001"

KEY = sa.String(191)


def upgrade() -> None:
    op.create_table(
        "links",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_ref", sa.String(191)),
        sa.Column("url", sa.Text),
        sa.Column("status", sa.String(24), nullable=False, index=True),
        sa.Column("amount", lt.DecimalText, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("matter_key", KEY, index=True),
        sa.Column("client_key", KEY),
        sa.Column("payer_name", sa.Text),
        sa.Column("payer_email", sa.Text),
        sa.Column("payer_phone", sa.Text),
        sa.Column("invoice_number", sa.Text),
        sa.Column("due_date", sa.Date),
        sa.Column("created_at", lt.UTCDateTime, nullable=False),
        sa.Column("expires_at", lt.UTCDateTime, nullable=False),
        sa.Column("closed_at", lt.UTCDateTime),
        sa.Column("status_reason", sa.Text),
        sa.Column("flagged", sa.Text),
        sa.Column("replaces", sa.String(32)),
        sa.Column("outstanding_key", KEY, unique=True),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
    )
    op.create_table(
        "link_items",
        sa.Column("link_id", sa.String(32), sa.ForeignKey("links.id"), primary_key=True),
        sa.Column("statement_key", KEY, primary_key=True),
        sa.Column("amount", lt.DecimalText, nullable=False),
        sa.Column("explicit", sa.Boolean, nullable=False),
    )
    op.create_table(
        "provider_cursors",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("cursor", sa.Text),
        sa.Column("updated_at", lt.UTCDateTime, nullable=False),
    )
    op.create_table(
        "provider_events",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(191), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("link_ref", sa.String(191)),
        sa.Column("payment_ref", sa.String(191)),
        sa.Column("amount", lt.DecimalText),
        sa.Column("currency", sa.String(3)),
        sa.Column("raw_status", sa.String(64)),
        sa.Column("occurred_at", lt.UTCDateTime, nullable=False),
        sa.Column("received_at", lt.UTCDateTime, nullable=False),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("payment_ref", sa.String(191), nullable=False),
        sa.Column("link_id", sa.String(32), sa.ForeignKey("links.id")),
        sa.Column("amount", lt.DecimalText, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("status_at", lt.UTCDateTime, nullable=False),
        sa.Column("confirmed_at", lt.UTCDateTime),
        sa.Column("created_at", lt.UTCDateTime, nullable=False),
        sa.UniqueConstraint("account", "payment_ref", name="uq_payments_ref"),
    )
    op.create_table(
        "postings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("payment_id", sa.String(32), sa.ForeignKey("payments.id"), nullable=False, index=True),
        sa.Column("reference", sa.String(191), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("statement_key", KEY),
        sa.Column("matter_key", KEY),
        sa.Column("amount", lt.DecimalText, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("next_attempt_at", lt.UTCDateTime),
        sa.Column("note", sa.Text),
        sa.Column("created_at", lt.UTCDateTime, nullable=False),
        sa.Column("updated_at", lt.UTCDateTime, nullable=False),
        sa.Column("posted_at", lt.UTCDateTime),
    )
    op.create_index("ix_postings_state_next", "postings", ["state", "next_attempt_at"])
    op.create_table(
        "file_drops",
        sa.Column("batch", sa.String(32), primary_key=True),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("references", sa.Text, nullable=False),
        sa.Column("written_at", lt.UTCDateTime, nullable=False),
    )
