"""Source sync: firm database -> connector -> state store mirror, incremental and resumable.

Each batch and the checkpoint after it are written in one state-store transaction, so an interrupted sync
resumes exactly where the last stored batch ended. Rows are upserted, so the lookback re-read is harmless.
Hard deletes are noticed by a key sweep: every source key goes into a temporary table and rows missing from it
are marked deleted (memory stays bounded however many rows there are).

One bad row (an amount that is not whole minor units) never stops a sync: it is quarantined with its entity, key,
the firm's number, field and reason (visible in ``check`` and ``/status``), the rest of its batch is stored, and
it is re-read by key on every pass until it converts or is gone from the source.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from itertools import repeat
from operator import itemgetter
from queue import Full, Queue
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Column, Connection, Date, Index, MetaData, Table, select, update

from agent.core.retry import call
from agent.state import StateStore
from agent.state.mirror import mirror_component
from agent.state.schema import FIRM_TABLES, KEY, checkpoints, quarantine
from agent.state.search import SearchIndex
from agent.state.store import dumps_watermark, loads_watermark, utcnow
from agent.state.types import DecimalText
from connectors.database.arrow import BulkAbandoned
from connectors.database.contract import Batch, BulkRead, Connector, Position, same_type
from mappings.format import EntityName

log = logging.getLogger("ledgerlink.sync")
T = TypeVar("T")
ORDER: tuple[EntityName, ...] = ("clients", "payers", "matters", "statements")
Progress = Callable[[str, int], None]


@dataclass
class SyncResult:
    rows: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def summary(self) -> str:
        parts = [f"{e} {n}" for e, n in self.rows.items()]
        gone = [f"{e} {n} deleted" for e, n in self.deleted.items() if n]
        held = [f"{e} {n} quarantined" for e, n in self.quarantined.items() if n]
        return (f"synced {self.total} rows in {self.seconds:.2f}s "
                f"({', '.join(parts + gone + held) or 'nothing mapped'})")


def _money_text(value: Any) -> str | None:
    if type(value) is Decimal:
        return format(value, "f")
    if value is None:
        return None
    raise TypeError(f"money must be Decimal, got {type(value).__name__}: {value!r}")


def _money_texts(column: Sequence[Any]) -> list[str | None]:
    """Exact text for a column of money (a float never gets here: it raises). ``str`` is the same text as
    ``format(v, "f")`` for money (exponent 0 to -4) at half the cost; a value it would write with an exponent
    sends the column the slow way."""
    if same_type(column, Decimal):
        texts = list(map(str, column))
        if not any("E" in t for t in texts):
            return cast(list[str | None], texts)
        return list(map(format, column, repeat("f")))
    return list(map(_money_text, column))


def _iso_texts(column: Sequence[Any]) -> list[str | None]:
    """ISO text of a date column: a page holds a few hundred distinct dates, each formatted once."""
    if same_type(column, dt.date):
        texts = {day: day.isoformat() for day in set(column)}
        return list(map(texts.__getitem__, column))
    return [None if v is None else v.isoformat() for v in column]


@cache
def _bulk_upsert(table: Table, dialect: str) -> tuple[str, list[tuple[int, Callable[[Sequence[Any]], list[Any]]]]]:
    """INSERT ... ON CONFLICT DO UPDATE as driver SQL, with per-column value conversions matching the column
    types (DecimalText as exact text, dates as ISO text on SQLite). Going around SQLAlchemy's per-row parameter
    processing is what lets a full sync keep pace with the source driver."""
    names = [c.name for c in table.columns]
    mark = "?" if dialect == "sqlite" else "%s"
    updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != "key")
    sql = (f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))}) "
           f"ON CONFLICT (key) DO UPDATE SET {updates}")
    convert: list[tuple[int, Callable[[Sequence[Any]], list[Any]]]] = []
    for i, column in enumerate(table.columns):
        if isinstance(column.type, DecimalText):
            convert.append((i, _money_texts))
        elif isinstance(column.type, Date) and dialect == "sqlite":
            convert.append((i, _iso_texts))
    return sql, convert


def driver_values(table: Table, dialect: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Records (tuples in the table's column order, as the connector's converter makes them) as the state
    store's driver takes them, converted column by column (one tight loop per converted column)."""
    convert = _bulk_upsert(table, dialect)[1] if dialect in ("sqlite", "postgresql") else []
    if not rows or not convert:
        return rows
    cols: list[Any] = list(zip(*rows, strict=True))
    for i, fn in convert:
        cols[i] = fn(cols[i])
    return list(zip(*cols, strict=True))


