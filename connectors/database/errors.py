"""Classify database errors once for every connector: transient (retry) or configuration/data (stop).

SQLSTATE classes are portable across drivers (ODBC, psycopg); MySQL/MariaDB native codes cover PyMySQL; SQLite
has neither, so its own messages decide. The database's own verdict on a mistake in the mapping (a missing
table or column, bad syntax) is checked before anything that looks like an outage: a write-back naming a
column that is not there must fail at once, visibly, not be retried for ten minutes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.core.errors import ConfigurationError, DataError, LedgerlinkError, TransientError
from agent.core.scrub import scrub

# SQLSTATEs worth retrying: connection exceptions, serialization failure, deadlock, lock timeout, shutdown,
# query timeout (ODBC HYT00/HYT01).
TRANSIENT_SQLSTATES = ("08", "40001", "40P01", "55P03", "57P01", "57P02", "57P03", "HYT00", "HYT01", "53300")
# MySQL/MariaDB: lock wait timeout, deadlock, can't connect, gone away, lost connection, too many connections.
TRANSIENT_MYSQL = {1205, 1213, 2002, 2003, 2006, 2013, 2055, 1040, 1927, 4031}
CONFIG_SQLSTATES = ("42", "3F", "28", "0A")
DATA_SQLSTATES = ("22", "23", "P0")
# MySQL/MariaDB codes for a mistake in the SQL or the schema it names: bad field (1054), no such table (1146),
# syntax (1064), unknown database (1049), no such procedure/function (1305), wrong column count (1136, 1058),
# ambiguous column (1052), access denied (1044, 1045, 1142, 1143).
CONFIG_MYSQL = {1054, 1146, 1064, 1049, 1305, 1136, 1058, 1052, 1044, 1045, 1142, 1143}
# SQLite's messages for the same mistakes (it has no codes that tell them apart from a locked database).
CONFIG_SQLITE = ("no such table", "no such column", "has no column named", "syntax error", "no such function",
                 "values were supplied", "ambiguous column name", "no such savepoint", "unrecognized token",
                 "incomplete input")


class NotReady(TransientError):
    """The mapping's ``postings.ready`` query said the firm database cannot take a write now (a book is open)."""


def _sqlstate(exc: BaseException) -> str | None:
    for attr in ("sqlstate", "pgcode"):
        code = getattr(exc, attr, None)
        if isinstance(code, str) and code:
            return code
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if args and isinstance(args[0], str) and len(args[0]) == 5 and args[0][:2].isalnum():
        return args[0]  # pyodbc: args = (sqlstate, message)
    return None


def _mysql_code(exc: BaseException) -> int | None:
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _message(exc: BaseException) -> str:
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[1], str):
        return scrub(args[1].strip())
    return scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


@dataclass(frozen=True)
class _Said:
    """What the driver said, in the forms the rules read: SQLSTATE, MySQL code, exception class name, the
    database's own words (lower case; a query quoted in the context must not decide) and native codes in them."""

    state: str | None
    code: int | None
    name: str
    low: str
    native: frozenset[int]

    @classmethod
    def of(cls, orig: BaseException, said: str) -> _Said:
        native = frozenset(int(n) for n in re.findall(r"\((\d{4})\)", said))  # ODBC drivers put it in the text
        return cls(_sqlstate(orig), _mysql_code(orig), type(orig).__name__, said.lower(), native)

    def state_in(self, prefixes: tuple[str, ...]) -> bool:
        return self.state is not None and self.state.startswith(prefixes)

    def generic(self) -> bool:
        """No SQLSTATE (SQLite) or ODBC drivers' catch-all HY000: only the message and native codes can decide."""
        return self.state is None or self.state.startswith("HY")

    def says(self, words: tuple[str, ...]) -> bool:
        return any(w in self.low for w in words)


GENERIC_TRANSIENT_WORDS = ("locked", "busy", "timeout", "can't connect", "could not connect", "connection", "closed")
GENERIC_CONFIG_WORDS = ("no such table", "no such column", "syntax", "doesn't exist", "unknown column")


def _mapping_mistake(s: _Said) -> bool:
    """Checked first: the database refusing the mapping's SQL must never look like an outage."""
    return (s.state_in(CONFIG_SQLSTATES) or s.code in CONFIG_MYSQL or bool(s.native & CONFIG_MYSQL)
            or s.says(CONFIG_SQLITE))


def _outage(s: _Said) -> bool:
    return s.state_in(TRANSIENT_SQLSTATES) or s.code in TRANSIENT_MYSQL


def _bad_data(s: _Said) -> bool:
    return s.state_in(DATA_SQLSTATES) or s.name == "IntegrityError"


def _driver_refused(s: _Said) -> bool:
    return s.name in ("ProgrammingError", "NotSupportedError")


def _generic_outage(s: _Said) -> bool:
    return s.generic() and (bool(s.native & TRANSIENT_MYSQL) or s.says(GENERIC_TRANSIENT_WORDS))


def _generic_mistake(s: _Said) -> bool:
    return s.generic() and s.says(GENERIC_CONFIG_WORDS)


def _generic_operational(s: _Said) -> bool:
    return s.generic() and s.name in ("OperationalError", "InterfaceError")


def _driver_manager(s: _Said) -> bool:
    """ODBC driver manager (IMxxx): data source or driver not found."""
    return s.state_in(("IM",))


# The first rule that holds decides; none holding means the data was refused.
RULES: tuple[tuple[Callable[[_Said], bool], type[LedgerlinkError]], ...] = (
    (_mapping_mistake, ConfigurationError),
    (_outage, TransientError),
    (_bad_data, DataError),
    (_driver_refused, ConfigurationError),
    (_generic_outage, TransientError),
    (_generic_mistake, ConfigurationError),
    (_generic_operational, TransientError),
    (_driver_manager, ConfigurationError),
)


def classify(exc: BaseException, context: str) -> LedgerlinkError:
    """Map a driver exception (raw or wrapped by SQLAlchemy) to our error classes, keeping the DB's message."""
    if isinstance(exc, LedgerlinkError):
        return exc
    orig: BaseException = getattr(exc, "orig", None) or exc
    said = _message(orig)
    message = f"{context}: {said}"
    if getattr(exc, "connection_invalidated", False):
        return TransientError(message)
    verdict = _Said.of(orig, said)
    kind = next((kind for holds, kind in RULES if holds(verdict)), DataError)
    return kind(message)
