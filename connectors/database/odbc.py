"""Raw pyodbc connector, for databases with no SQLAlchemy dialect (or a DSN the firm already has).

SQL is rendered here with the driver's identifier quoting and paging style; values are always ``?`` parameters.
Memory stays bounded without server-side cursors because every read is one keyset page (LIMIT/TOP/FETCH);
that matters because MariaDB's ODBC driver cannot stream and psqlODBC streams only with UseDeclareFetch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import pyodbc
from pydantic import Field

from agent.core.errors import ConfigurationError, LedgerlinkError
from connectors.database.contract import (
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
from connectors.database.errors import NotReady, classify
from connectors.database.odbctext import QUOTES, default_quote, with_password
from connectors.plugins import PluginOptions
from mappings.format import MappingFile, RequestTable
from mappings.sqlparams import to_qmark


class ODBCOptions(PluginOptions):
    """The odbc connector's ``source.options``. A key not named here is refused: a mistyped option that was
    silently ignored would leave the connector quoting or paging in a way the admin did not choose."""

    quote: Literal['"', "`", "["] | None = Field(None, description="How names are quoted; by driver when omitted.")
    paging: Literal["limit", "top", "fetch"] | None = Field(None, description="LIMIT, TOP or FETCH FIRST.")
    query_timeout: int = Field(60, ge=1, le=86_400, description="Seconds a query may run.")
    wchar_encoding: str | None = Field(None, description="How the driver encodes wide-character columns.")


class ODBCConnector(Connector):
    name = "odbc"
    capabilities = Capabilities(read_keys=True, rehearses_writes=True)
    Options = ODBCOptions
    options: ODBCOptions  # set by Connector.__init__ from source.options

    def __init__(self, mapping: MappingFile, password: str | None = None) -> None:
        super().__init__(mapping, password)
        source = mapping.source
        if not source.connection_string:
            raise ConfigurationError("the odbc connector needs source.connection_string (or DSN=name)")
        self.connection_string = with_password(source.connection_string, password)
        driver = source.connection_string.lower()
        options = self.options
        self.quote = QUOTES[options.quote or default_quote(driver)[0]]
        self.paging = options.paging or ("top" if "sql server" in driver else "limit")
        self.query_timeout = options.query_timeout
        # MariaDB Connector/ODBC 3.1 hands wide-character columns over as UTF-8 bytes; decoding them as UTF-16
        # silently drops the last character of non-ASCII names. Measured on 3.1.15 (Debian 12).
        self.wchar_encoding = options.wchar_encoding or ("utf-8" if "mariadb" in driver else None)
        # The same driver's data-at-execution path (pyodbc's SQLPutData, taken for text of 128 characters or more
        # by default) fails: 128 to 254 characters are refused ('Memory allocation error', 'Data too long' for
        # a VARCHAR(300)). Bound as one buffer, they go through. Measured on 3.1.15 (Debian 12).
        self.maxwrite = 1 << 24 if "mariadb" in driver or "mysql" in driver else 0
        self.sqlite = "sqlite" in driver
        self._conn: pyodbc.Connection | None = None
        self._writer: pyodbc.Connection | None = None

    # ------------------------------------------------------------------------------------------ plumbing

    def _open(self, autocommit: bool = False) -> pyodbc.Connection:
        try:
            conn = pyodbc.connect(self.connection_string, autocommit=autocommit, timeout=10)
        except pyodbc.Error as exc:
            raise classify(exc, "connecting through ODBC") from None
        # pyodbc's timeout= is only the login timeout; a query timeout needs the attribute, which some
        # drivers (psqlODBC) do not support: then the server's own statement timeout is what applies.
        with contextlib.suppress(pyodbc.Error):
            conn.timeout = self.query_timeout
        if self.wchar_encoding:
            conn.setdecoding(pyodbc.SQL_WCHAR, encoding=self.wchar_encoding)
        if self.maxwrite:
            conn.maxwrite = self.maxwrite
        return conn

    def _connection(self) -> pyodbc.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _writer_connection(self) -> pyodbc.Connection:
        """The write-back's own connection. SQLite's driver would BEGIN a deferred transaction, so the writer
        runs in autocommit and issues BEGIN IMMEDIATE itself (the write lock from the start); on servers it is
        SERIALIZABLE, so the existence check and the writes see and lock the same rows."""
        if self._writer is None:
            conn = self._open(autocommit=self.sqlite)
            if not self.sqlite:
                try:
                    conn.set_attr(pyodbc.SQL_ATTR_TXN_ISOLATION, pyodbc.SQL_TXN_SERIALIZABLE)
                except pyodbc.Error as exc:
                    conn.close()
                    raise classify(exc, "setting SERIALIZABLE isolation for the write-back") from None
            self._writer = conn
        return self._writer

    def _drop(self) -> None:
        for conn in (self._conn, self._writer):
            if conn is not None:
                with contextlib.suppress(pyodbc.Error):
                    conn.close()
        self._conn = self._writer = None

    def _fetch(self, context: str, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        conn = self._connection()
        try:
            cur = conn.cursor()
            rows = [tuple(r) for r in cur.execute(sql, params).fetchall()]
            cur.close()
            conn.rollback()  # end the read transaction: no snapshot or locks held between pages
            return rows
        except pyodbc.Error as exc:
            self._drop()
            raise classify(exc, context) from None

    def q(self, name: str) -> str:
        """Quote a (possibly schema-qualified) identifier."""
        left, right = self.quote
        return ".".join(f"{left}{part}{right}" for part in name.split("."))

    def _source(self, sel: Selection) -> str:
        return f"({sel.source}) src" if sel.is_query else self.q(sel.source)

    def _page(self, select_list: str, source: str, where: str, order: str, limit: int) -> str:
        if self.paging == "top":
            return f"SELECT TOP {int(limit)} {select_list} FROM {source}{where} ORDER BY {order}"
        if self.paging == "fetch":
            return f"SELECT {select_list} FROM {source}{where} ORDER BY {order} FETCH FIRST {int(limit)} ROWS ONLY"
        return f"SELECT {select_list} FROM {source}{where} ORDER BY {order} LIMIT {int(limit)}"

    # ------------------------------------------------------------------------------------------ source

    def check(self) -> None:
        self._fetch("connecting through ODBC", "SELECT 1", [])

    def discover(self) -> dict[str, EntityInfo]:
        out: dict[str, EntityInfo] = {}
        for entity, conv in self.converters.items():
            sel = conv.selection
            cols = ", ".join(self.q(c) for c in dict.fromkeys(sel.columns))
            context = source_context(entity, sel)
            self._fetch(context, self._page(cols, self._source(sel), "", self.q(sel.key), 1), [])
            if sel.watermark:
                wm = self.q(sel.watermark)
                count, newest, nulls = self._fetch(
                    context, f"SELECT COUNT(*), MAX({wm}), COUNT(*) - COUNT({wm}) FROM {self._source(sel)}", [])[0]
            else:
                count = self._fetch(context, f"SELECT COUNT(*) FROM {self._source(sel)}", [])[0][0]
                newest, nulls = None, 0
            out[entity] = EntityInfo(entity, int(count), newest, int(nulls))
        return out

    def probe(self, entity: str) -> None:
        sel = self.converters[entity].selection
        cols = ", ".join(self.q(c) for c in dict.fromkeys(sel.columns))
        self._fetch(source_context(entity, sel), self._page(cols, self._source(sel), "", self.q(sel.key), 1), [])

    @property
    def dialect(self) -> str:
        """The database behind the driver, in SQLAlchemy's names, for the rehearsal's rules ("odbc": unknown)."""
        driver = self.connection_string.lower()
        for words, name in ((("postgres", "psql"), "postgresql"), (("mariadb", "mysql"), "mariadb"),
                            (("sqlite",), "sqlite")):
            if any(w in driver for w in words):
                return name
        return "odbc"

    def rehearse_write(self, steps: Sequence[tuple[str, str]], params: Mapping[str, Any]) -> list[Rehearsal]:
        """In order, in one transaction that is rolled back, on a connection of its own that is then closed."""
        try:
            conn = self._open()
        except LedgerlinkError as exc:
            return [Rehearsal(what, sql, "unchecked", str(exc)) for what, sql in steps]

        def execute(sql: str, explain: bool) -> None:
            query, values = to_qmark(("EXPLAIN " if explain else "") + sql, params)
            try:
                cur = conn.cursor()
                cur.execute(query, values)
                if cur.description is not None:
                    cur.fetchall()
                cur.close()
            except pyodbc.Error as exc:
                raise classify(exc, f"rehearsing {readable(sql)}") from None

        try:
            return rehearse_in_order(steps, self.dialect, execute)
        finally:
            with contextlib.suppress(pyodbc.Error):
                conn.rollback()
            with contextlib.suppress(pyodbc.Error):
                conn.close()

    def read_raw(self, entity: str, window: Window, limit: int) -> list[tuple[Any, ...]]:
        sel = self.converters[entity].selection
        cols = ", ".join(self.q(c) for c in sel.columns)
        key = self.q(sel.key)
        after = window.after
        terms: list[str] = []
        params: list[Any] = []
        if sel.watermark:
            wm = self.q(sel.watermark)
            if after is not None:
                terms.append(f"{wm} >= ? AND ({wm} > ? OR {key} > ?)")
                params += [after.watermark, after.watermark, after.key]
            elif window.since is not None:
                terms.append(f"{wm} >= ?")
                params.append(window.since)
            for op, bound in ((">", window.above), ("<=", window.until)):
                if bound is not None:
                    terms.append(f"{wm} {op} ?")
                    params.append(bound)
            order = f"{wm}, {key}"
        else:
            if after is not None:
                terms.append(f"{key} > ?")
                params.append(after.key)
            order = key
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        return self._fetch(f"reading {entity}", self._page(cols, self._source(sel), where, order, limit), params)

    def read_keys(self, entity: str, keys: list[Any]) -> list[tuple[Any, ...]] | None:
        if not keys:
            return []
        sel = self.converters[entity].selection
        cols = ", ".join(self.q(c) for c in sel.columns)
        marks = ", ".join("?" for _ in keys)
        sql = f"SELECT {cols} FROM {self._source(sel)} WHERE {self.q(sel.key)} IN ({marks})"
        return self._fetch(f"re-reading quarantined {entity}", sql, list(keys))

    def keys(self, entity: str, batch_size: int) -> Iterator[list[str]]:
        sel = self.converters[entity].selection
        key = self.q(sel.key)
        last: Any = None
        while True:  # keyset pages, so drivers that cannot stream still use bounded memory
            where, params = (f" WHERE {key} > ?", [last]) if last is not None else ("", [])
            rows = self._fetch(f"listing {entity} keys", self._page(key, self._source(sel), where, key, batch_size),
                               params)
            if not rows:
                return
            yield [str(r[0]) for r in rows]
            last = rows[-1][0]
            if len(rows) < batch_size:
                return

    # ------------------------------------------------------------------------------------------ sink

    def posting_exists(self, reference: str, section: str | None = None) -> bool:
        sql, params = to_qmark(self.write_back_of(section).exists, {**self.mapping.params, "reference": reference})
        return bool(self._fetch("postings existence check", sql, params))

    def _end(self, conn: pyodbc.Connection, commit: bool) -> None:
        if self.sqlite:
            conn.execute("COMMIT" if commit else "ROLLBACK")
        elif commit:
            conn.commit()
        else:
            conn.rollback()

    def write_posting(self, params: Mapping[str, Any]) -> bool:
        """ready (if mapped), the existence check and the writes in one transaction."""
        postings = self.write_back_of(params.get("section"))
        statements = postings.writes
        conn = self._writer_connection()
        context = posting_context(params)
        where = context
        try:
            cur = conn.cursor()
            if self.sqlite:
                cur.execute("BEGIN IMMEDIATE")
            if postings.ready is not None:
                sql, values = to_qmark(postings.ready, params)
                reason = not_ready_reason(cur.execute(sql, values).fetchone())
                if reason is not None:
                    self._end(conn, commit=False)
                    raise NotReady(f"the firm database is not ready: {reason}")
            sql, values = to_qmark(postings.exists, params)
            if cur.execute(sql, values).fetchone() is not None:
                self._end(conn, commit=False)
                return False
            for statement in statements:
                where = f"{context}, statement {readable(statement)}"
                sql, values = to_qmark(statement, params)
                cur.execute(sql, values)
            where = context
            self._end(conn, commit=True)
            return True
        except pyodbc.Error as exc:
            with contextlib.suppress(pyodbc.Error):
                self._end(conn, commit=False)
            self._drop()
            raise classify(exc, where) from None

    def newest_checkpoints(self) -> list[tuple[Any, ...]]:
        if self.mapping.audit is None:
            raise ConfigurationError("the mapping has no audit section")
        return self._fetch(f"reading audit checkpoints from {self.mapping.audit.table}", self.mapping.audit.newest, [])

    def _requests(self) -> RequestTable:
        if self.mapping.requests is None:
            raise ConfigurationError("the mapping has no requests section")
        return self.mapping.requests

    def pending_requests(self, limit: int) -> list[dict[str, Any]]:
        spec = self._requests()
        fields = list(spec.columns.items())
        cols = ", ".join(self.q(c) for c in [spec.key, *[c for _, c in fields]])
        sql = self._page(cols, self.q(spec.table), f" WHERE {self.q(spec.status_column)} = ?", self.q(spec.key), limit)
        rows = self._fetch(f"reading requests from {spec.table}", sql, [spec.pending_value])
        return [{"key": r[0], **{f: r[i] for i, (f, _) in enumerate(fields, 1)}} for r in rows]

    def write_request_result(self, key: Any, status: str, values: Mapping[str, Any]) -> None:
        spec = self._requests()
        sets = {spec.status_column: status} | {spec.write_back[f]: v for f, v in values.items() if f in spec.write_back}
        sql = (f"UPDATE {self.q(spec.table)} SET " + ", ".join(f"{self.q(c)} = ?" for c in sets)
               + f" WHERE {self.q(spec.key)} = ?")
        conn = self._connection()
        try:
            conn.cursor().execute(sql, [*sets.values(), key])
            conn.commit()
        except pyodbc.Error as exc:
            self._drop()
            raise classify(exc, f"writing request {key} in {spec.table}") from None

    def close(self) -> None:
        self._drop()


