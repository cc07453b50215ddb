"""SQLAlchemy connector: any database with a SQLAlchemy dialect (PostgreSQL, MariaDB/MySQL, SQLite, SQL Server
through ``mssql+pyodbc``). SQL is built with Core so each dialect renders its own quoting and LIMIT/TOP/FETCH."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from pydantic import Field
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    column,
    create_engine,
    event,
    func,
    or_,
    select,
    table,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.sql.expression import ColumnClause, FromClause, Select, TableClause

from agent.core.errors import ConfigurationError, LedgerlinkError
from connectors.database import arrow
from connectors.database.contract import (
    BulkRead,
    Capabilities,
    Connector,
    EntityInfo,
    Rehearsal,
    Selection,
    Window,
    not_ready_reason,
    posting_context,
    readable,
    rehearse_in_order,
    source_context,
)
from connectors.database.driver import DriverFailed, DriverWriter, direct, mapping_text
from connectors.database.errors import NotReady, classify
from connectors.plugins import PluginOptions
from mappings.format import MappingFile, RequestTable, SqlWriteBack
from mappings.sqlparams import param_names

T = TypeVar("T")


def _from(selection: Selection) -> FromClause:
    cols: list[ColumnClause[Any]] = [column(c) for c in dict.fromkeys(selection.columns)]
    if selection.is_query:
        return mapping_text(selection.source).columns(*cols).subquery("src")
    schema, _, name = selection.source.rpartition(".")
    return table(name, *cols, schema=schema or None)


def _sqlite_autocommit(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # pysqlite would BEGIN only before the first write: let SQLAlchemy BEGIN


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_immediate") else "BEGIN")


def driver_rows(conn: Connection, query: Select[Any]) -> list[tuple[Any, ...]]:
    """A query's rows as the driver returns them. SQLAlchemy compiles and binds the query (each dialect's quoting
    and paging), but the rows are taken from the driver's cursor: building a Row object per row, then a tuple of
    it, cost as much as the driver's own fetch (the hot path of a full sync). Untyped columns have no result
    processing to skip, so the values are the same."""
    result = conn.execute(query)
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        rows = result.cursor.fetchall()
    except dbapi_error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi_error) from None
    finally:
        result.close()
    return [tuple(r) for r in rows] if rows and type(rows[0]) is not tuple else list(rows)


def bound(sql: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Only the parameters the statement names: drivers reject unknown ones."""
    return {name: params[name] for name in param_names(sql)}


class SQLAlchemyOptions(PluginOptions):
    """The sqlalchemy connector's ``source.options``: the ``create_engine`` keywords an admin tunes for the firm's
    server. Any other key is refused, naming it."""

    pool_size: int | None = Field(None, ge=1, description="Connections kept open (create_engine pool_size).")
    max_overflow: int | None = Field(None, ge=0, description="Connections opened beyond pool_size at a peak.")
    pool_timeout: float | None = Field(None, gt=0, description="Seconds to wait for a free connection.")
    pool_recycle: int = Field(1800, description="Seconds after which a connection is opened anew (-1: never).")
    pool_pre_ping: bool = Field(True, description="Test a connection before each use (a server restart is met).")
    isolation_level: str | None = Field(None, description="The driver's isolation level name, e.g. READ COMMITTED.")
    connect_args: dict[str, Any] = Field(default_factory=dict, description="Keywords for the DBAPI's connect().")


