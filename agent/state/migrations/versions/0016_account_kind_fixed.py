"""Whether money is client money is fixed when a link or payment is made (issue 24, item 7): ``account_kind`` on
links and payments, never read again from settings. Rows made before this are stamped with the account's kind at
the agent's first start after the upgrade (``agent.state.accounts.stamp_kinds``), which knows the settings.

A matter's outstanding link is now one per matter AND account (``matter:<key>/<account>``), so asking for a trust
link never hands back the matter's office link.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"


def upgrade() -> None:
    for table in ("links", "payments"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("account_kind", sa.String(16)))
    joined = "outstanding_key || '/' || account"
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        joined = "CONCAT(outstanding_key, '/', account)"
    op.execute(f"UPDATE links SET outstanding_key = {joined} WHERE outstanding_key LIKE 'matter:%'")


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, outstanding_key, account FROM links WHERE outstanding_key LIKE 'matter:%'"))
    for link_id, key, account in rows.all():
        conn.execute(sa.text("UPDATE links SET outstanding_key = :key WHERE id = :id"),
                     {"key": key.removesuffix(f"/{account}"), "id": link_id})
    for table in ("links", "payments"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("account_kind")
