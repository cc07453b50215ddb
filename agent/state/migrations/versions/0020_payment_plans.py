"""Payment plans (issue 27): a debt paid in instalments on the payer's Direct Debit mandate. A plan names its
statements; each instalment is scheduled with its date and amount and, when it falls due, becomes a Direct Debit
collection (``collections.kind = 'plan'``) whose status is the instalment's money status.

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0020"
down_revision = "0019"


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("mandate_id", sa.String(32), sa.ForeignKey("mandates.id"), nullable=False),
        sa.Column("payer_key", sa.String(191), nullable=False),
        sa.Column("matter_key", sa.String(191), nullable=False, index=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total", lt.DecimalText(), nullable=False),
        sa.Column("frequency", sa.String(12), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, comment="active, ended or cancelled"),
        sa.Column("active_key", sa.String(191), unique=True, comment="the matter's key while active: one plan each"),
        sa.Column("note", sa.Text),
        sa.Column("created_at", lt.UTCDateTime(), nullable=False),
        sa.Column("updated_at", lt.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "plan_statements",
        sa.Column("plan_id", sa.String(32), sa.ForeignKey("plans.id"), primary_key=True),
        sa.Column("statement_key", sa.String(191), primary_key=True),
    )
    op.create_table(
        "plan_instalments",
        sa.Column("plan_id", sa.String(32), sa.ForeignKey("plans.id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("amount", lt.DecimalText(), nullable=False),
        sa.Column("due_on", sa.Date, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, comment="scheduled, submitted or cancelled"),
        sa.Column("collection_id", sa.String(32), sa.ForeignKey("collections.id"), unique=True),
        sa.Column("note", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("plan_instalments")
    op.drop_table("plan_statements")
    op.drop_table("plans")