def _upsert(conn: Connection, table: Table, rows: list[tuple[Any, ...]],
            values: list[tuple[Any, ...]] | None = None) -> None:
    """Records upserted by key; ``values`` are the same already made driver values (by driver_values)."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        values = values or driver_values(table, dialect, rows)
        if dialect == "sqlite":  # in key order, each b-tree page is visited once per batch (stable: a key read
            values = sorted(values, key=itemgetter(0))  # twice keeps its last version)
        conn.exec_driver_sql(_bulk_upsert(table, dialect)[0], values)
        return
    keys = [r[0] for r in rows]
    for start in range(0, len(keys), 500):
        conn.execute(table.delete().where(table.c.key.in_(keys[start : start + 500])))
    names = [c.name for c in table.columns]
    conn.execute(table.insert(), [dict(zip(names, r, strict=True)) for r in rows])


@contextmanager
def _bulk_allocation() -> Iterator[None]:
    """Fewer garbage collections while a pass runs: a page makes tens of thousands of tuples, each of which
    counts towards the collector's next run, and collections (which walk every live container) took a third of
    the conversion time. Values are plain and hold no cycles; the thresholds are restored afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], 50_000), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


class _ReadAhead(Generic[T]):
    """Items made by a thread while the caller handles the one before: the source read, conversion and driver
    values overlap the state-store write (SQLite and the drivers release the GIL while they work). At most
    ``depth`` items wait, so memory stays bounded; the reader's error is raised in the caller, and leaving early
    stops it."""

    def __init__(self, items: Iterator[T], depth: int = 2) -> None:
        self.items = items
        self.ready: Queue[tuple[bool, T | None, BaseException | None]] = Queue(depth)
        self.stop = threading.Event()

    def _hand_over(self, item: tuple[bool, T | None, BaseException | None]) -> bool:
        while not self.stop.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def _read(self) -> None:
        try:
            for item in self.items:
                if not self._hand_over((False, item, None)):
                    return
            self._hand_over((True, None, None))
        except BaseException as exc:
            self._hand_over((True, None, exc))

    def __iter__(self) -> Iterator[T]:
        reader = threading.Thread(target=self._read, name="ledgerlink-sync-read", daemon=True)
        reader.start()
        try:
            while True:
                done, item, error = self.ready.get()
                if error is not None:
                    raise error
                if done:
                    return
                yield cast(T, item)
        finally:
            self.stop.set()
            reader.join()


def _digest(row: Iterable[Any]) -> str:
    """A content hash of one mirror row (columns in table order): equal values, equal digest, whatever the driver
    returned them as (money as exact text, dates as ISO text)."""
    parts = [format(v, "f") if type(v) is Decimal else v.isoformat() if hasattr(v, "isoformat") else repr(v)
             for v in row]
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


