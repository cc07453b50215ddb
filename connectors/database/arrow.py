"""The bulk read: a whole entity as Arrow record batches through ADBC, converted column-wise in Arrow.

PostgreSQL sources are read by ADBC with binary COPY in this process; SQLite sources by ADBC in a child process
(``_sqlite_batches`` says why it may never run in this one); MariaDB and MySQL sources, for which there is no ADBC
driver, by connectorx in this process (``_mysql_batches``).

A first full sync (and ``sync --full``) reads millions of rows; the row path spends most of its time in Python's
per-row loop. Here the source is read by the ADBC driver for SQLite or PostgreSQL straight into Arrow, and the
mapping's conversions run as Arrow compute kernels, to the same records the row path makes (``RowConverter``):
keys and numbers as trimmed text, dates as ISO text, money as exact decimal text in the currency's minor unit
(integer minor units or an exact decimal, never a float), statuses through the mapping's values, currency upper
case. Whatever a kernel cannot do exactly goes back to the row path: a column of a type it does not know sends the
whole entity to the row path (``BulkAbandoned``); a value that does not convert (a date that is no date, money
with more decimals than its currency, a NULL amount) sends that row, read again by key through the row path's
driver, which then converts or quarantines it with its field, as today. So the bulk path never decides
anything the row path would decide differently.

pyarrow and the ADBC drivers are the optional ``bulk`` extra, connectorx (some 180 MB installed) the separate
``bulk-mysql`` one; without them ``bulk_unavailable`` says why and the engine keeps the row path.
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.engine import Engine

from agent.core.model import MAX_INTEGER_DIGITS, exponent
from connectors.database.contract import Position, RowConverter, RowError, convert_rows

# pyarrow (the optional bulk extra, some 45 MB once loaded) is loaded by the first bulk read, not by importing
# this module: an agent that never reads in bulk never carries it.
HAVE_ARROW = importlib.util.find_spec("pyarrow") is not None
pa: Any = None
pc: Any = None


def _load_arrow() -> None:
    global pa, pc
    import pyarrow
    import pyarrow.compute
    import pyarrow.ipc

    pa, pc = pyarrow, pyarrow.compute

__all__ = ["ArrowPage", "BulkAbandoned", "arrow_reader", "bulk_unavailable", "last_position"]

KEY_FIELDS = ("client_key", "payer_key", "matter_key", "number")
MONEY_FIELDS = ("amount", "balance")
DATE_FIELDS = ("issue_date", "due_date")


# The reader of each kind of source, and the extra that installs it.
READERS = {"sqlite": ("adbc_driver_sqlite", "bulk"), "postgresql": ("adbc_driver_postgresql", "bulk"),
           "mysql": ("connectorx", "bulk-mysql"), "mariadb": ("connectorx", "bulk-mysql")}


def bulk_unavailable(engine: Engine) -> str | None:
    """Why this source cannot be read in bulk (None: it can)."""
    reader = READERS.get(engine.dialect.name)
    if reader is None:
        return f"no bulk reader is used for {engine.dialect.name} sources"
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return "an in-memory SQLite database cannot be read by another process"
    driver, extra = reader
    if not HAVE_ARROW or importlib.util.find_spec(driver) is None:
        return f"the {extra} extra is not installed; pip install 'ledgerlink[{extra}]'"
    return None


# A SQLite bulk read starts a child process that imports Arrow and ADBC (about 0.1 s each time, more on a busy
# host), while the kernels save about 2 us a row over the row path (bench/README.md: 176k against 130k rows/s):
# an entity of fewer rows than this is read sooner row by row.
SQLITE_BULK_MIN_ROWS = 50_000


def too_small(engine: Engine, source: Any) -> bool:
    """Whether a bulk read of ``source`` would cost more than it saves; counts at most the threshold's rows."""
    if engine.dialect.name != "sqlite":
        return False  # PostgreSQL is read in this process: no child to start
    head = select(literal(1)).select_from(source).limit(SQLITE_BULK_MIN_ROWS).subquery()
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(head)).scalar_one()) < SQLITE_BULK_MIN_ROWS


class BulkAbandoned(Exception):
    """The bulk read could not go on (the ADBC driver refused the connection, the query or a type): the sync
    carries on by the row path, which meets the database's own error if there is one."""


@dataclass
class ArrowPage:
    """One page of records: ``records`` in the mirror table's column order as the state store stores them, and
    the rows the kernels left to the row path, already converted (``rows``) or quarantined (``rejected``)."""

    records: pa.Table
    rows: list[tuple[Any, ...]]
    rejected: list[RowError]

    def values(self) -> list[tuple[Any, ...]]:
        """The records as a SQLite state store's driver takes them (text keys, ISO dates, money as exact text,
        0/1 flags): one C-level list per column, then one tuple per row."""
        if self.records.num_rows == 0:
            return []
        return list(zip(*[c.to_pylist() for c in self.records.columns], strict=True))