class SQLAlchemyConnector(Connector):
    name = "sqlalchemy"
    capabilities = Capabilities(bulk_read=True, read_keys=True, rehearses_writes=True)
    Options = SQLAlchemyOptions
    options: SQLAlchemyOptions  # set by Connector.__init__ from source.options

    def __init__(self, mapping: MappingFile, password: str | None = None) -> None:
        super().__init__(mapping, password)
        source = mapping.source
        if not source.url:
            raise ConfigurationError("the sqlalchemy connector needs source.url in the mapping")
        try:
            url = make_url(source.url)
            if password is not None:
                url = url.set(password=password)
            self.engine: Engine = create_engine(url, **self.options.model_dump(exclude_none=True))
        except TypeError as exc:  # a keyword create_engine does not take
            raise ConfigurationError(f"source.options: {exc}; they are create_engine's keywords") from None
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise ConfigurationError(f"source.url {source.url!r}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_autocommit)
            event.listen(self.engine, "begin", _sqlite_begin)
        self.froms: dict[str, FromClause] = {e: _from(c.selection) for e, c in self.converters.items()}
        self._writer: Connection | None = None
        self._direct = DriverWriter(self.engine.dialect) if direct(self.engine.dialect) else None

    def _run(self, context: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except DBAPIError as exc:
            raise classify(exc, context) from None

    @property
    def reads_elsewhere(self) -> bool:
        """A SQLite file is read in this process: a read-ahead thread would only take turns with the store."""
        return self.engine.dialect.name != "sqlite"

    def check(self) -> None:
        def probe() -> None:
            with self.engine.connect() as conn:
                conn.execute(select(1)).scalar()

        self._run(f"connecting to {self.engine.url.render_as_string(hide_password=True)}", probe)

    def discover(self) -> dict[str, EntityInfo]:
        out: dict[str, EntityInfo] = {}
        for entity, conv in self.converters.items():
            src = self.froms[entity]
            sel = conv.selection

            def info(src: FromClause = src, sel: Selection = sel) -> tuple[int, Any, int]:
                with self.engine.connect() as conn:
                    conn.execute(select(*[src.c[c] for c in sel.columns]).limit(1)).fetchall()
                    if sel.watermark:
                        wm = src.c[sel.watermark]
                        row = conn.execute(
                            select(func.count(), func.max(wm), func.count() - func.count(wm))
                        ).one()
                        return row[0], row[1], row[2]
                    return conn.execute(select(func.count()).select_from(src)).scalar_one(), None, 0

            count, newest, nulls = self._run(source_context(entity, sel), info)
            out[entity] = EntityInfo(entity, count, newest, nulls)
        return out

    def probe(self, entity: str) -> None:
        src = self.froms[entity]
        sel = self.converters[entity].selection

        def once() -> None:
            with self.engine.connect() as conn:
                conn.execute(select(*[src.c[c] for c in sel.columns]).limit(1)).fetchall()

        self._run(source_context(entity, sel), once)

    def rehearse_write(self, steps: Sequence[tuple[str, str]], params: Mapping[str, Any]) -> list[Rehearsal]:
        """In order, in one transaction that is rolled back, on a connection of its own that is then discarded
        (a MariaDB TEMPORARY table outlives a rollback, and must not meet the next real posting)."""
        dialect = self.engine.dialect.name

        def execute(conn: Connection, sql: str, explain: bool) -> None:
            def attempt() -> None:
                result = conn.execute(mapping_text(("EXPLAIN " if explain else "") + sql), bound(sql, params))
                if result.returns_rows:
                    result.fetchall()

            self._run(f"rehearsing {readable(sql)}", attempt)

        try:
            conn = self.engine.connect()
        except DBAPIError as exc:
            reason = str(classify(exc, "rehearsing the postings statements"))
            return [Rehearsal(what, sql, "unchecked", reason) for what, sql in steps]
        try:
            with conn.begin() as trans:
                out = rehearse_in_order(steps, dialect, partial(execute, conn))
                trans.rollback()
            return out
        finally:
            conn.invalidate()
            conn.close()

    def read_raw(self, entity: str, window: Window, limit: int) -> list[tuple[Any, ...]]:
        src = self.froms[entity]
        sel = self.converters[entity].selection
        key = src.c[sel.key]
        query = select(*[src.c[c] for c in sel.columns])
        after = window.after
        if sel.watermark:
            wm = src.c[sel.watermark]
            if after is not None:
                # The index-friendly keyset form: wm >= :ts AND (wm > :ts OR key > :k).
                query = query.where(and_(wm >= after.watermark, or_(wm > after.watermark, key > after.key)))
            elif window.since is not None:
                query = query.where(wm >= window.since)
            if window.above is not None:
                query = query.where(wm > window.above)
            if window.until is not None:
                query = query.where(wm <= window.until)
            query = query.order_by(wm, key)
        else:
            if after is not None:
                query = query.where(key > after.key)
            query = query.order_by(key)
        query = query.limit(limit)

        def fetch() -> list[tuple[Any, ...]]:
            with self.engine.connect() as conn:
                return driver_rows(conn, query)

        return self._run(f"reading {entity}", fetch)

    def bulk_read(self, entity: str, batch_size: int) -> BulkRead | None:
        """Into Arrow, for SQLite and PostgreSQL sources (ADBC, the bulk extra) and MariaDB and MySQL ones
        (connectorx, the bulk-mysql extra) where installed; a small SQLite entity is left to the row path, which
        reads it sooner."""
        if arrow.bulk_unavailable(self.engine) is not None:
            return None
        src, converter = self.froms[entity], self.converters[entity]
        if self._run(f"counting {entity}", lambda: arrow.too_small(self.engine, src)):
            return None
        position = self._run(f"reading {entity}", lambda: arrow.last_position(self.engine, src, converter))
        return BulkRead(position, arrow.arrow_reader(self.engine, src, converter, batch_size,
                                                     lambda keys: self.read_keys(entity, keys)))

    def read_keys(self, entity: str, keys: list[Any]) -> list[tuple[Any, ...]] | None:
        src = self.froms[entity]
        sel = self.converters[entity].selection
        query = select(*[src.c[c] for c in sel.columns]).where(src.c[sel.key].in_(keys))

        def fetch() -> list[tuple[Any, ...]]:
            with self.engine.connect() as conn:
                return driver_rows(conn, query)

        return self._run(f"re-reading quarantined {entity}", fetch) if keys else []

    def keys(self, entity: str, batch_size: int) -> Iterator[list[str]]:
        src = self.froms[entity]
        key = src.c[self.converters[entity].selection.key]
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(select(key))
                for part in result.partitions(batch_size):
                    yield [str(r[0]) for r in part]
        except DBAPIError as exc:
            raise classify(exc, f"listing {entity} keys") from None

    def posting_exists(self, reference: str, section: str | None = None) -> bool:
        exists = self.write_back_of(section).exists

        def probe() -> bool:
            with self.engine.connect() as conn:
                return conn.execute(mapping_text(exists), bound(exists, {**self.mapping.params,
                                                                         "reference": reference})).first() is not None

        return self._run("postings existence check", probe)

    def _writer_connection(self) -> Connection:
        """The outbox's own connection, kept between postings: checking a pooled connection out and pinging it
        for every posting cost more than the posting itself. Its transactions hold the write lock from BEGIN on
        SQLite (BEGIN IMMEDIATE) and run SERIALIZABLE on servers, so no other writer can slip the same
        reference in between the existence check and the writes."""
        if self._writer is None or self._writer.closed or self._writer.invalidated:
            conn = self.engine.connect()
            if self.engine.dialect.name == "sqlite":
                conn.execution_options(sqlite_immediate=True)
            else:
                conn.execution_options(isolation_level="SERIALIZABLE")
            self._writer = conn
        return self._writer

    def write_posting(self, params: Mapping[str, Any]) -> bool:
        """ready (if mapped), the existence check and the writes in one transaction; a failed connection is
        dropped and the next posting opens a fresh one. On psycopg the same transaction runs on the driver's
        cursor (no SQLAlchemy work per statement); any database error there is rolled back and the posting run
        again through SQLAlchemy, which checks the reference first and names the statement that failed."""
        spec = self.write_back_of(params.get("section"))
        conn = self._writer_connection()
        if self._direct is not None:
            try:
                return self._direct.write(conn, spec, params)
            except DriverFailed:
                pass  # rolled back and out of autocommit: the statement-by-statement transaction decides, explains
            except DBAPIError as exc:
                self._close_writer()
                raise classify(exc, posting_context(params)) from None
        return self._write_stepwise(conn, spec, params)

    def _write_stepwise(self, conn: Connection, spec: SqlWriteBack, params: Mapping[str, Any]) -> bool:
        context = posting_context(params)
        try:
            with conn.begin():
                if spec.ready is not None:
                    reason = not_ready_reason(conn.execute(mapping_text(spec.ready), bound(spec.ready, params)).first())
                    if reason is not None:
                        raise NotReady(f"the firm database is not ready: {reason}")
                if conn.execute(mapping_text(spec.exists), bound(spec.exists, params)).first() is not None:
                    return False
                for sql in spec.writes:
                    try:
                        conn.execute(mapping_text(sql), bound(sql, params))
                    except DBAPIError as exc:
                        raise classify(exc, f"{context}, statement {readable(sql)}") from None
                return True
        except DBAPIError as exc:
            self._close_writer()
            raise classify(exc, context) from None
        except LedgerlinkError as exc:
            if not isinstance(exc, NotReady):
                self._close_writer()
            raise

    def _close_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(DBAPIError):
                if self._direct is not None and not (self._writer.closed or self._writer.invalidated):
                    self._direct.release(self._writer)  # back to the pool as it came: not in autocommit
                self._writer.close()
            self._writer = None

    def newest_checkpoints(self) -> list[tuple[Any, ...]]:
        audit = self.mapping.audit
        if audit is None:
            raise ConfigurationError("the mapping has no audit section")

        def fetch() -> list[tuple[Any, ...]]:
            with self.engine.connect() as conn:
                return [tuple(r) for r in conn.execute(mapping_text(audit.newest))]

        return self._run(f"reading audit checkpoints from {audit.table}", fetch)

    def _request_table(self) -> tuple[RequestTable, TableClause]:
        spec = self.mapping.requests
        if spec is None:
            raise ConfigurationError("the mapping has no requests section")
        names = [spec.key, spec.status_column, *spec.columns.values(), *spec.write_back.values()]
        schema, _, name = spec.table.rpartition(".")
        return spec, table(name, *[column(c) for c in dict.fromkeys(names)], schema=schema or None)

    def pending_requests(self, limit: int) -> list[dict[str, Any]]:
        spec, tbl = self._request_table()
        fields = list(spec.columns.items())
        query = (select(tbl.c[spec.key], *[tbl.c[c] for _, c in fields])
                 .where(tbl.c[spec.status_column] == spec.pending_value).order_by(tbl.c[spec.key]).limit(limit))

        def fetch() -> list[dict[str, Any]]:
            with self.engine.connect() as conn:
                return [{"key": r[0], **{f: r[i] for i, (f, _) in enumerate(fields, 1)}} for r in conn.execute(query)]

        return self._run(f"reading requests from {spec.table}", fetch)

    def write_request_result(self, key: Any, status: str, values: Mapping[str, Any]) -> None:
        spec, tbl = self._request_table()
        sets = {spec.status_column: status} | {spec.write_back[f]: v for f, v in values.items() if f in spec.write_back}

        def write() -> None:
            with self.engine.begin() as conn:
                conn.execute(tbl.update().where(tbl.c[spec.key] == key).values(**sets))

        self._run(f"writing request {key} in {spec.table}", write)

    def close(self) -> None:
        self._close_writer()
        self.engine.dispose()
