"""The connector plugin contract (source and sink for one firm database) and the logic every connector shares.

A connector only knows how to run SQL on its database. Turning firm rows into our records (keys to text, money
to exact Decimal, statuses mapped, naive timestamps given the firm's zone) happens here, once, for all of them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Context, Decimal, Inexact, InvalidOperation
from functools import partial
from itertools import repeat
from operator import mul
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from agent.core.errors import ConfigurationError, DataError, LedgerlinkError
from agent.core.model import MAX_INTEGER_DIGITS, check_decimals, exponent, from_minor, to_decimal
from agent.state.schema import FIRM_TABLES
from connectors.plugins import PluginOptions
from mappings.format import (
    AUDIT_SECTION,
    POSTING_PARAMS,
    SECTIONS,
    EntityMapping,
    MappingFile,
    ProcedurePostings,
    ProcedureWrite,
    SourceConfig,
    SqlPostings,
    SqlWrite,
    SqlWriteBack,
    write_back,
)

__all__ = [
    "EXPLAINS",
    "TRANSACTIONAL_DDL",
    "Batch",
    "BulkRead",
    "Capabilities",
    "Connector",
    "EntityInfo",
    "Position",
    "Rehearsal",
    "RowConverter",
    "RowError",
    "Selection",
    "Window",
    "clock_horizon",
    "convert_rows",
    "is_select",
    "not_ready_reason",
    "posting_context",
    "readable",
    "rehearsal_step",
    "rehearse",
    "rehearse_in_order",
    "same_type",
    "sample_params",
    "source_context",
    "step_back",
]


@dataclass(frozen=True)
class Position:
    """Where an incremental read stands: the last stored row's watermark and key (keyset, never OFFSET)."""

    watermark: Any
    key: Any


@dataclass(frozen=True)
class Window:
    """Which rows one read may return, in (watermark, key) order: after a keyset position, from a watermark on
    (inclusive: the lookback's start), above a settled watermark (exclusive) and up to a horizon (inclusive)."""

    after: Position | None = None
    since: Any = None
    above: Any = None
    until: Any = None


class RowError(DataError):
    """One source row that cannot be used as it stands: quarantined by the sync while the rest of it goes on."""

    def __init__(self, entity: str, key: str | None, number: str | None, field: str | None, reason: str,
                 raw_key: Any = None) -> None:
        self.entity, self.key, self.number, self.field, self.reason = entity, key, number, field, reason
        self.raw_key = raw_key  # as the database typed it, to read the row again by key
        named = f" (number {number})" if number and number != key else ""
        super().__init__(f"{entity} {key if key is not None else '(NULL key)'}{named}"
                         f"{' ' + field if field else ''}: {reason}")


@dataclass(frozen=True)
class Batch:
    """Converted rows plus the position after the last one; stored together so a resume never skips rows.
    ``rejected`` are the rows in the page that could not be converted (the position still moves past them)."""

    entity: str
    rows: list[tuple[Any, ...]]  # records in RowConverter.fields order (the mirror table's columns)
    position: Position | None
    rejected: list[RowError] = field(default_factory=list)


@dataclass(frozen=True)
class EntityInfo:
    entity: str
    count: int
    max_watermark: Any
    null_watermarks: int


@dataclass
class BulkRead:
    """A bulk read (``Connector.bulk_read``): where a keyset read would end, and the pages (``ArrowPage``)."""

    position: Position | None
    pages: Iterator[Any]


@dataclass(frozen=True)
class Selection:
    """The columns one entity read selects, in order: key, watermark, deleted flag, then mapped fields."""

    source: str  # table name or query text
    is_query: bool
    key: str
    watermark: str | None
    deleted: str | None
    fields: list[tuple[str, str]]  # (our field, their column)

    @property
    def columns(self) -> list[str]:
        cols = [self.key]
        if self.watermark:
            cols.append(self.watermark)
        if self.deleted:
            cols.append(self.deleted)
        return cols + [c for _, c in self.fields]

    @classmethod
    def of(cls, em: EntityMapping) -> Selection:
        return cls(
            source=em.table or em.query or "",
            is_query=em.query is not None,
            key=em.key,
            watermark=em.watermark.column if em.watermark else None,
            deleted=em.deleted_column,
            fields=list(em.columns.items()),
        )


