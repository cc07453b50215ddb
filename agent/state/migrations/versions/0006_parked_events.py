"""Parked provider events: why an event could not be read, so it can be shown and retried.

Revision ID: 0006
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("provider_events") as batch:
        batch.add_column(sa.Column("error", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("provider_events") as batch:
        batch.drop_column("error")
