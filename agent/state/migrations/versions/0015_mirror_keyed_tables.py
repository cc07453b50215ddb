"""The firm mirror's tables are keyed by the firm's key alone (issue 17, item 1). On SQLite each becomes a
WITHOUT ROWID table, one b-tree ordered by key instead of a rowid table plus an index on the key, so an upsert
writes one tree, not two. The statements' matter index also carries (deleted, number): the search index reads each
matter's live invoice numbers from the index alone, without a sort or a visit to each row.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"

MIRROR = ("firm_clients", "firm_payers", "firm_matters", "firm_statements")


def _rebuild(with_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in MIRROR:
        with op.batch_alter_table(name, recreate="always", table_kwargs={"sqlite_with_rowid": with_rowid}):
            pass


def upgrade() -> None:
    op.drop_index("ix_firm_statements_matter_key", table_name="firm_statements")
    _rebuild(with_rowid=False)
    op.create_index("ix_firm_statements_matter", "firm_statements", ["matter_key", "deleted", "number"])


def downgrade() -> None:
    op.drop_index("ix_firm_statements_matter", table_name="firm_statements")
    _rebuild(with_rowid=True)
    op.create_index("ix_firm_statements_matter_key", "firm_statements", ["matter_key"])
