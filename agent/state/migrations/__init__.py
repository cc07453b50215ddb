"""Alembic migrations of the state store (env.py and versions/), applied by StateStore on open."""