def _to_date(value: Any, field: str) -> dt.date | None:
    kind = type(value)
    if kind is dt.date:
        date: dt.date = value  # exactly a date (not a datetime): the common case, no isinstance chain
        return date
    if kind is str and len(value) == 10:  # ISO text (SQLite, ODBC): the common case, one C call
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise DataError(f"{field}: {value!r} is not a date") from None


def same_type(column: Sequence[Any], kind: type) -> bool:
    """Every value in the column exactly of ``kind``: one pass in C, so a column can take its fast path whole."""
    return set(map(type, column)) == {kind}


def _dates(column: Sequence[Any], field: str) -> list[dt.date | None]:
    if same_type(column, dt.date):
        return list(column)
    if same_type(column, str):  # ISO text (SQLite, ODBC): one C call per value
        with contextlib.suppress(ValueError):
            return list(map(dt.date.fromisoformat, column))
    return [_to_date(v, field) for v in column]


def _keys(column: Sequence[Any]) -> list[str | None]:
    if same_type(column, int):
        return list(map(str, column))
    if same_type(column, str):
        return list(map(str.strip, column))
    return list(map(_key, column))


# Quantizing through this context raises instead of rounding: exact money or the slow path that names the row.
_EXACT = Context(prec=40, traps=[Inexact, InvalidOperation])
_LIMIT = Decimal(10) ** MAX_INTEGER_DIGITS


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _key(value: Any) -> str | None:
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is str:
        text: str = value.strip()
        return text
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.hex()
    return str(value).strip()


def _few(column: Sequence[Any], fn: Callable[[Any], Any]) -> list[Any]:
    """A text column of a handful of distinct values (a status, a currency): each converted once, then looked up
    in C. Only for text: a dict would take 1, 1.0 and True for one key, whose texts differ."""
    if not same_type(column, str):
        return list(map(fn, column))
    converted = {value: fn(value) for value in set(column)}
    return list(map(converted.__getitem__, column))


def _memo(fn: Callable[[Any], Any], limit: int = 1024) -> Callable[[Any], Any]:
    """Cache a pure conversion by raw value: a status or currency column has a handful of distinct values."""
    seen: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        try:
            return seen[value]
        except KeyError:
            out = fn(value)
            if len(seen) < limit:
                seen[value] = out
            return out
        except TypeError:  # unhashable raw value
            return fn(value)

    return convert


