"""The payment plan a mandate setup was started for (issue 27): a plan cancelled, or lapsed, before its payer set
up the Direct Debit ends that setup with it, so the payer cannot finish one for a plan that is no more; a setup
the clerk started on its own (no plan) is left alone.

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"


def upgrade() -> None:
    with op.batch_alter_table("mandates") as batch:
        batch.add_column(sa.Column("plan_id", sa.String(32), comment="the plan this setup was started for"))


def downgrade() -> None:
    with op.batch_alter_table("mandates") as batch:
        batch.drop_column("plan_id")
