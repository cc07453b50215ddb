"""Client money: payouts and their items, refunds, and postings of a write-back section (trust, fees, deposits,
transfers) that belong to a payout rather than to one payment.

Revision ID: 0012
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0012"
down_revision = "0009"


def upgrade() -> None:
    op.create_table(
        "payouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("account_kind", sa.String(16), nullable=False),
        sa.Column("fees_account", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("payout_ref", sa.String(191), nullable=False),
        sa.Column("amount", lt.DecimalText(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("raw_status", sa.String(32), nullable=False),
        sa.Column("created_at", lt.UTCDateTime(), nullable=False),
        sa.Column("arrival_date", sa.Date()),
        sa.Column("bank_reference", sa.Text(), nullable=False),
        sa.Column("items_total", lt.DecimalText(), nullable=False),
        sa.Column("fees", lt.DecimalText(), nullable=False),
        sa.Column("shortfall", lt.DecimalText()),
        sa.Column("breach_cleared_at", lt.UTCDateTime()),
        sa.Column("breach_note", sa.Text()),
        sa.Column("synced_at", lt.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("account", "payout_ref", name="uq_payouts_ref"),
    )
    op.create_table(
        "payout_items",
        sa.Column("payout_id", sa.String(32), sa.ForeignKey("payouts.id"), primary_key=True),
        sa.Column("line", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", lt.DecimalText(), nullable=False),
        sa.Column("payment_ref", sa.String(191), index=True),
        sa.Column("ref", sa.String(191), nullable=False),
        sa.Column("raw_type", sa.String(64), nullable=False),
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("payment_id", sa.String(32), sa.ForeignKey("payments.id"), nullable=False, index=True),
        sa.Column("amount", lt.DecimalText(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider_ref", sa.String(191)),
        sa.Column("error", sa.Text()),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", lt.UTCDateTime(), nullable=False),
        sa.Column("updated_at", lt.UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("postings") as batch:
        batch.alter_column("payment_id", existing_type=sa.String(32), nullable=True)
        batch.add_column(sa.Column("section", sa.String(16)))
        batch.add_column(sa.Column("payout_id", sa.String(32), sa.ForeignKey("payouts.id", name="fk_postings_payout")))
        batch.add_column(sa.Column("account", sa.String(64)))
        batch.create_index("ix_postings_payout_id", ["payout_id"])


def downgrade() -> None:
    with op.batch_alter_table("postings") as batch:
        batch.drop_index("ix_postings_payout_id")
        batch.drop_column("account")
        batch.drop_column("payout_id")
        batch.drop_column("section")
        batch.alter_column("payment_id", existing_type=sa.String(32), nullable=False)
    op.drop_table("refunds")
    op.drop_table("payout_items")
    op.drop_table("payouts")
