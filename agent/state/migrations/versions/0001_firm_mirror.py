"""Firm mirror tables, sync checkpoints and component status.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0001"
down_revision = None

KEY = sa.String(191)


def upgrade() -> None:
    op.create_table(
        "firm_clients",
        sa.Column("key", KEY, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )
    op.create_table(
        "firm_payers",
        sa.Column("key", KEY, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("client_key", KEY),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )
    op.create_table(
        "firm_matters",
        sa.Column("key", KEY, primary_key=True),
        sa.Column("number", KEY, nullable=False, index=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("client_key", KEY, index=True),
        sa.Column("payer_key", KEY),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )
    op.create_table(
        "firm_statements",
        sa.Column("key", KEY, primary_key=True),
        sa.Column("number", KEY, nullable=False),
        sa.Column("matter_key", KEY, nullable=False, index=True),
        sa.Column("issue_date", sa.Date),
        sa.Column("due_date", sa.Date),
        sa.Column("amount", lt.DecimalText, nullable=False),
        sa.Column("balance", lt.DecimalText, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("entity", sa.String(32), primary_key=True),
        sa.Column("watermark", sa.Text),
        sa.Column("last_key", sa.Text),
        sa.Column("rows_synced", sa.Integer, nullable=False),
        sa.Column("updated_at", lt.UTCDateTime, nullable=False),
    )
    op.create_table(
        "component_status",
        sa.Column("component", sa.String(64), primary_key=True),
        sa.Column("last_ok_at", lt.UTCDateTime),
        sa.Column("last_error_at", lt.UTCDateTime),
        sa.Column("last_error", sa.Text),
    )
