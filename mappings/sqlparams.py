"""Named ``:param`` placeholders in mapping SQL: found for validation, turned into ``?`` for raw DB-API drivers.

Mapping SQL never has values formatted into it; every value is a bound parameter. Quoted strings and ``::casts``
are skipped so ``'a:b'`` or ``x::numeric`` are not mistaken for parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|(?<![:\w]):([A-Za-z_]\w*)")


def param_names(sql: str) -> list[str]:
    """The ``:name`` placeholders of ``sql`` in order of appearance (repeats kept)."""
    return [m.group(1) for m in _TOKEN.finditer(sql) if m.group(1)]


def to_qmark(sql: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Rewrite ``:name`` placeholders as ``?`` and return the positional values, for pyodbc."""
    values: list[Any] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if not name:
            return match.group(0)
        values.append(params[name])
        return "?"

    return _TOKEN.sub(replace, sql), values


def literal_colons_escaped(sql: str) -> str:
    """``sql`` with each colon inside a quoted string escaped (``\\:``) for SQLAlchemy's ``text()``, which would
    otherwise read the ``:R`` of ``LIKE '%:R%'`` as a parameter named R. The strings are those ``param_names``
    skips, so the agent and the driver agree on what is a parameter."""

    def escape(match: re.Match[str]) -> str:
        token = match.group(0)
        return token.replace(":", "\\:") if token[0] in "'\"" else token

    return _TOKEN.sub(escape, sql)