def _connect(engine: Engine) -> Any:
    import adbc_driver_postgresql.dbapi as adbc_postgres

    uri = engine.url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    return adbc_postgres.connect(uri)


def last_position(engine: Engine, source: Any, converter: RowConverter) -> Position | None:
    """Where a keyset read of everything would end: the last row by (watermark, key), read before the bulk read
    begins, so a row changed while it runs has a later watermark and is read again by the pass after it."""
    sel = converter.selection
    key = source.c[sel.key]
    if sel.watermark is None:
        return None
    wm = source.c[sel.watermark]
    with engine.connect() as conn:
        row = conn.execute(select(key, wm).order_by(wm.desc(), key.desc()).limit(1)).first()
    return None if row is None else Position(row[1], row[0])


def arrow_reader(engine: Engine, source: Any, converter: RowConverter, batch_size: int,
                 reread: Callable[[list[Any]], list[tuple[Any, ...]] | None]) -> Iterator[ArrowPage]:
    """Every row of the entity, page by page (about ``batch_size`` rows each), converted; ``reread`` reads rows
    by key through the row path (``Connector.read_keys``)."""
    _load_arrow()
    sel = converter.selection
    query = select(*[source.c[c] for c in sel.columns])
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    kernels = _Kernels(converter, reread)
    batches = {"sqlite": _sqlite_batches, "postgresql": _postgres_batches}.get(engine.dialect.name, _mysql_batches)
    for batch in batches(engine, sql, batch_size, converter.entity):
        if batch.num_rows:
            yield kernels.page(batch)


def _postgres_batches(engine: Engine, sql: str, batch_size: int, entity: str) -> Iterator[pa.RecordBatch]:
    """ADBC's PostgreSQL driver in this process (libpq: no second copy of anything the agent uses)."""
    try:  # ADBC's own errors: whatever it cannot do, the row path can still try (and say why if it fails too)
        conn = _connect(engine)
    except Exception as exc:
        raise BulkAbandoned(f"connecting for a bulk read of {entity}: {exc}") from None
    try:
        cur = conn.cursor()
        with contextlib.closing(cur):
            # pages of about batch_size rows of ~100 bytes: each page becomes Python values, so it stays small
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_size * 128)})
            try:
                cur.execute(sql)
                reader = cur.fetch_record_batch()
            except Exception as exc:
                raise BulkAbandoned(f"reading {entity} in bulk: {exc}") from None
            yield from _each(reader, entity)
    finally:
        conn.close()


def _mysql_batches(engine: Engine, sql: str, batch_size: int, entity: str) -> Iterator[pa.RecordBatch]:
    """connectorx (Rust, the MySQL protocol) in this process, streamed as record batches of ``batch_size`` rows
    (``return_type="arrow_stream"``): DECIMAL as decimal128 (exact), DATE as date32, integers as integers, text as
    strings. PyMySQL's own loop read 53k rows/s where this reads 543k (bench/README.md)."""
    import connectorx

    uri = engine.url.set(drivername="mysql", query={}).render_as_string(hide_password=False)
    try:
        reader = connectorx.read_sql(uri, sql, return_type="arrow_stream", batch_size=batch_size)
    except Exception as exc:  # its own errors: the row path meets the database's, if there is one
        raise BulkAbandoned(f"reading {entity} in bulk: {exc}") from None
    yield from _each(reader, entity)


def _sqlite_batches(engine: Engine, sql: str, batch_size: int, entity: str) -> Iterator[pa.RecordBatch]:
    """ADBC's SQLite driver in a child process (``connectors.database.sqlite_reader``), its batches back as an
    Arrow IPC stream: that driver carries its own copy of SQLite, and two copies in one process clear each
    other's POSIX locks on the same file (https://www.sqlite.org/howtocorrupt.html, 2.2.1) while this process's
    sqlite3 writes postings into it. Across processes the locks hold, as for any two programs."""
    command = [sys.executable, "-m", "connectors.database.sqlite_reader", str(engine.url.database), str(batch_size)]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        child.stdin.write(sql.encode())
        child.stdin.close()
        try:
            reader = pa.ipc.open_stream(child.stdout)
            yield from _each(reader, entity)
        except Exception as exc:  # the stream broke: the child's own words say why
            raise BulkAbandoned(f"reading {entity} in bulk: {_last_words(child) or exc}") from None
        # A stream can end cleanly and still be short: only the child's exit status says it read every row.
        if child.wait(timeout=60) != 0:
            raise BulkAbandoned(f"reading {entity} in bulk: {_last_words(child) or f'exit {child.returncode}'}")
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        for stream in (child.stdout, child.stderr):
            stream.close()


