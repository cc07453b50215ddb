"""Classify database errors once for every connector: transient (retry) or configuration/data (stop).

SQLSTATE classes are portable across drivers (ODBC, psycopg); MySQL/MariaDB native codes cover PyMySQL; SQLite
has neither, so its own messages decide. The database's own verdict on a mistake in the mapping (a missing
table or column, bad syntax) is checked before anything that looks like an outage: a write-back naming a
column that is not there must fail at once, visibly, not be retried for ten minutes.
"""

from __future__ import annotations

import re
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
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], str) and len(args[0]) == 5 and args[0][:2].isalnum():
        return args[0]  # pyodbc: args = (sqlstate, message)
    return None


def _mysql_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _message(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[1], str):
        return scrub(args[1].strip())
    return scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def classify(exc: BaseException, context: str) -> LedgerlinkError:
    """Map a driver exception (raw or wrapped by SQLAlchemy) to our error classes, keeping the DB's message."""
    if isinstance(exc, LedgerlinkError):
        return exc
    orig: Any = getattr(exc, "orig", None) or exc
    said = _message(orig)
    message = f"{context}: {said}"
    if getattr(exc, "connection_invalidated", False):
        return TransientError(message)
    state = _sqlstate(orig)
    code = _mysql_code(orig)
    name = type(orig).__name__
    low = said.lower()  # the database's words only: a query quoted in the context must not decide
    native = {int(n) for n in re.findall(r"\((\d{4})\)", said)}  # ODBC drivers put the native code in text
    if ((state and state.startswith(CONFIG_SQLSTATES)) or code in CONFIG_MYSQL or native & CONFIG_MYSQL
            or any(w in low for w in CONFIG_SQLITE)):
        return ConfigurationError(message)
    if (state and state.startswith(TRANSIENT_SQLSTATES)) or (code in TRANSIENT_MYSQL):
        return TransientError(message)
    if (state and state.startswith(DATA_SQLSTATES)) or name == "IntegrityError":
        return DataError(message)
    if name in ("ProgrammingError", "NotSupportedError"):
        return ConfigurationError(message)
    if state is None or state.startswith("HY"):
        # Generic SQLSTATEs (SQLite, ODBC drivers' HY000): the message and any native code it carries decide.
        if native & TRANSIENT_MYSQL or any(w in low for w in ("locked", "busy", "timeout", "can't connect",
                                                                  "could not connect", "connection", "closed")):
            return TransientError(message)
        if any(w in low for w in ("no such table", "no such column", "syntax", "doesn't exist", "unknown column")):
            return ConfigurationError(message)
        if name in ("OperationalError", "InterfaceError"):
            return TransientError(message)
    if state and state.startswith("IM"):  # ODBC driver manager: data source / driver not found
        return ConfigurationError(message)
    return ConfigurationError(message) if name == "ProgrammingError" else DataError(message)
