"""Matter search index: one row of search text per matter (search_docs) and, on SQLite, the FTS5 tables over it
(search_fts with the trigram tokenizer, search_words with unicode61 and its vocabulary search_vocab), filled from
the mirror an older agent left, so an upgraded agent searches at once. search_state records a sync pass that
stored rows not yet indexed.

Revision ID: 0011
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

from agent.state import search

revision = "0011"
down_revision = "0012"

FTS = (
    "CREATE VIRTUAL TABLE search_fts USING fts5(number, name, client, invoices, content='search_docs', "
    "content_rowid='id', tokenize='trigram')",
    "CREATE VIRTUAL TABLE search_words USING fts5(name, client, content='search_docs', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE VIRTUAL TABLE search_vocab USING fts5vocab(search_words, 'row')",
)


def upgrade() -> None:
    op.create_table(
        "search_docs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("matter_key", sa.String(191), nullable=False, unique=True),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("client", sa.Text, nullable=False),
        sa.Column("invoices", sa.Text, nullable=False),
    )
    op.create_table(
        "search_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("behind", sa.String(32)),
    )
    op.execute("INSERT INTO search_state (id, behind) VALUES (1, NULL)")
    if op.get_bind().dialect.name != "sqlite":
        return  # other stores search the mirror with LIKE (agent/state/search.py)
    for statement in FTS:
        op.execute(statement)
    search.rebuild(op.get_bind())


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("search_vocab", "search_words", "search_fts"):
            op.execute(f"DROP TABLE {name}")
    op.drop_table("search_state")
    op.drop_table("search_docs")
