"""Alembic migrations of the state store (env.py and versions/), applied by StateStore on open.

``HEAD`` is the newest revision, so that opening a store already at it needs no Alembic at all (some 11 MB of
memory in every agent process); a new migration sets it, and tests/state/test_migrations_chain.py checks it
against Alembic's own reading of versions/.
"""

HEAD = "0022"