class Syncer:
    def __init__(self, store: StateStore, connector: Connector, batch_size: int = 5000,
                 clock: Callable[[], dt.datetime] = utcnow, bulk: bool = True) -> None:
        self.store = store
        self.connector = connector
        self.batch_size = batch_size
        # a pass from no checkpoint (a first sync, sync --full) reads through Arrow when the source can; the
        # records are written by the store's own driver (SQLite only: a date is ISO text there)
        self.bulk = bulk and store.engine.dialect.name == "sqlite"
        self.clock = clock  # when a pass begins: the settle horizon is measured from it
        self._indexed: set[str] = set()  # entities whose mirror indexes this process has seen exist
        self.search = SearchIndex()  # what this syncer's stored batches owe the search index

    def entities(self) -> list[EntityName]:
        return [e for e in ORDER if e in self.connector.mapping.entities]

    def position(self, entity: str) -> Position | None:
        return self._checkpoint(entity)[0]

    def _checkpoint(self, entity: str) -> tuple[Position | None, Any]:
        """The last stored row's position, and the watermark through which every row is final (None: unknown)."""
        with self.store.read() as conn:
            row = conn.execute(select(checkpoints).where(checkpoints.c.entity == entity)).mappings().first()
        if row is None:
            return None, None
        return (Position(loads_watermark(row["watermark"]), loads_watermark(row["last_key"])),
                loads_watermark(row["settled"]))

    def _settle(self, entity: str, last: Position | None, began: dt.datetime) -> None:
        """After a whole pass (``last``: where it ended): every row at or before the horizon of when it began is
        final in the mirror."""
        settled = self.connector.horizon(entity, last.watermark if last else None, began)
        if settled is not None:
            with self.store.begin() as conn:
                conn.execute(update(checkpoints).where(checkpoints.c.entity == entity)
                             .values(settled=dumps_watermark(settled)))

    def reset(self, entity: str | None = None) -> None:
        with self.store.begin() as conn:
            stmt = checkpoints.delete()
            conn.execute(stmt if entity is None else stmt.where(checkpoints.c.entity == entity))

    def _store(self, batch: Batch, checkpoint: bool = True, prepared: list[tuple[Any, ...]] | None = None) -> None:
        table = FIRM_TABLES[batch.entity]
        pos = batch.position
        values = {
            "watermark": dumps_watermark(pos.watermark) if pos else None,
            "last_key": dumps_watermark(pos.key) if pos else None,
            "updated_at": utcnow(),
        }
        with self.store.begin() as conn:
            _upsert(conn, table, batch.rows, prepared)
            self.search.note(conn, batch.entity, batch.rows)
            self._quarantine(conn, batch)
            if not checkpoint:
                return
            done = conn.execute(
                update(checkpoints)
                .where(checkpoints.c.entity == batch.entity)
                .values(rows_synced=checkpoints.c.rows_synced + len(batch.rows), **values)
            )
            if done.rowcount == 0:
                conn.execute(checkpoints.insert().values(entity=batch.entity, rows_synced=len(batch.rows), **values))

    def _quarantine(self, conn: Connection, batch: Batch) -> None:
        """Set the batch's bad rows aside (keeping when each was first seen) and release the good ones."""
        q = quarantine.c
        good = [r[0] for r in batch.rows]
        held = select(q.key).where(q.entity == batch.entity).limit(1)
        if good and conn.execute(held).first() is not None:  # most batches: nothing held, no delete by key
            for start in range(0, len(good), 500):
                conn.execute(quarantine.delete().where(q.entity == batch.entity, q.key.in_(good[start:start + 500])))
        now = utcnow()
        for bad in batch.rejected:
            key = bad.key if bad.key is not None else "(NULL key)"
            values = {"number": bad.number, "field": bad.field, "reason": bad.reason, "last_seen": now,
                      "raw_key": dumps_watermark(bad.raw_key)}
            if not conn.execute(quarantine.update().where(q.entity == batch.entity, q.key == key)
                                .values(**values)).rowcount:
                conn.execute(quarantine.insert().values(entity=batch.entity, key=key, first_seen=now, **values))
            log.warning("quarantined %s", bad)

    def quarantined_keys(self, entity: str, before: dt.datetime | None = None) -> dict[str, Any]:
        """Our key -> the key as the firm database types it (only rows last seen before ``before``, if given)."""
        q = quarantine.c
        query = select(q.key, q.raw_key).where(q.entity == entity).order_by(q.key)
        if before is not None:
            query = query.where(q.last_seen < before)
        with self.store.read() as conn:
            rows = conn.execute(query).all()
        return {key: loads_watermark(raw) if raw is not None else key for key, raw in rows}

    def retry_quarantined(self, entity: str, before: dt.datetime | None = None) -> int:
        """Re-read quarantined rows by key (those this pass has not read already): a fixed row is stored and
        released, a vanished one released."""
        stored = 0
        keys = list(self.quarantined_keys(entity, before).items())
        for start in range(0, len(keys), 500):
            part = dict(keys[start:start + 500])
            batch = self.connector.read_rows(entity, list(part.values()))
            if batch is None:
                return stored  # the connector cannot read by key: the row is retried when it next changes
            seen = {r[0] for r in batch.rows} | {b.key for b in batch.rejected}
            with self.store.begin() as conn:
                gone = [k for k in part if k not in seen]
                if gone:
                    conn.execute(quarantine.delete().where(quarantine.c.entity == entity, quarantine.c.key.in_(gone)))
            self._store(batch, checkpoint=False)
            stored += len(batch.rows)
        return stored

    def quarantine_count(self, entity: str) -> int:
        return len(self.quarantined_keys(entity))

    def sync_entity(self, entity: EntityName, progress: Progress | None = None, catch_up: bool = True) -> int:
        """One incremental pass, then the quarantined rows re-read by key; the whole pass is retried from its last
        stored batch on a transient error. ``catch_up=False`` leaves the search index to a later pass's catch-up
        (sync() brings it in step once, after its last entity: a first full sync builds it once, not per entity)."""
        count = 0

        def attempt() -> None:
            nonlocal count
            has_wm = self.connector.mapping.entities[entity].watermark is not None
            began = self.clock()
            start, settled = self._checkpoint(entity) if has_wm else (None, None)
            horizon = self.connector.horizon(entity, start.watermark, began) if start else None
            deferred = self._defer_indexes(entity) if start is None else []
            last = start
            try:
                if start is None and self.bulk:
                    loaded = self._bulk_load(entity, progress)
                    if loaded is not None:
                        count += loaded[0]
                        if not has_wm:
                            return  # everything was read: there is no later row to read after it
                        start = last = loaded[1]
                        # read on after it as a first sync's keyset read would: no lookback re-read
                        settled = horizon = start.watermark if start else None
                reads = self.connector.read(entity, start, self.batch_size, settled, horizon)
                table, dialect = FIRM_TABLES[entity], self.store.engine.dialect.name
                pages = ((b, driver_values(table, dialect, b.rows)) for b in reads)
                for batch, values in _ReadAhead(pages) if self.connector.reads_elsewhere else pages:
                    self._store(batch, batch.position is not None, values)
                    last = batch.position or last
                    count += len(batch.rows)
                    if progress:
                        progress(entity, len(batch.rows))
            finally:
                self._restore_indexes(entity, deferred)
            if has_wm:
                self._settle(entity, last, began)

        started = utcnow()
        with _bulk_allocation():
            call(attempt, attempts=5)
        quarantined = call(lambda: self.retry_quarantined(entity, started), attempts=5)
        if catch_up:
            call(lambda: self.search.catch_up(self.store), attempts=5)
        # The mirror now holds every row of this entity as the firm database had it at ``started`` or later.
        self.store.record_ok(mirror_component(entity), at=started)
        return count + quarantined

    def _bulk_load(self, entity: str, progress: Progress | None) -> tuple[int, Position | None] | None:
        """Every row of the entity through Arrow (``Connector.bulk_read``, ``agent.state.bulk``), then the
        checkpoint at where a keyset read of everything would have ended; the pass then reads on from there as
        usual (what changed meanwhile). Rows the kernels leave to the row path are stored or quarantined by it.
        None: no bulk read here, or it was abandoned part-way (what it stored is upserted again by the row path)."""
        if not self.connector.capabilities.bulk_read:
            return None
        read = self.connector.bulk_read(entity, self.batch_size)
        if read is None:  # declared, but not for this database or this entity (a small SQLite one)
            return None
        table, dialect = FIRM_TABLES[entity], self.store.engine.dialect.name
        count = 0
        # the read, the kernels and the driver values on a thread while this one writes the page before
        pages = ((p.rows, p.values(), p.rejected) for p in read.pages)
        try:
            for rows, values, rejected in _ReadAhead(pages) if self.connector.reads_elsewhere else pages:
                self._store(Batch(entity, [*rows, *values], None, rejected), False,
                            [*driver_values(table, dialect, rows), *values])
                count += len(rows) + len(values)
                if progress:
                    progress(entity, len(rows) + len(values))
        except BulkAbandoned as exc:
            log.warning("bulk read of %s abandoned, reading it row by row: %s", entity, exc)
            return None
        self.search.everything = True  # a whole entity was loaded: the index is rebuilt at the catch-up
        with self.store.begin() as conn:
            conn.execute(checkpoints.delete().where(checkpoints.c.entity == entity))
            if read.position is not None:
                conn.execute(checkpoints.insert().values(
                    entity=entity, rows_synced=count, updated_at=utcnow(),
                    watermark=dumps_watermark(read.position.watermark), last_key=dumps_watermark(read.position.key)))
        log.info("bulk-loaded %d %s", count, entity)
        return count, read.position

    def _defer_indexes(self, entity: str) -> list[Index]:
        """A first full sync into an empty mirror table loads it without its secondary indexes and builds them
        afterwards (one sort instead of an index insert per row). Returns the indexes dropped."""
        table = FIRM_TABLES[entity]
        with self.store.begin() as conn:
            if conn.execute(select(table.c.key).limit(1)).first() is not None:
                return []
            dropped = [ix for ix in table.indexes if not ix.unique]
            for ix in dropped:
                ix.drop(conn, checkfirst=True)
        return dropped

    def _restore_indexes(self, entity: str, dropped: list[Index]) -> None:
        """Build the indexes a first full sync dropped; also, once per process, those an interrupted one left
        missing (checkfirst)."""
        if not dropped and entity in self._indexed:
            return
        self._indexed.add(entity)
        with self.store.begin() as conn:
            for ix in dropped or [ix for ix in FIRM_TABLES[entity].indexes if not ix.unique]:
                ix.create(conn, checkfirst=True)

    def sync(self, entities: Iterable[EntityName] | None = None, progress: Progress | None = None) -> SyncResult:
        result = SyncResult()
        started = time.perf_counter()
        chosen = list(entities or self.entities())
        for entity in chosen:
            result.rows[entity] = self.sync_entity(entity, progress, catch_up=entity == chosen[-1])
            result.quarantined[entity] = self.quarantine_count(entity)
        result.seconds = time.perf_counter() - started
        return result

    def reconcile(self) -> SyncResult:
        """The full reconciliation sweep the service runs on its own (nightly by default): every source row is read
        and compared with the mirror by key and content, and only rows that differ are written; rows gone from
        the source are marked deleted. It catches what an incremental sync cannot see: changes in a table with no
        watermark, a watermark a program forgot to bump, hard deletes. A clean pass costs a read, not a rewrite."""
        result = SyncResult()
        started = time.perf_counter()
        for entity in self.entities():
            swept = call(lambda e=entity: self._reconcile_bulk(e), attempts=5)
            if swept is None:
                result.rows[entity] = call(lambda e=entity: self._reconcile_entity(e), attempts=5)
                result.deleted[entity] = self.sweep_deletes(entity)
            else:
                result.rows[entity], result.deleted[entity] = swept
            result.quarantined[entity] = self.quarantine_count(entity)
        result.seconds = time.perf_counter() - started
        return result

    def _reconcile_bulk(self, entity: str) -> tuple[int, int] | None:
        """The sweep through the bulk read (the first full sync's pages, the same kernels): every source row goes,
        as the driver values the mirror stores, into a temporary table on a connection of its own, which takes no
        lock on the mirror meanwhile; SQLite then finds in one query each the rows that differ from the mirror and
        the mirror's rows gone from the source, and only those go through ``_store`` as any batch does (search
        index, quarantine), the gone ones with ``deleted`` set. A clean pass writes nothing to the mirror; its cost
        is the read and one indexed join, linear in rows. Returns (rows changed, rows gone), or None: no bulk read
        here (the row path sweeps)."""
        if not (self.bulk and self.connector.capabilities.bulk_read):
            return None
        read = self.connector.bulk_read(entity, self.batch_size)
        if read is None:
            return None
        table = FIRM_TABLES[entity]
        names = [c.name for c in table.columns]
        temp = f"sweep_{entity}"
        held = set(self.quarantined_keys(entity))
        with self.store.engine.connect() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{temp}")
            conn.commit()
            # One transaction until the gone rows are found: its snapshot of the mirror is taken here, before the
            # source is read, so a row another pass stores meanwhile (and this read may have missed) is not taken
            # for gone. It writes the connection's own temporary database alone: no lock on the mirror.
            conn.exec_driver_sql(f"SELECT count(*) FROM (SELECT 1 FROM {table.name} LIMIT 1)").scalar()
            conn.exec_driver_sql(f"CREATE TEMP TABLE {temp} AS SELECT *, 0 AS bad FROM {table.name} WHERE 0")
            try:
                self._fill_sweep(conn, entity, temp, read)
            except BulkAbandoned as exc:
                log.warning("bulk sweep of %s abandoned, sweeping it row by row: %s", entity, exc)
                return None
            conn.exec_driver_sql(f"CREATE INDEX temp.{temp}_key ON {temp} (key)")
            gone = self._store_found(entity, conn, (
                f"SELECT * FROM {table.name} m WHERE m.deleted = 0 "
                f"AND NOT EXISTS (SELECT 1 FROM temp.{temp} t WHERE t.key = m.key)"), deleted=names.index("deleted"))
            keys = sorted(held)
            released = [r[0] for i in range(0, len(keys), 500) for r in conn.exec_driver_sql(
                f"SELECT key FROM temp.{temp} WHERE bad = 0 AND key IN ({', '.join(['?'] * len(keys[i:i + 500]))})",
                tuple(keys[i:i + 500]))]
            conn.commit()  # the rows that differ are compared with the mirror as it is now
            same = " AND ".join(f"m.{n} IS t.{n}" for n in names)
            changed = self._store_found(entity, conn, (
                f"SELECT {', '.join(f't.{n}' for n in names)} FROM temp.{temp} t "
                f"LEFT JOIN {table.name} m ON m.key = t.key WHERE t.bad = 0 AND NOT ({same})"))
            conn.exec_driver_sql(f"DROP TABLE temp.{temp}")
            conn.commit()
        if released:  # read well again: out of quarantine (changed or not)
            with self.store.begin() as write:
                for i in range(0, len(released), 500):
                    write.execute(quarantine.delete().where(quarantine.c.entity == entity,
                                                            quarantine.c.key.in_(released[i:i + 500])))
        call(lambda: self.search.catch_up(self.store), attempts=5)
        return changed, gone

    def _reconcile_entity(self, entity: str) -> int:
        table = FIRM_TABLES[entity]
        held = set(self.quarantined_keys(entity))
        changed = 0
        for batch in self.connector.read(entity, None, self.batch_size):
            keys = [r[0] for r in batch.rows]
            with self.store.read() as conn:
                have = {r[0]: _digest(r) for r in conn.execute(select(*table.columns).where(table.c.key.in_(keys)))}
            differ = [r for r in batch.rows if have.get(r[0]) != _digest(r)]
            if differ or batch.rejected:
                self._store(Batch(entity, differ, None, batch.rejected), checkpoint=False)
            elif held.intersection(keys):  # read well again: out of quarantine, even if the mirror had them
                with self.store.begin() as conn:
                    conn.execute(quarantine.delete().where(quarantine.c.entity == entity, quarantine.c.key.in_(keys)))
            changed += len(differ)
        return changed

    def _fill_sweep(self, conn: Connection, entity: str, temp: str, read: BulkRead) -> None:
        """Every page of the bulk read into the sweep's temporary table as the mirror's driver values (``bad`` 1:
        a row in the source that does not convert, so not gone; it is quarantined as any batch's)."""
        table = FIRM_TABLES[entity]
        insert = f"INSERT INTO temp.{temp} VALUES ({', '.join(['?'] * (len(table.columns) + 1))})"
        pages = ((p.rows, p.values(), p.rejected) for p in read.pages)
        for rows, values, rejected in _ReadAhead(pages) if self.connector.reads_elsewhere else pages:
            conn.exec_driver_sql(insert, [(*v, 0) for v in [*driver_values(table, "sqlite", rows), *values]])
            bad = [(b.key,) for b in rejected if b.key is not None]
            if bad:
                conn.exec_driver_sql(f"INSERT INTO temp.{temp} (key, bad) VALUES (?, 1)", bad)
            if rejected:
                self._store(Batch(entity, [], None, rejected), False)

    def _store_found(self, entity: str, conn: Connection, sql: str, deleted: int | None = None) -> int:
        """Store, page by page through the usual upsert, the mirror rows (as stored) a sweep's query finds, with
        column ``deleted`` set if given; returns how many."""
        found = conn.exec_driver_sql(sql)
        count = 0
        while part := [tuple(r) if deleted is None else (*r[:deleted], True, *r[deleted + 1:])
                       for r in found.fetchmany(self.batch_size)]:
            self._store(Batch(entity, part, None, []), False, part)
            count += len(part)
        return count

    def sweep_deletes(self, entity: str) -> int:
        """Mark rows deleted in the mirror when their key is no longer in the source."""
        table = FIRM_TABLES[entity]
        temp = Table(f"sweep_{entity}", MetaData(), Column("key", KEY, primary_key=True), prefixes=["TEMPORARY"])

        def attempt() -> int:
            with self.store.begin() as conn:
                temp.drop(conn, checkfirst=True)
                temp.create(conn)
                for keys in self.connector.keys(entity, self.batch_size):
                    conn.execute(temp.insert(), [{"key": k} for k in keys])
                self.search.note_sweep(conn, entity, select(temp.c.key))
                gone = conn.execute(
                    update(table)
                    .where(table.c.deleted.is_(False), table.c.key.not_in(select(temp.c.key)))
                    .values(deleted=True)
                ).rowcount
                temp.drop(conn)
                return gone

        gone = call(attempt, attempts=5)
        call(lambda: self.search.catch_up(self.store), attempts=5)
        return gone
