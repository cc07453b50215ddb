"""Direct Debit: mandates and their collections (agent/directdebit.py).

Revision ID: 0005
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0005"
down_revision = "0002"

KEY = sa.String(191)


def upgrade() -> None:
    op.create_table(
        "mandates",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("payer_key", KEY, nullable=False, index=True),
        sa.Column("setup_ref", sa.String(191), nullable=False),
        sa.Column("provider_ref", sa.String(191)),
        sa.Column("url", sa.Text),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("raw_status", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", lt.UTCDateTime, nullable=False),
        sa.Column("updated_at", lt.UTCDateTime, nullable=False),
    )
    op.create_table(
        "collections",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_ref", sa.String(191)),
        sa.Column("mandate_id", sa.String(32), sa.ForeignKey("mandates.id"), nullable=False),
        sa.Column("payer_key", KEY, nullable=False),
        sa.Column("matter_key", KEY, nullable=False, index=True),
        sa.Column("statement_key", KEY, nullable=False, index=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("amount", lt.DecimalText, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("charge_date", sa.Date),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("current_key", KEY, unique=True),
        sa.Column("note", sa.Text),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", lt.UTCDateTime, nullable=False),
        sa.Column("updated_at", lt.UTCDateTime, nullable=False),
        sa.UniqueConstraint("account", "provider_ref", name="uq_collections_ref"),
    )


def downgrade() -> None:
    op.drop_table("collections")
    op.drop_table("mandates")