class RowConverter:
    """Turns raw rows (tuples in ``Selection.columns`` order) into records: tuples in ``fields`` order, which is
    the mirror table's column order, so the state store writes them as they are (no per-row dict)."""

    def __init__(self, entity: str, em: EntityMapping, mapping: MappingFile) -> None:
        self.entity = entity
        self.entity_mapping = em
        self.selection = Selection.of(em)
        self.status_of = {str(v).strip().lower(): ours for ours, values in em.status_values.items() for v in values}
        self.minor_units = em.money == "minor_units"
        self.fixed_currency = em.currency or mapping.currency
        base = 2 if self.selection.watermark else 1
        self.offset = base + (1 if self.selection.deleted else 0)
        self.names = [ours for ours, _ in self.selection.fields]
        self.fns = [self._converter(ours) for ours in self.names]
        self.columns = [self._column(ours, fn) for ours, fn in zip(self.names, self.fns, strict=True)]
        self.fields: tuple[str, ...] = tuple(c.name for c in FIRM_TABLES[entity].columns)
        self.defaults = self._defaults()
        self._quanta: dict[str, Decimal] = {}

    def _defaults(self) -> dict[str, Any]:
        mapped = {ours for ours, _ in self.selection.fields}
        out: dict[str, Any] = {f: None for f in set(self.fields) - mapped - {"key", "deleted"}}
        if self.entity == "statements" and "currency" not in mapped:
            out["currency"] = self.fixed_currency
        if "status" in out:
            out["status"] = "open"
        if self.entity == "matters" and "name" in out:
            out["name"] = ""
        if self.entity in ("clients", "payers") and "name" in out:
            out["name"] = ""
        return out

    def _converter(self, ours: str) -> Callable[[Any], Any]:
        if ours in ("amount", "balance"):
            return lambda v: v  # converted after the currency is known, in _money()
        if ours in ("issue_date", "due_date"):
            return lambda v: _to_date(v, ours)
        if ours in ("client_key", "payer_key", "matter_key", "number"):
            return _key
        if ours == "status":
            return _memo(lambda v: self.status_of.get(str(v).strip().lower(), "open") if v is not None else "open")
        if ours == "currency":
            return _memo(lambda v: (str(v).strip().upper() if v else self.fixed_currency))
        if ours == "name" and self.entity in ("clients", "payers"):
            return lambda v: _text(v) or ""
        return _text

    @staticmethod
    def _column(ours: str, fn: Callable[[Any], Any]) -> Callable[[Sequence[Any]], list[Any]]:
        """A whole column at once: the fast path for the common types, else ``fn`` value by value."""
        if ours in ("issue_date", "due_date"):
            return lambda col: _dates(col, ours)
        if ours in ("client_key", "payer_key", "matter_key", "number"):
            return _keys
        if ours in ("status", "currency"):
            return lambda col: _few(col, fn)
        return lambda col: list(map(fn, col))

    def _quantum(self, currency: str) -> Decimal:
        quantum = self._quanta.get(currency)
        if quantum is None:
            quantum = self._quanta[currency] = Decimal(1).scaleb(-exponent(currency))
        return quantum

    def _money_column(self, column: Sequence[Any], currencies: Iterable[str], name: str) -> list[Decimal]:
        """Exact money for a page: one currency and one driver type take C-speed paths (bounds checked, never
        rounded); anything else goes value by value through ``_money``, which names what is wrong."""
        distinct = {*currencies} if not isinstance(currencies, repeat) else {self.fixed_currency}
        if len(distinct) == 1 and column:
            quantum = self._quantum(next(iter(distinct)))
            if self.minor_units and same_type(column, int):
                out = list(map(mul, map(Decimal, column), repeat(quantum)))
            elif not self.minor_units and same_type(column, Decimal):
                try:
                    out = list(map(_EXACT.quantize, column, repeat(quantum)))
                except (Inexact, InvalidOperation):
                    out = []
            else:
                out = []
            if out and min(out) > -_LIMIT and max(out) < _LIMIT:
                return out
        return list(map(self._money, column, currencies, repeat(name)))

    def _money(self, raw: Any, currency: str, name: str) -> Decimal:
        """Exact money from a database value; the common types take a fast path (this runs twice per row).
        A bad value raises RowError naming only the field: the caller adds the row."""
        quantum = self._quantum(currency)
        fast: Decimal | None = None
        if self.minor_units and type(raw) is int:
            fast = Decimal(raw) * quantum
        elif not self.minor_units and type(raw) is Decimal and raw.is_finite() and raw == raw.quantize(quantum):
            fast = raw.quantize(quantum)
        if fast is not None and -_LIMIT < fast < _LIMIT:
            return fast
        if raw is None:
            raise RowError("statements", None, None, name, "is NULL")
        try:
            if self.minor_units:
                if isinstance(raw, float) and not raw.is_integer():
                    raise DataError(f"{raw!r} is not whole minor units")
                return from_minor(int(to_decimal(raw, field=name)), currency)
            return check_decimals(to_decimal(raw, field=name), currency, field=name)
        except (DataError, ValueError, ArithmeticError) as exc:
            raise RowError("statements", None, None, name, str(exc).removeprefix(f"{name}: ")) from None

    def check_width(self, row: tuple[Any, ...] | list[Any]) -> None:
        """A page whose rows do not have the mapped columns is a mapping error, not a bad row."""
        if len(row) - self.offset != len(self.fns):
            raise DataError(f"{self.entity}: a row has {len(row) - self.offset} mapped values, "
                            f"expected {len(self.fns)}")

    def convert_page(self, raw: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Records for a page, converted column by column (one tight loop per column, no per-row dict). Raises
        DataError on the first bad value: the caller then converts row by row to set the bad ones aside."""
        if not raw:
            return []
        cols = list(zip(*raw, strict=True))
        keys = _keys(cols[0])
        if None in keys:
            raise RowError(self.entity, None, None, self.selection.key, "the key is NULL")
        out: dict[str, Any] = {"key": keys}
        out["deleted"] = [bool(v) for v in cols[self.offset - 1]] if self.selection.deleted else repeat(False)
        for name, convert, col in zip(self.names, self.columns, cols[self.offset:]):  # noqa: B905 - width checked
            out[name] = convert(col)
        if self.entity == "statements":
            currencies = out.get("currency") or repeat(self.fixed_currency)
            for name in ("amount", "balance"):
                out[name] = self._money_column(out[name], currencies, name)
        columns = [out[f] if f in out else repeat(self.defaults[f]) for f in self.fields]
        return list(zip(*columns))  # noqa: B905 - repeat() columns are endless by design

    def convert(self, row: tuple[Any, ...] | list[Any]) -> tuple[Any, ...]:
        """One record, or RowError naming the row (key and the firm's number) and the field that is wrong."""
        self.check_width(row)
        try:
            return self.convert_page([tuple(row)])[0]
        except DataError as exc:
            raise self._row_error(row, exc) from None

    def _row_error(self, row: tuple[Any, ...] | list[Any], exc: DataError) -> RowError:
        """The slow path after a conversion failed: which field, and the row's own number if it converts."""
        key = _key(row[0])
        if key is None:
            return RowError(self.entity, None, None, self.selection.key, "the key is NULL", row[0])
        values = row[self.offset:]
        number = None
        if "number" in self.names:
            with contextlib.suppress(DataError):
                number = _key(values[self.names.index("number")])
        if isinstance(exc, RowError):  # money: the field is known, the row is added here
            return RowError(self.entity, key, number, exc.field, exc.reason, row[0])
        for name, fn, value in zip(self.names, self.fns, values):  # noqa: B905 - lengths checked by convert
            try:
                fn(value)
            except DataError as err:
                return RowError(self.entity, key, number, name, str(err).removeprefix(f"{name}: "), row[0])
        return RowError(self.entity, key, number, None, "a value could not be converted", row[0])


def convert_rows(converter: RowConverter, raw: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[RowError]]:
    """Convert a page; a row that cannot be used is set aside (quarantined), never allowed to stop the page."""
    if not raw:
        return [], []
    converter.check_width(raw[0])
    try:
        return converter.convert_page(raw), []  # the common case: column by column, no per-row try
    except DataError:
        pass
    rows: list[tuple[Any, ...]] = []
    rejected: list[RowError] = []
    for r in raw:
        try:
            rows.append(converter.convert(r))
        except RowError as exc:
            rejected.append(exc)
    return rows, rejected


def readable(sql: str) -> str:
    """A query whole, on one line: error messages show exactly what ran, never a cut-off prefix."""
    return " ".join(sql.split())


def source_context(entity: str, selection: Selection) -> str:
    """What an entity read says in an error: the table, or the whole query."""
    return f"reading {entity} from {'query ' + readable(selection.source) if selection.is_query else selection.source}"


def posting_context(params: Mapping[str, Any]) -> str:
    """What a posting says in an error: our reference and the firm's own bill number, which staff search by."""
    number = params.get("statement_number")
    key = params.get("statement_key")
    where = f" (statement {number}, key {key})" if number and number != key else (f" (statement {key})" if key else "")
    return f"posting {params.get('reference')}{where}"


def not_ready_reason(row: Any) -> str | None:
    """The verdict of a ``postings.ready`` row: None when the firm database can take the write now, else why not.

    The first column is the verdict (true, non-zero, 'y'/'yes'/'true'/'1'); an optional second one the reason.
    """
    if row is None:
        return "the mapping's ready query returned no row"
    value = row[0]
    if isinstance(value, str):
        ok = value.strip().lower() in ("1", "t", "true", "y", "yes")
    else:
        ok = value is not None and bool(value)
    if ok:
        return None
    reason = row[1] if len(row) > 1 and row[1] not in (None, "") else None
    return str(reason).strip() if reason is not None else "the mapping's ready query says not now"


@dataclass(frozen=True)
class Rehearsal:
    """One mapped query or postings statement tried against the firm database without changing it.

    ``refused``: the database says the mapping is wrong (a missing column or table, bad syntax); ``unchecked``:
    it could not be tried (the database is unreachable, or a procedure that might commit); ``ok`` may carry a
    note, e.g. that the made-up sample values broke a constraint, which says nothing against the mapping.
    """

    what: str
    sql: str | None
    verdict: Literal["ok", "refused", "unchecked"]
    message: str | None = None


def rehearse(what: str, sql: str | None, attempt: Callable[[], object]) -> Rehearsal:
    try:
        attempt()
    except ConfigurationError as exc:
        return Rehearsal(what, sql, "refused", str(exc))
    except DataError as exc:
        return Rehearsal(what, sql, "ok", f"the sample values were rejected, as made-up values may be: {exc}")
    except LedgerlinkError as exc:
        return Rehearsal(what, sql, "unchecked", str(exc))
    return Rehearsal(what, sql, "ok")


def sample_params(mapping: MappingFile) -> dict[str, Any]:
    """Made-up values of the right types for every posting parameter, to rehearse statements with."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
    values: dict[str, Any] = {
        "reference": "ledgerlink-dry-run", "payment_id": "ledgerlink-dry-run", "provider": "sandbox",
        "kind": "payment", "amount": Decimal("0.01"), "amount_abs": Decimal("0.01"), "amount_minor": 1,
        "amount_text": "0.01", "currency": mapping.currency, "statement_key": "0", "statement_number": "0",
        "matter_key": "0", "matter_number": "0", "client_key": None, "paid_at": now, "paid_on": now.date(),
        "paid_at_local": now, "paid_on_local": now.date(), "posting_uuid": "00000000-0000-0000-0000-000000000000",
        "posting_uuid_hex": "0" * 32, "method": "bank", "description": "ledgerlink dry run", "link_id": "dry-run",
        "payer_name": "Ledgerlink Dry Run",
        "account": "operating", "account_kind": "operating", "payout_id": "dry-run", "bank_reference": "DRY-RUN",
        "from_account": "operating", "section": None,
    }
    assert set(values) == set(POSTING_PARAMS), "every posting parameter needs a sample value"
    return {**mapping.params, **values}


def is_select(sql: str) -> bool:
    return sql.lstrip().lower().startswith(("select", "with"))


def _is_dml(sql: str) -> bool:
    return sql.lstrip().lower().startswith(("insert", "update", "delete", "merge", "replace"))


def _is_temporary_ddl(sql: str) -> bool:
    words = sql.lower().split()
    return words[:1] in (["create"], ["drop"]) and "temporary" in words[1:3]


EXPLAINS = ("postgresql", "mysql", "mariadb", "sqlite")  # dialects whose EXPLAIN checks a write without running it
TRANSACTIONAL_DDL = ("postgresql", "sqlite")  # CREATE/DROP are undone by a rollback; MariaDB's commit by themselves


def rehearsal_step(dialect: str, sql: str) -> Literal["run", "explain", "skip"]:
    """How the rehearsal tries one statement of a write, in order, inside the transaction it rolls back.

    A write (INSERT, UPDATE ...) is EXPLAINed where the dialect can, so no identity or sequence number is used up;
    everything else runs as the write runs it, so a later statement finds the TEMP table or the rows an earlier one
    made. Where a rollback cannot undo a statement (MariaDB's DDL, other than TEMPORARY tables, commits by itself),
    it is not tried."""
    if is_select(sql):
        return "run"
    if dialect not in EXPLAINS:
        return "run"
    if _is_dml(sql):
        return "explain"
    if dialect in TRANSACTIONAL_DDL or _is_temporary_ddl(sql):
        return "run"
    return "skip"


def rehearse_in_order(steps: Sequence[tuple[str, str]], dialect: str,
                      execute: Callable[[str, bool], object]) -> list[Rehearsal]:
    """Each ``(what, sql)`` tried in order with ``execute(sql, explain)`` in the caller's transaction (which the
    caller rolls back): the first refusal ends it, and the statements after it are reported unchecked."""
    out: list[Rehearsal] = []
    for i, (what, sql) in enumerate(steps):
        step = rehearsal_step(dialect, sql)
        if step == "skip":
            out.append(Rehearsal(what, sql, "unchecked", f"not tried: on {dialect} this statement commits by itself"))
            continue
        verdict = rehearse(what, sql, partial(execute, sql, step == "explain"))
        out.append(verdict)
        if verdict.verdict != "ok" or verdict.message:
            out += [Rehearsal(w, q, "unchecked", f"not tried: {what} came first and did not go through")
                    for w, q in steps[i + 1:]]
            break
    return out


def step_back(value: Any, seconds: int) -> Any:
    """The lookback start: re-read rows that committed late with an older timestamp. Only time moves back."""
    if seconds <= 0 or value is None:
        return value
    if isinstance(value, dt.datetime):
        return value - dt.timedelta(seconds=seconds)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
        sep = "T" if "T" in value else " "
        return (parsed - dt.timedelta(seconds=seconds)).isoformat(sep=sep)
    return value


def clock_horizon(sample: Any, now: dt.datetime, seconds: int, zone: ZoneInfo) -> Any:
    """``now`` less the lookback, in the watermark's own form (that of ``sample``): a transaction commits within
    the lookback of its timestamp, so every row at or before the horizon is final. None when the watermark is
    no time (a rowversion) or text of a shape we cannot write: then only the lookback protects late rows."""
    at = now - dt.timedelta(seconds=seconds)
    if isinstance(sample, dt.datetime):
        return at if sample.tzinfo is not None else at.astimezone(zone).replace(tzinfo=None)
    if not isinstance(sample, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(sample)
    except ValueError:
        return None
    local = at.astimezone(parsed.tzinfo or zone)
    if parsed.tzinfo is None:
        local = local.replace(tzinfo=None)
    sep = "T" if "T" in sample else " "
    for spec in ("seconds", "milliseconds", "microseconds"):
        text = local.isoformat(sep=sep, timespec=spec)
        if len(text) == len(sample):  # the same shape, so text order is time order
            return text
    return None


@dataclass(frozen=True)
class Capabilities:
    """What one connector can do beyond the abstract methods, declared once on its class and read by the sync
    engine, ``check`` and the connector kit alike (each flag true exactly when the class implements the method)."""

    # The source database works in another process (a server): the sync reads the next page on a thread while it
    # stores this one. An in-process engine (SQLite) would only take turns with the store for the GIL, and
    # measured slower that way (bench/sync.py).
    reads_elsewhere: bool = True
    bulk_read: bool = False  # whole entities as Arrow record batches (bulk_read), for a full sync
    read_keys: bool = False  # raw rows by key (read_keys): a quarantined row is retried on every pass
    rehearses_writes: bool = False  # postings statements tried in a rolled-back transaction (rehearse_write)


class Connector(ABC):
    """One firm database: read mapped entities incrementally, and write postings idempotently.

    Implementations raise agent.core.errors.TransientError for connection drops, deadlocks and lock timeouts, and
    ConfigurationError (with the database's own message) for bad SQL or missing tables and columns.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    Options: ClassVar[type[PluginOptions]] = PluginOptions  # the mapping's ``source.options``; none by default

    def __init__(self, mapping: MappingFile, password: str | None = None) -> None:
        self.options = self.options_of(mapping.source)
        self.mapping = mapping
        self.password = password
        self.zone = ZoneInfo(mapping.timezone)
        # keyed by plain str: callers name an entity with text (the CLI, the sync's state rows)
        self.converters: dict[str, RowConverter] = {
            e: RowConverter(e, em, mapping) for e, em in mapping.entities.items()}

    @classmethod
    def options_of(cls, source: SourceConfig) -> PluginOptions:
        """The mapping's ``source.options`` as this connector's model; a ConfigurationError naming a bad key."""
        return cls.Options.parse(source.options, "source.options", f"the {cls.name} connector")

    @property
    def reads_elsewhere(self) -> bool:
        """Whether this database works in another process (``Capabilities.reads_elsewhere``); an instance may
        know better than its class (the sqlalchemy connector on a SQLite file: no)."""
        return self.capabilities.reads_elsewhere

    @classmethod
    def declaration_problems(cls) -> list[str]:
        """What is untrue in the class's declarations (plugins.load refuses the plugin for any); not overridden."""
        caps = getattr(cls, "capabilities", None)
        if not isinstance(caps, Capabilities):
            return [f"{cls.__name__}.capabilities is not a connectors.database.contract.Capabilities"]
        problems = [] if isinstance(getattr(cls, "name", None), str) else [f"{cls.__name__}.name is not set"]
        if not (isinstance(cls.Options, type) and issubclass(cls.Options, PluginOptions)):
            problems.append(f"{cls.__name__}.Options is not a connectors.plugins.PluginOptions")
        for flag, method in (("bulk_read", "bulk_read"), ("read_keys", "read_keys"),
                             ("rehearses_writes", "rehearse_write")):
            keeps = getattr(cls, method) is not getattr(Connector, method)
            if getattr(caps, flag) != keeps:
                said = "declares" if getattr(caps, flag) else "does not declare"
                does = "does not implement" if not keeps else "implements"
                problems.append(f"{cls.__name__}.capabilities {said} {flag} but {does} Connector.{method}")
        return problems

    @abstractmethod
    def check(self) -> None:
        """Connect and run a trivial query."""

    @abstractmethod
    def discover(self) -> dict[str, EntityInfo]:
        """Per mapped entity: that its columns exist, its row count and newest watermark."""

    @abstractmethod
    def read_raw(self, entity: str, window: Window, limit: int) -> list[tuple[Any, ...]]:
        """One page of raw rows in ``window``, ordered by (watermark, key), or by key without a watermark."""

    @abstractmethod
    def keys(self, entity: str, batch_size: int) -> Iterator[list[str]]:
        """Every key currently in the source (for noticing hard deletes), streamed in batches."""

    @abstractmethod
    def posting_exists(self, reference: str, section: str | None = None) -> bool:
        """Whether the existence check of the write-back ``section`` (None: payments) finds ``reference``."""

    @abstractmethod
    def write_posting(self, params: Mapping[str, Any]) -> bool:
        """In ONE transaction: the section's ready check (if any), its existence check on params['reference'],
        then its writes, for the write-back section params.get('section') names (None: payments; see
        ``write_back_of``). Returns False when the reference was already there (nothing written). Every
        write-back section goes through this one path."""

    def write_back_of(self, section: str | None) -> SqlWriteBack:
        """The mapping's SQL or procedure write-back for ``section``: one lookup for every connector. The
        ``audit`` section is the insert of a signed audit checkpoint (``write_checkpoint``)."""
        if section == AUDIT_SECTION:
            if self.mapping.audit is None:
                raise ConfigurationError("the mapping has no audit section")
            return self.mapping.audit.write
        postings = self.mapping.postings
        if not isinstance(postings, SqlPostings | ProcedurePostings):
            raise ConfigurationError("the mapping has no SQL or procedure postings section")
        return write_back(postings, section)

    def read_keys(self, entity: str, keys: list[Any]) -> list[tuple[Any, ...]] | None:
        """Raw rows (``Selection.columns`` order) for these keys as the database types them, to retry quarantined
        rows on every pass. None: this connector cannot, so such a row is retried when it changes."""
        return None

    def bulk_read(self, entity: str, batch_size: int) -> BulkRead | None:
        """Optional: every row of the entity as pages of Arrow records (``connectors.database.arrow``), with the
        position a keyset read of everything would end at, taken before the read. None: no bulk path here."""
        return None

    def read_rows(self, entity: str, keys: list[Any]) -> Batch | None:
        """Converted rows for these keys (position None: a re-read moves no checkpoint)."""
        raw = self.read_keys(entity, keys)
        if raw is None:
            return None
        rows, rejected = convert_rows(self.converters[entity], raw)
        return Batch(entity, rows, None, rejected)

    def probe(self, entity: str) -> None:
        """Run the entity's read once (one row); the database's error if a mapped table or column is missing."""
        self.read_raw(entity, Window(), 1)

    def rehearse_write(self, steps: Sequence[tuple[str, str]], params: Mapping[str, Any]) -> list[Rehearsal]:
        """Try one write's statements (ready, exists, then its statements) in order in one transaction that is
        rolled back, as ``write_posting`` runs them (see rehearse_in_order). Connectors that cannot say so."""
        reason = f"the {self.name} connector cannot rehearse postings statements"
        return [Rehearsal(what, sql, "unchecked", reason) for what, sql in steps]

    def dry_run(self) -> list[Rehearsal]:
        """Every mapped read and every postings statement, tried without a change: ``check`` and hot reload run
        this so a mapping naming a missing column is caught before a payment is."""
        out = [rehearse(f"entities.{e}", c.selection.source if c.selection.is_query else None, partial(self.probe, e))
               for e, c in self.converters.items()]
        params = sample_params(self.mapping)
        writes: list[tuple[str, SqlWriteBack]] = []
        if self.mapping.audit is not None:
            out.append(rehearse("audit.newest", self.mapping.audit.newest, self.newest_checkpoints))
            writes.append(("audit", self.mapping.audit.write))
            params |= {"seq": 0, "hash": "0" * 64, "at": "2000-01-01T00:00:00Z", "signer": "0" * 64, "sig": "0" * 128}
        postings = self.mapping.postings
        if isinstance(postings, SqlPostings | ProcedurePostings):
            writes.append(("postings", postings))
            writes += [(f"postings.{name}", found) for name in SECTIONS
                       if (found := getattr(postings, name)) is not None]
        for where, write in writes:
            sqls = [(f"{where}.ready", write.ready)] if write.ready else []
            sqls.append((f"{where}.exists", write.exists))
            if isinstance(write, SqlWrite):
                sqls += [(f"{where}.statements.{i}", sql) for i, sql in enumerate(write.statements)]
            out += self.rehearse_write(sqls, params)
            if isinstance(write, ProcedureWrite):
                out.append(Rehearsal(f"{where}.call", write.call, "unchecked",
                                     "a stored procedure is not rehearsed: it could commit on its own"))
        return out

    def write_checkpoint(self, fields: Mapping[str, Any]) -> bool:
        """Insert one signed audit checkpoint (AUDIT_FIELDS) into the mapping's audit table, idempotently: the
        (seq, hash) check and the insert share one transaction, as a posting's do. False: it was there."""
        return self.write_posting({**fields, "section": AUDIT_SECTION,
                                   "reference": f"audit checkpoint of entry {fields['seq']}"})

    def newest_checkpoints(self) -> list[tuple[Any, ...]]:
        """The audit table's rows of the highest seq, in AUDIT_FIELDS order, as the database types them."""
        raise ConfigurationError(f"the {self.name} connector cannot read an audit table")

    def pending_requests(self, limit: int) -> list[dict[str, Any]]:
        """Rows of the mapping's request table waiting for a link: {'key', 'matter', 'amount', ...}."""
        raise ConfigurationError(f"the {self.name} connector cannot read request tables")

    def write_request_result(self, key: Any, status: str, values: Mapping[str, Any]) -> None:
        """Set a request row's status and write-back columns (url, link_id, error, link_status)."""
        raise ConfigurationError(f"the {self.name} connector cannot write request tables")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def horizon(self, entity: str, sample: Any, now: dt.datetime) -> Any:
        """The settle horizon for ``entity`` at ``now`` (see clock_horizon), like ``sample`` (a watermark)."""
        em = self.converters[entity].entity_mapping
        if em.watermark is None or sample is None:
            return None
        zone = ZoneInfo(em.watermark.timezone) if em.watermark.timezone else self.zone
        return clock_horizon(sample, now, em.watermark.lookback_seconds, zone)

    def read(self, entity: str, start: Position | None, batch_size: int, settled: Any = None,
             horizon: Any = None) -> Iterator[Batch]:
        """Converted batches from ``start`` (None: everything), each with the position after its last row.

        Rows at or before ``settled`` are final in the mirror. Those after it and up to ``horizon`` (now less the
        lookback) have become final since the last pass and are re-read once, so a row that committed late with
        an older timestamp is picked up; those between the horizon and ``start`` wait until the horizon passes
        them, so a bulk change is not re-read on every pass. These re-read batches have no position (they move
        no checkpoint). Without ``settled`` (a first pass since an older agent, a watermark that is no time) a
        start is re-read with the lookback window. Re-reading is harmless because the state store upserts.
        """
        for window, moves in self._windows(entity, start, settled, horizon):
            yield from self._scan(entity, window, batch_size, moves)

    def _windows(self, entity: str, start: Position | None, settled: Any,
                 horizon: Any) -> list[tuple[Window, bool]]:
        """The reads of one pass, each with whether its batches move the checkpoint."""
        em = self.converters[entity].entity_mapping
        if start is None or em.watermark is None:
            return [(Window(after=start), True)]
        onward = (Window(after=start), True)
        if settled is not None and horizon is not None:
            try:
                top = min(horizon, start.watermark)
                return [(Window(above=settled, until=top), False), onward] if settled < top else [onward]
            except TypeError:  # the watermark changed type (a remapped column): fall back to the lookback
                pass
        since = step_back(start.watermark, em.watermark.lookback_seconds)
        return [onward if since == start.watermark else (Window(since=since), True)]

    def _scan(self, entity: str, window: Window, batch_size: int, moves: bool) -> Iterator[Batch]:
        converter = self.converters[entity]
        has_wm = converter.selection.watermark is not None
        while True:
            raw = self.read_raw(entity, window, batch_size)
            if not raw:
                return
            rows, rejected = convert_rows(converter, raw)
            last = raw[-1]
            after = Position(last[1], last[0]) if has_wm else Position(None, last[0])
            yield Batch(entity, rows, after if moves else None, rejected)
            if len(raw) < batch_size:
                return
            window = replace(window, after=after, since=None)
