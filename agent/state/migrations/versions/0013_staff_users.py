"""Named staff users with roles, their console sessions and personal API tokens (hashes only), and sign-in
throttling; a sign-in code now names the person it signs in.

Revision ID: 0013
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

import agent.state.types as lt

revision = "0013"
down_revision = "0011"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("password_hash", sa.Text()),
        sa.Column("created_at", lt.UTCDateTime(), nullable=False),
        sa.Column("disabled_at", lt.UTCDateTime()),
    )
    op.create_table(
        "user_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_name", sa.String(64), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("created_at", lt.UTCDateTime(), nullable=False),
        sa.Column("expires_at", lt.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_name", sa.String(64), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("created_at", lt.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", lt.UTCDateTime()),
    )
    op.create_table(
        "sign_in_failures",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", lt.UTCDateTime(), nullable=False),
        sa.Column("not_before", lt.UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("sign_in_codes") as batch:
        batch.add_column(sa.Column("user_name", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("sign_in_codes") as batch:
        batch.drop_column("user_name")
    for table in ("sign_in_failures", "api_tokens", "user_sessions", "users"):
        op.drop_table(table)
