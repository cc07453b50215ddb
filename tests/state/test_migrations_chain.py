"""The migrations README shows the real chain: each revision after the one its file names as down_revision."""

from __future__ import annotations

import re
from pathlib import Path

from agent.state.migrations import HEAD
from agent.state.store import StateStore

FOLDER = Path(__file__).parents[2] / "agent" / "state" / "migrations"


def test_the_readme_table_is_the_chain_the_files_declare() -> None:
    declared = {}
    for path in sorted((FOLDER / "versions").glob("0*.py")):
        text = path.read_text(encoding="utf-8")
        revision = re.search(r'^revision = "(\w+)"', text, re.M)
        down = re.search(r'^down_revision = (?:"(\w+)"|None)', text, re.M)
        assert revision and down, path
        declared[revision.group(1)] = down.group(1)
    rows = re.findall(r"^\| (\d{4}) \| (\(first\)|\d{4}) \|", (FOLDER / "README.md").read_text(encoding="utf-8"),
                      re.M)
    assert {rev: (None if after == "(first)" else after) for rev, after in rows} == declared
    chain: list[str] = []
    at: str | None = None
    while len(chain) < len(declared):  # one line of history, oldest first, exactly as the README lists it
        at = next(rev for rev, down in declared.items() if down == at)
        chain.append(at)
    assert [rev for rev, _ in rows] == chain


def test_head_is_the_newest_revision_alembic_finds() -> None:
    """A store at HEAD opens without loading Alembic, so HEAD must be what Alembic would upgrade to."""
    assert StateStore.head() == HEAD
