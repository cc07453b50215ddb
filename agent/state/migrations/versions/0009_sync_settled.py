"""The sync checkpoint remembers how far the firm's rows are settled, so a bulk change is re-read once, not on
every pass until a newer change arrives (issue 17, item 5).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("settled", sa.Text(),
                                   comment="JSON: {type, value} watermark; every row at or before it is final"))


def downgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("settled")
