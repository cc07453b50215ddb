"""The mapping assistant's one flow, for ``mapping suggest`` and ``init --firm``: read the firm database's catalog,
offer the shipped mapping that fits it, else a draft whose every proposal is marked ``# guess:``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from agent.core.errors import ConfigurationError
from connectors.database.introspect import read_catalog
from mappings.format import SourceConfig
from mappings.suggest import Match, draft, recognise, with_source

__all__ = ["Suggestion", "firm_source", "suggest"]


@dataclass(frozen=True)
class Suggestion:
    text: str  # the mapping file to write
    recognised: Match | None  # the shipped mapping offered, or None for a draft
    guesses: int  # lines marked '# guess:' for the admin to confirm
    notes: tuple[str, ...]  # what the draft could not propose


def firm_source(*, url: str | None, odbc: str | None, password_secret: str | None) -> SourceConfig:
    """The ``source`` a mapping gets for the database the admin named, checked as a mapping's own would be; a
    relative SQLite path is made absolute, since a mapping reads it relative to its own folder."""
    if url and url.startswith("sqlite:///"):
        path, _, query = url.removeprefix("sqlite:///").partition("?")
        if path and path != ":memory:":
            if not Path(path).is_file():  # SQLite would make an empty database there: say what is wrong instead
                raise ConfigurationError(f"--url {url!r}: there is no SQLite database at {Path(path).resolve()}")
            url = f"sqlite:///{Path(path).resolve()}" + (f"?{query}" if query else "")
    try:
        return SourceConfig(connector="odbc" if odbc else "sqlalchemy", url=url, connection_string=odbc,
                            password_secret=password_secret)
    except ValidationError as exc:
        raise ConfigurationError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def _source_lines(source: SourceConfig) -> list[str]:
    lines = ["source:", f"  connector: {source.connector}"]
    lines += [f"  url: {source.url}"] if source.url else [f"  connection_string: {source.connection_string!r}"]
    if source.password_secret:
        lines.append(f"  password_secret: {source.password_secret}")
    return lines


def suggest(source: SourceConfig, password: str | None, *, name: str, currency: str = "GBP",
            draft_only: bool = False) -> Suggestion:
    """What ``mapping suggest`` proposes for the database ``source`` names (nothing in it is changed)."""
    catalog = read_catalog(url=source.url, connection_string=source.connection_string, password=password)
    lines = _source_lines(source)
    matches = [] if draft_only else recognise(catalog)
    if matches:
        best = matches[0]
        return Suggestion(with_source(best.text, lines), best, 0, ())
    d = draft(catalog, lines, name=name, currency=currency)
    return Suggestion(d.text(), None, d.guesses, tuple(d.notes))
