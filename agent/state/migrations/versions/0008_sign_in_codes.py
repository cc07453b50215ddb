"""One-time console sign-in codes: only their hashes, each usable once and only for a few minutes.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "sign_in_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("created_at", lt.UTCDateTime(), nullable=False),
        sa.Column("expires_at", lt.UTCDateTime(), nullable=False),
        sa.Column("used_at", lt.UTCDateTime()),
    )


def downgrade() -> None:
    op.drop_table("sign_in_codes")
