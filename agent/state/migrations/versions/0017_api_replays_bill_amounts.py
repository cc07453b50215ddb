"""Idempotent writes for API clients (issue 24, item 8): the first answer to each ``Idempotency-Key``, replayed for
24 hours, as Stripe's API does (agent.state.replays). And each link item keeps the bill's amount when the link was
made, so a bill raised afterwards makes its link stale (issue 24, item 4); items of older links have none.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0017"
down_revision = "0016"


def upgrade() -> None:
    op.create_table(
        "api_replays",
        sa.Column("key", sa.String(64), primary_key=True, comment="sha256 of the caller's credential and key"),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), comment="the first answer's HTTP status; null while it runs"),
        sa.Column("body", sa.Text()),
        sa.Column("created_at", lt.UTCDateTime(), nullable=False, index=True),
    )
    with op.batch_alter_table("link_items") as batch:
        batch.add_column(sa.Column("statement_amount", lt.DecimalText(), comment="the bill's amount then"))


def downgrade() -> None:
    with op.batch_alter_table("link_items") as batch:
        batch.drop_column("statement_amount")
    op.drop_table("api_replays")
