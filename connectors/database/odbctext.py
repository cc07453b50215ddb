"""ODBC connection strings without pyodbc: how a driver quotes names and how a password joins the string.

Kept apart from :mod:`connectors.database.odbc` so the mapping assistant can use them without loading unixODBC.
"""

from __future__ import annotations

__all__ = ["QUOTES", "default_quote", "with_password"]

QUOTES = {'"': ('"', '"'), "`": ("`", "`"), "[": ("[", "]")}


def default_quote(connection_string: str) -> tuple[str, str]:
    """How the driver a connection string names quotes an identifier, unless source.options.quote says."""
    driver = connection_string.lower()
    if "sqlite" in driver:
        return QUOTES["["]  # SQLite reads an unknown "double-quoted" name as a string literal, silently
    return QUOTES["`"] if "mariadb" in driver or "mysql" in driver else QUOTES['"']


def with_password(connection_string: str, password: str | None) -> str:
    """The string with PWD={...} appended (braces doubled, as ODBC escapes them); the secret never sits in a file."""
    text = connection_string.rstrip(";")
    if password is not None:
        text += f";PWD={{{password.replace('}', '}}')}}}"
    return text
