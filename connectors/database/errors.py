"""Classify database errors once for every connector: transient (retry) or configuration/data (stop).

SQLSTATE classes are portable across drivers (ODBC, psycopg); MySQL/MariaDB native codes cover PyMySQL.
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
    message = f"{context}: {_message(orig)}"
    if getattr(exc, "connection_invalidated", False):
        return TransientError(message)
    state = _sqlstate(orig)
    code = _mysql_code(orig)
    name = type(orig).__name__
    if (state and state.startswith(TRANSIENT_SQLSTATES)) or (code in TRANSIENT_MYSQL):
        return TransientError(message)
    if (state and state.startswith(DATA_SQLSTATES)) or name == "IntegrityError":
        return DataError(message)
    if (state and state.startswith(CONFIG_SQLSTATES)) or name in ("ProgrammingError", "NotSupportedError"):
        return ConfigurationError(message)
    if state is None or state.startswith("HY"):
        # Generic SQLSTATEs (SQLite, ODBC drivers' HY000): the message and any native code it carries decide.
        low = message.lower()
        native = {int(n) for n in re.findall(r"\((\d{4})\)", message)}
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
