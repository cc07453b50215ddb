"""Read a firm database's catalog for the mapping assistant: SQLAlchemy's inspector, or ODBC's catalog functions.

Only names, types, keys and a few distinct values of status-like columns are read; nothing is written and no
table is scanned whole (a status sample is a ``SELECT DISTINCT`` capped at a dozen values).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from agent.core.errors import ConfigurationError
from connectors.database.errors import classify
from connectors.database.odbctext import default_quote, with_password
from mappings.suggest import FIELD_WORDS, Catalog, Column, Kind, Table

__all__ = ["read_catalog"]

SYSTEM_SCHEMAS = {"information_schema", "pg_catalog", "pg_toast", "sys", "guest", "mysql", "performance_schema",
                  "db_owner", "db_accessadmin", "db_securityadmin", "db_ddladmin", "db_backupoperator",
                  "db_datareader", "db_datawriter", "db_denydatareader", "db_denydatawriter"}
SAMPLES = 12
STATUS_NAMES = {w.format(t="").strip("_") for w in FIELD_WORDS["status"]}


def _samples_wanted(name: str) -> bool:
    lowered = name.lower()
    return lowered in STATUS_NAMES or lowered.endswith(("_status", "_state"))


def _kind(sql_type: sa.types.TypeEngine[Any]) -> Kind:
    if isinstance(sql_type, sa.Boolean):
        return "bool"
    if isinstance(sql_type, sa.Integer):
        return "integer"
    if isinstance(sql_type, sa.Float):
        return "float"
    if isinstance(sql_type, sa.Numeric):
        return "decimal"
    if isinstance(sql_type, sa.DateTime):
        return "datetime"
    if isinstance(sql_type, sa.Date):
        return "date"
    if isinstance(sql_type, sa.String):
        return "text"
    return "other"


def _odbc_kind(type_name: str) -> Kind:
    t = type_name.lower()
    for pattern, kind in ((r"bool|^bit$", "bool"), (r"int|serial", "integer"), (r"float|real|double", "float"),
                          (r"numeric|decimal|money", "decimal"), (r"timestamp|datetime", "datetime"),
                          (r"date", "date"), (r"char|text|string|clob", "text")):
        if re.search(pattern, t):
            return kind  # type: ignore[return-value]
    return "other"


def _sqlalchemy(url: str, password: str | None) -> Catalog:
    try:
        parsed = make_url(url)
        engine: Engine = sa.create_engine(parsed.set(password=password) if password else parsed)
    except (ArgumentError, NoSuchModuleError, ImportError, TypeError) as exc:
        raise ConfigurationError(f"--url {url!r}: {exc}") from None
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            default = inspector.default_schema_name
            schemas: list[str | None] = [None]
            if engine.dialect.name in ("postgresql", "mssql"):
                schemas += [s for s in inspector.get_schema_names() if s != default and s.lower() not in
                            SYSTEM_SCHEMAS and not s.lower().startswith(("pg_", "db_"))]
            tables = []
            for schema in schemas:
                for name in sorted(inspector.get_table_names(schema=schema)):
                    tables.append(_sqlalchemy_table(conn, inspector, schema, name, default))
    except DBAPIError as exc:
        raise classify(exc, f"reading the catalog of {parsed.render_as_string(hide_password=True)}") from None
    finally:
        engine.dispose()
    return Catalog(engine.dialect.name, tuple(tables))


def _sqlalchemy_table(conn: sa.Connection, inspector: sa.Inspector, schema: str | None, name: str,
                      default: str | None) -> Table:
    qualified = f"{schema}.{name}" if schema else name
    pk = tuple(inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or ())
    fks = []
    for fk in inspector.get_foreign_keys(name, schema=schema):
        if len(fk["constrained_columns"]) == 1:
            referred = fk["referred_table"]
            if fk.get("referred_schema") and fk["referred_schema"] != default:
                referred = f"{fk['referred_schema']}.{referred}"
            fks.append((fk["constrained_columns"][0], referred))
    table = sa.table(name, schema=schema)
    columns = []
    for col in inspector.get_columns(name, schema=schema):
        kind = _kind(col["type"])
        samples: tuple[str, ...] = ()
        if kind == "text" and _samples_wanted(col["name"]):
            column: sa.ColumnClause[Any] = sa.column(col["name"])
            query = sa.select(column).select_from(table).where(column.is_not(None)).distinct().limit(SAMPLES)
            samples = tuple(sorted(str(v) for v in conn.execute(query).scalars()))
        columns.append(Column(col["name"], kind, bool(col.get("nullable", True)),
                              col.get("default") is not None or bool(col.get("autoincrement") is True), samples))
    return Table(qualified, tuple(columns), pk, tuple(fks))


def _odbc(connection_string: str, password: str | None) -> Catalog:
    import pyodbc  # only when asked: unixODBC may be absent

    try:
        conn = pyodbc.connect(with_password(connection_string, password), autocommit=True, timeout=10)
    except pyodbc.Error as exc:
        raise classify(exc, "connecting through ODBC") from None
    q_open, q_close = default_quote(connection_string)
    try:
        cur = conn.cursor()
        names = [(r.table_schem, r.table_name) for r in cur.tables(tableType="TABLE").fetchall()]
        tables = []
        for schema, name in names:
            if schema and schema.lower() in SYSTEM_SCHEMAS:
                continue
            pk: tuple[str, ...] = ()
            fks: list[tuple[str, str]] = []
            with contextlib.suppress(pyodbc.Error):  # not every driver has the catalog functions
                pk = tuple(r.column_name for r in cur.primaryKeys(name, schema=schema).fetchall())
            with contextlib.suppress(pyodbc.Error):
                fks = [(r.fkcolumn_name, r.pktable_name) for r in cur.foreignKeys(foreignTable=name,
                                                                                   foreignSchema=schema).fetchall()]
            columns = []
            for r in cur.columns(table=name, schema=schema).fetchall():
                kind = _odbc_kind(r.type_name)
                samples: tuple[str, ...] = ()
                if kind == "text" and _samples_wanted(r.column_name):
                    source = f"{q_open}{name}{q_close}"
                    column = f"{q_open}{r.column_name}{q_close}"
                    rows = conn.cursor().execute(f"SELECT DISTINCT {column} FROM {source} "
                                                 f"WHERE {column} IS NOT NULL").fetchmany(SAMPLES)
                    samples = tuple(sorted(str(v[0]) for v in rows))
                columns.append(Column(r.column_name, kind, bool(r.nullable), r.column_def is not None, samples))
            tables.append(Table(name, tuple(columns), pk, tuple(fks)))
    except pyodbc.Error as exc:
        raise classify(exc, "reading the ODBC catalog") from None
    finally:
        conn.close()
    return Catalog("odbc", tuple(tables))


def read_catalog(*, url: str | None = None, connection_string: str | None = None,
                 password: str | None = None) -> Catalog:
    """The catalog of the database a SQLAlchemy ``url`` or an ODBC ``connection_string`` names."""
    if bool(url) == bool(connection_string):
        raise ConfigurationError("give either a SQLAlchemy URL or an ODBC connection string")
    return _sqlalchemy(url, password) if url else _odbc(connection_string or "", password)
