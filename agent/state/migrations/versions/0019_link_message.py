"""A link's own message to the payer (issue 26): a bulk file's Custom Message goes into the email above the link
instead of replacing the payment's description.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"


def upgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.add_column(sa.Column("message", sa.Text, comment="the firm's own words to the payer for this link"))


def downgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.drop_column("message")
