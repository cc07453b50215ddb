"""The audit trail anchored outside the store (issue 24, item 3): each entry carries the id of the HMAC key that
sealed it and its seal; the head row names the key new entries are sealed with, so a rotation reaches every
process. Entries made before keying carry none: the first signed checkpoint, written when the keys are made,
seals them as they stand (agent.state.anchor).

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("key_id", sa.String(8), comment="the audit key that sealed it; null before keying"))
        batch.add_column(sa.Column("mac", sa.String(64), comment="HMAC-SHA256 of key id, seq and hash"))
    with op.batch_alter_table("audit_head") as batch:
        batch.add_column(sa.Column("key_id", sa.String(8), comment="the key the next entry is sealed with"))


def downgrade() -> None:
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("mac")
        batch.drop_column("key_id")