def _last_words(child: subprocess.Popen[bytes]) -> str:
    """The last line the child wrote to stderr (its error), once it has ended."""
    assert child.stderr is not None
    if child.poll() is None:
        child.kill()
    child.wait(timeout=30)
    said = child.stderr.read().decode(errors="replace").strip().splitlines()
    return said[-1] if said else ""


def _each(reader: Any, entity: str) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except Exception as exc:
            raise BulkAbandoned(f"{entity}: {exc}") from None
        yield batch


class _Fallback(Exception):
    """A column of a type the kernels do not convert exactly: the page takes the row path."""


class _Kernels:
    """The mapping's conversions as Arrow kernels, per page; ``RowConverter`` is the reference they follow."""

    def __init__(self, converter: RowConverter, reread: Callable[[list[Any]], list[tuple[Any, ...]] | None]) -> None:
        self.reread = reread
        self.c = converter
        self.raw_status = pa.array(sorted(converter.status_of), pa.string())
        self.our_status = pa.array([converter.status_of[v] for v in sorted(converter.status_of)], pa.string())

    def page(self, batch: pa.RecordBatch) -> ArrowPage:
        try:
            columns, bad = self._convert(batch)
        except (_Fallback, pa.ArrowException) as exc:
            # A column of a type the kernels do not convert exactly is so on every page: the entity is read by
            # the row path instead, whose driver types values as the mapping was written against.
            raise BulkAbandoned(f"{self.c.entity}: the bulk kernels cannot convert this entity's columns "
                                f"exactly ({str(exc) or 'a column of a type they do not know'})") from None
        good = _invert(bad)
        records = pa.table(columns).filter(good) if bad is not None else pa.table(columns)
        rows: list[tuple[Any, ...]] = []
        rejected: list[RowError] = []
        if bad is not None:
            rows, rejected = self._row_path(batch.filter(bad))
        return ArrowPage(records, rows, rejected)

    def _row_path(self, left: pa.RecordBatch) -> tuple[list[tuple[Any, ...]], list[RowError]]:
        """The rows the kernels would not decide, read again by key through the row path's own driver (ADBC may
        type a value otherwise: PostgreSQL's money arrives as integer cents) and converted or quarantined there."""
        raw = _python_rows(left)
        keyed = [r for r in raw if r[0] is not None]
        again = self.reread([r[0] for r in keyed]) if keyed else []
        if again is None:  # a connector that cannot re-read by key: these values are all there is
            again = keyed
        rows, rejected = convert_rows(self.c, [*again, *(r for r in raw if r[0] is None)])
        return rows, rejected

    def _convert(self, batch: pa.RecordBatch) -> tuple[dict[str, pa.Array], pa.Array | None]:
        n = batch.num_rows
        cols = [_plain(batch.column(i)) for i in range(batch.num_columns)]
        bad: list[pa.Array] = []
        out: dict[str, pa.Array] = {"key": self._key(cols[0])}
        bad.append(pc.is_null(out["key"]))
        if self.c.selection.deleted:
            out["deleted"] = self._flag(cols[self.c.offset - 1])
        else:
            out["deleted"] = pc.fill_null(pa.nulls(n, pa.int64()), 0)
        for name, col in zip(self.c.names, cols[self.c.offset:], strict=True):
            out[name] = self._field(name, col, bad)
        if self.c.entity == "statements":
            currency = out.get("currency")
            places = self._places(currency)
            for name in MONEY_FIELDS:
                if name in out:
                    out[name] = self._money(out[name], places, bad)
        for field in self.c.fields:
            if field not in out:
                out[field] = pa.array([self.c.defaults[field]] * n, pa.string())
        mask = bad[0]
        for b in bad[1:]:
            mask = pc.or_(mask, b)
        return {f: out[f] for f in self.c.fields}, (mask if pc.any(mask).as_py() else None)

    def _field(self, name: str, col: pa.Array, bad: list[pa.Array]) -> pa.Array:
        if name in MONEY_FIELDS:
            return col  # converted once the page's currency is known
        if name in DATE_FIELDS:
            return self._date(col, bad)
        if name in KEY_FIELDS:
            return self._key(col)
        if name == "status":
            return self._status(col)
        if name == "currency":
            return self._currency(col)
        return self._text(col, empty="" if name == "name" and self.c.entity in ("clients", "payers") else None)

    @staticmethod
    def _key(col: pa.Array) -> pa.Array:
        if pa.types.is_integer(col.type):
            return pc.cast(col, pa.string())
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
        raise _Fallback

    @staticmethod
    def _text(col: pa.Array, empty: str | None) -> pa.Array:
        if pa.types.is_integer(col.type):
            text = pc.cast(col, pa.string())
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            text = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
        else:
            raise _Fallback
        blank = pc.or_kleene(pc.is_null(text), pc.equal(text, ""))
        return pc.if_else(blank, pa.scalar(empty, pa.string()), text)

    @staticmethod
    def _flag(col: pa.Array) -> pa.Array:
        if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type):
            return pc.fill_null(pc.cast(pc.cast(col, pa.bool_()), pa.int64()), 0)
        raise _Fallback

    def _date(self, col: pa.Array, bad: list[pa.Array]) -> pa.Array:
        if pa.types.is_date32(col.type):
            return pc.cast(col, pa.string())
        if pa.types.is_null(col.type):
            return pa.array([None] * len(col), pa.string())
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise _Fallback
        text = pc.cast(col, pa.string())
        parsed = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True)
        iso = pc.cast(pc.cast(parsed, pa.date32()), pa.string())
        # ISO text of exactly ten characters is the fast path; anything else (or no date) is the row path's call
        exact = pc.and_kleene(pc.equal(pc.utf8_length(text), 10), pc.equal(iso, text))
        bad.append(pc.and_kleene(pc.is_valid(text), pc.invert(pc.fill_null(exact, False))))
        return iso

    def _status(self, col: pa.Array) -> pa.Array:
        if pa.types.is_integer(col.type):
            col = pc.cast(col, pa.string())
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise _Fallback
        folded = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(col, pa.string())))
        found = pc.index_in(folded, value_set=self.raw_status)
        return pc.fill_null(pc.take(self.our_status, found), "open")

    def _currency(self, col: pa.Array) -> pa.Array:
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise _Fallback
        raw = pc.cast(col, pa.string())
        blank = pc.fill_null(pc.equal(raw, ""), True)  # as the row path: only NULL or '' is "not given"
        return pc.if_else(blank, pa.scalar(self.c.fixed_currency, pa.string()),
                          pc.utf8_upper(pc.utf8_trim_whitespace(raw)))

    def _places(self, currency: pa.Array | None) -> int:
        """The page's one minor-unit exponent; currencies of different exponents on one page take the row path."""
        if currency is None:
            return exponent(self.c.fixed_currency)
        try:
            places = {exponent(c) for c in pc.unique(currency).to_pylist()}
        except Exception:  # an unknown currency: the row path names it
            raise _Fallback from None
        if len(places) != 1:
            raise _Fallback
        return places.pop()

    def _money(self, col: pa.Array, places: int, bad: list[pa.Array]) -> pa.Array:
        width = MAX_INTEGER_DIGITS + places
        if self.c.minor_units:
            if not pa.types.is_integer(col.type):
                raise _Fallback
            limit = 10 ** width
            out_of_range = pc.or_kleene(pc.greater_equal(col, limit), pc.less_equal(col, -limit))
            bad.append(pc.or_kleene(pc.is_null(col), pc.fill_null(out_of_range, False)))
            safe = pc.if_else(pc.fill_null(out_of_range, False), 0, col)
            units = pc.cast(safe, pa.decimal128(38, 0))
            return pc.cast(units.view(pa.decimal128(38, places)), pa.string())
        if pa.types.is_decimal(col.type) or pa.types.is_string(col.type):
            bad.append(pc.is_null(col))
            try:
                exact = pc.cast(col, pa.decimal128(38, places))  # refuses to drop a digit: then the row path
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise _Fallback from None
            limit = pa.scalar(Decimal(10) ** MAX_INTEGER_DIGITS, pa.decimal128(38, places))
            big = pc.greater_equal(pc.abs(exact), limit)
            bad.append(pc.fill_null(big, False))
            return pc.cast(exact, pa.string())
        raise _Fallback


def _plain(col: Any) -> pa.Array:
    """A column as a plain array: PostgreSQL's numeric arrives as an opaque extension over its exact text."""

    if isinstance(col.type, pa.BaseExtensionType):  # OpaqueType is not an ExtensionType subclass
        col = col.storage
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col


def _python_rows(batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    """Rows as the row path reads them, by position (a column selected twice keeps both)."""
    return list(zip(*[_plain(c).to_pylist() for c in batch.columns], strict=True))


def _invert(mask: pa.Array | None) -> pa.Array | None:

    return None if mask is None else pc.invert(mask)
