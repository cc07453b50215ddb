"""The connector contract kit: every connector runs these tests with a few lines (see
tests/connectors/test_connector_contract.py), in the spirit of singer-sdk's standard tests.

A subclass provides a ``firm`` fixture: a ``Firm`` (a throw-away database holding the standard test schema) and
the connector class to test. The kit checks connection, discovery, a full read equal to the source (exact
Decimals, NULLs, non-ASCII), incremental reads after inserts, updates and deletes, resume after an interruption,
rows changed during a sync, configuration errors carrying the database's message, timezone-aware watermarks and
idempotent write-back.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa

from agent.core.errors import ConfigurationError, TransientError
from agent.engine.sync import Syncer
from agent.state import StateStore
from agent.state.anchor import AuditKeys, Checkpoint, firm_latest
from agent.state.schema import firm_clients, firm_matters, firm_statements, quarantine
from connectors.database.contract import Connector
from connectors.database.errors import NotReady
from connectors.testkit.databases import TempDatabase
from mappings.format import AuditTable, MappingFile, parse_mapping

__all__ = [
    "DIALECTS",
    "NAMES",
    "T0",
    "ConnectorContract",
    "Dialect",
    "Firm",
    "mirror",
    "seed",
]

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC)



@dataclass(frozen=True)
class Dialect:
    """What the kit must know of a database to build the standard schema in it and to speak to it; a database the
    kit does not ship (SQL Server, Firebird, a vendor's own) is described by one of these, not by editing the kit.

    ``timestamp``, ``money`` and ``serial`` are the column types of a watermark, an exact amount and an
    auto-numbered key. ``stamps`` says how a moment is written: ``aware`` (an aware datetime), ``naive`` (naive
    UTC) or ``text`` (ISO text, naive UTC). ``money_as_text`` binds amounts as text rather than Decimal.
    ``hold`` is a statement that keeps a transaction open for ``{seconds}`` (two writers made to overlap), or None
    for a database whose writers take one file lock in turn (SQLite): the kit then checks that the existence
    check waits for that lock instead. ``drop_temporary`` drops a TEMPORARY table."""

    name: str
    timestamp: str
    money: str
    serial: str
    stamps: Literal["aware", "naive", "text"]
    money_as_text: bool = False
    hold: str | None = None
    drop_temporary: str = "DROP TABLE"


DIALECTS = {
    "postgresql": Dialect("postgresql", "TIMESTAMPTZ", "NUMERIC(12,2)", "SERIAL PRIMARY KEY", "aware",
                          hold="SELECT pg_sleep({seconds})"),
    "mariadb": Dialect("mariadb", "DATETIME(6)", "DECIMAL(12,2)", "INTEGER AUTO_INCREMENT PRIMARY KEY", "naive",
                       hold="SELECT SLEEP({seconds})", drop_temporary="DROP TEMPORARY TABLE"),
    # TEXT amounts: SQLite's NUMERIC affinity would make them floats
    "sqlite": Dialect("sqlite", "TEXT", "TEXT", "INTEGER PRIMARY KEY AUTOINCREMENT", "text", money_as_text=True),
}

NAMES = ["Siobhán Ó Súilleabháin", "渡辺 さくら", "Zoë Brontë-Øvergaard", "Plain Smith"]


@dataclass
class Firm:
    """A throw-away firm database with the standard schema, administered through SQLAlchemy; ``dialect`` describes
    it (by default the shipped description of ``db.kind``)."""

    db: TempDatabase
    connector_class: type[Connector]
    via_odbc: bool
    dialect: Dialect | None = None

    def __post_init__(self) -> None:
        if self.dialect is None:
            if self.db.kind not in DIALECTS:
                raise ValueError(f"no shipped description of a {self.db.kind!r} database: pass "
                                 f"Firm(..., dialect=Dialect(...))")
            self.dialect = DIALECTS[self.db.kind]
        self.engine = sa.create_engine(self.db.url)
        ts, money, serial = self.speaks.timestamp, self.speaks.money, self.speaks.serial
        with self.engine.begin() as c:
            c.exec_driver_sql(f"CREATE TABLE clients (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, "
                              f"email VARCHAR(200), phone VARCHAR(50), updated_at {ts} NOT NULL)")
            c.exec_driver_sql(f"CREATE TABLE matters (id INTEGER PRIMARY KEY, matter_no VARCHAR(40) NOT NULL, "
                              f"title VARCHAR(200), client_id INTEGER, state VARCHAR(10), is_deleted SMALLINT "
                              f"DEFAULT 0 NOT NULL, updated_at {ts} NOT NULL)")
            c.exec_driver_sql(f"CREATE TABLE statements (id INTEGER PRIMARY KEY, bill_no VARCHAR(40) NOT NULL, "
                              f"matter_id INTEGER NOT NULL, issued DATE, due DATE, amount {money} NOT NULL, "
                              f"balance {money} NOT NULL, currency CHAR(3) NOT NULL, state VARCHAR(10), "
                              f"updated_at {ts} NOT NULL)")
            c.exec_driver_sql(f"CREATE TABLE receipts (id {serial}, reference VARCHAR(191) NOT NULL UNIQUE, "
                              f"statement_id INTEGER NOT NULL, amount_pence INTEGER NOT NULL)")
            for table in ("statements", "matters"):
                c.exec_driver_sql(f"CREATE INDEX {table}_wm ON {table} (updated_at, id)")
        self.clock = T0

    @property
    def speaks(self) -> Dialect:
        """The database's description (set in __post_init__)."""
        assert self.dialect is not None
        return self.dialect

    def ts(self, moment: dt.datetime) -> Any:
        """A timestamp as this database stores it: aware, naive UTC, or naive UTC as ISO text."""
        if self.speaks.stamps == "aware":
            return moment
        utc = moment.astimezone(UTC).replace(tzinfo=None)
        return utc.isoformat(sep=" ", timespec="microseconds") if self.speaks.stamps == "text" else utc

    def tick(self) -> Any:
        self.clock += dt.timedelta(seconds=1)
        return self.ts(self.clock)

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as c:
            c.execute(sa.text(sql), params)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as c:
            return c.execute(sa.text(sql), params).scalar()

    def add_client(self, key: int, name: str, email: str | None = None) -> None:
        self.execute("INSERT INTO clients VALUES (:id, :n, :e, NULL, :t)", id=key, n=name, e=email, t=self.tick())

    def add_matter(self, key: int, client: int | None, state: str = "A") -> None:
        self.execute("INSERT INTO matters (id, matter_no, title, client_id, state, updated_at) VALUES "
                     "(:id, :no, :title, :c, :s, :t)", id=key, no=f"M-{key}", title=f"Matter {key}", c=client,
                     s=state, t=self.tick())

    def add_statement(self, key: int, matter: int, amount: str, balance: str | None = None,
                      due: dt.date | None = dt.date(2026, 2, 1), when: dt.datetime | None = None) -> None:
        stamp = self.ts(when) if when else self.tick()
        self.execute("INSERT INTO statements VALUES (:id, :no, :m, :i, :d, :a, :b, 'GBP', 'OPEN', :t)",
                     id=key, no=f"B-{key}", m=matter, i=dt.date(2026, 1, 2), d=due, a=self.money(amount),
                     b=self.money(balance or amount), t=stamp)

    def money(self, text: str) -> Any:
        return text if self.speaks.money_as_text else Decimal(text)

    def mapping(self, postings: str | None = None, **entity_overrides: dict[str, Any]) -> MappingFile:
        if self.via_odbc:
            source = f"source: {{connector: odbc, connection_string: '{self.db.odbc.replace(';Pwd=;', ';')}'}}"
        else:
            source = f"source: {{url: '{self.db.url.render_as_string(hide_password=False)}'}}"
        entities: dict[str, dict[str, Any]] = {
            "clients": {"table": "clients", "key": "id", "watermark": {"column": "updated_at", "timezone": "UTC",
                                                                        "lookback_seconds": 0},
                        "columns": {"name": "name", "email": "email", "phone": "phone"}},
            "matters": {"table": "matters", "key": "id", "deleted_column": "is_deleted",
                        "watermark": {"column": "updated_at", "timezone": "UTC", "lookback_seconds": 0},
                        "columns": {"number": "matter_no", "name": "title", "client_key": "client_id",
                                    "status": "state"}, "status_values": {"closed": ["C"]}},
            "statements": {"table": "statements", "key": "id",
                           "watermark": {"column": "updated_at", "timezone": "UTC", "lookback_seconds": 0},
                           "columns": {"number": "bill_no", "matter_key": "matter_id", "issue_date": "issued",
                                       "due_date": "due", "amount": "amount", "balance": "balance",
                                       "currency": "currency", "status": "state"},
                           "status_values": {"void": ["VOID"], "paid": ["PAID"]}},
        }
        for name, override in entity_overrides.items():
            entities[name] = {**entities[name], **override}
        text = (f"version: 1\n{source}\ntimezone: UTC\nentities: {json.dumps(entities)}\n"
                + (postings or "postings:\n  kind: sql\n  exists: SELECT 1 FROM receipts WHERE reference = :reference\n"
                   "  statements:\n"
                   "    - INSERT INTO receipts (reference, statement_id, amount_pence) "
                   "VALUES (:reference, :statement_key, :amount_minor)\n"))
        return parse_mapping(text, Path(f"<{self.speaks.name} contract mapping>"))

    def connector(self, postings: str | None = None, **entity_overrides: dict[str, Any]) -> Connector:
        return self.connector_class(self.mapping(postings, **entity_overrides))

    def sleep_sql(self, seconds: float) -> str:
        """A statement that holds the transaction open (to make two writers overlap)."""
        assert self.speaks.hold is not None, f"{self.speaks.name}'s writers take one lock in turn"
        return self.speaks.hold.format(seconds=seconds)


def seed(firm: Firm) -> None:
    for i, name in enumerate(NAMES, start=1):
        firm.add_client(i, name, None if i == 2 else f"c{i}@example.com")
        firm.add_matter(10 + i, i)
    firm.add_statement(101, 11, "0.10")
    firm.add_statement(102, 11, "12345678.91", "-70.00", due=None)
    firm.add_statement(103, 12, "644.30")
    firm.add_statement(104, 13, "1443.75", "1000.00")


def mirror(store: StateStore, table: sa.Table) -> dict[str, dict[str, Any]]:
    with store.read() as conn:
        return {r["key"]: dict(r) for r in conn.execute(sa.select(table)).mappings()}


class ConnectorContract:
    """Subclass with a ``firm`` fixture returning a seeded-or-empty Firm; every test below then runs."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[StateStore]:
        store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
        yield store
        store.close()

    def syncer(self, firm: Firm, store: StateStore, batch: int = 2, **overrides: dict[str, Any]) -> Syncer:
        return Syncer(store, firm.connector(None, **overrides), batch)

    def test_check_and_discover(self, firm: Firm) -> None:
        seed(firm)
        connector = firm.connector()
        connector.check()
        info = connector.discover()
        assert {e: i.count for e, i in info.items()} == {"clients": 4, "matters": 4, "statements": 4}
        assert info["statements"].null_watermarks == 0 and info["statements"].max_watermark is not None

    def test_full_read_equals_source(self, firm: Firm, store: StateStore) -> None:
        seed(firm)
        result = self.syncer(firm, store).sync()
        assert result.rows == {"clients": 4, "matters": 4, "statements": 4}
        clients = mirror(store, firm_clients)
        assert sorted(c["name"] for c in clients.values()) == sorted(NAMES)
        assert clients["2"]["email"] is None and clients["1"]["phone"] is None
        st = mirror(store, firm_statements)
        assert st["101"]["amount"] == Decimal("0.10") and type(st["101"]["amount"]) is Decimal
        assert (st["102"]["amount"], st["102"]["balance"]) == (Decimal("12345678.91"), Decimal("-70.00"))
        assert st["102"]["due_date"] is None and st["103"]["due_date"] == dt.date(2026, 2, 1)
        assert st["104"]["matter_key"] == "13" and st["104"]["currency"] == "GBP"
        matters = mirror(store, firm_matters)
        assert matters["11"]["client_key"] == "1" and matters["11"]["status"] == "open"

    def test_incremental_inserts_updates_and_deletes(self, firm: Firm, store: StateStore) -> None:
        seed(firm)
        syncer = self.syncer(firm, store)
        syncer.sync()
        firm.add_statement(105, 14, "5.55")
        firm.execute("UPDATE statements SET balance = :b, updated_at = :t WHERE id = 103",
                     b=firm.money("44.30"), t=firm.tick())
        firm.execute("UPDATE matters SET is_deleted = 1, updated_at = :t WHERE id = 12", t=firm.tick())
        firm.execute("UPDATE matters SET state = 'C', updated_at = :t WHERE id = 13", t=firm.tick())
        firm.execute("DELETE FROM statements WHERE id = 104")
        result = syncer.sync()
        assert result.rows == {"clients": 0, "matters": 2, "statements": 2}  # only what changed
        assert syncer.sweep_deletes("statements") == 1
        st = mirror(store, firm_statements)
        assert st["105"]["amount"] == Decimal("5.55") and st["103"]["balance"] == Decimal("44.30")
        assert st["104"]["deleted"] and not st["103"]["deleted"]
        matters = mirror(store, firm_matters)
        assert matters["12"]["deleted"] and matters["13"]["status"] == "closed"

    def test_resume_after_interruption(self, firm: Firm, store: StateStore) -> None:
        seed(firm)
        for key in range(200, 211):
            firm.add_statement(key, 11, f"{key}.01")
        # the keyset read's resume; a first sync's bulk read (tests/engine/test_bulk_sync.py) starts again instead
        syncer = Syncer(store, firm.connector(None), 3, bulk=False)
        batches = []

        def stop_after_two(entity: str, n: int) -> None:
            if entity == "statements":
                batches.append(n)
                if len(batches) == 2:
                    raise KeyboardInterrupt("power cut")

        with pytest.raises(KeyboardInterrupt):
            syncer.sync(progress=stop_after_two)
        assert len(mirror(store, firm_statements)) == 6  # the two stored batches, checkpointed
        resumed = syncer.sync()
        assert resumed.rows["statements"] == 15 - 6  # continues after the checkpoint, nothing re-read or skipped
        st = mirror(store, firm_statements)
        assert len(st) == 15 and st["210"]["amount"] == Decimal("210.01")

    def test_rows_changed_during_a_sync_are_not_lost(self, firm: Firm, store: StateStore) -> None:
        seed(firm)
        syncer = self.syncer(firm, store, batch=2)
        changed: list[bool] = []

        def change_a_row_already_read(entity: str, n: int) -> None:
            if entity == "statements" and not changed:
                firm.execute("UPDATE statements SET balance = :b, updated_at = :t WHERE id = 101",
                             b=firm.money("0.01"), t=firm.tick())
                changed.append(True)

        syncer.sync(progress=change_a_row_already_read)
        syncer.sync()
        assert mirror(store, firm_statements)["101"]["balance"] == Decimal("0.01")

    def test_timezone_aware_watermarks(self, firm: Firm, store: StateStore) -> None:
        firm.add_client(1, "A")
        firm.add_matter(11, 1)
        plus_two = dt.timezone(dt.timedelta(hours=2))
        firm.add_statement(1, 11, "1.00", when=dt.datetime(2026, 3, 1, 10, 0, tzinfo=plus_two))  # 08:00Z
        firm.add_statement(2, 11, "2.00", when=dt.datetime(2026, 3, 1, 9, 0, tzinfo=UTC))  # 09:00Z
        syncer = self.syncer(firm, store, batch=1)
        syncer.sync()
        position = syncer.position("statements")
        assert position is not None and str(position.key) == "2"  # ordered by instant, not by wall clock
        minus_five = dt.timezone(-dt.timedelta(hours=5))
        firm.add_statement(3, 11, "3.00", when=dt.datetime(2026, 3, 1, 5, 0, tzinfo=minus_five))
        assert syncer.sync().rows["statements"] == 1  # 10:00Z is after the checkpoint

    def test_bad_config_carries_the_database_message(self, firm: Firm) -> None:
        seed(firm)
        cases: list[dict[str, dict[str, Any]]] = [
            {"statements": {"table": "no_such_table"}},
            {"statements": {"columns": {"number": "no_such_column", "matter_key": "matter_id", "amount": "amount",
                                        "balance": "balance"}}},
            {"statements": {"table": None, "query": "SELECT id, FROM statements"}},
        ]
        for override in cases:
            with pytest.raises(ConfigurationError) as err:
                firm.connector(None, **override).discover()
            text = str(err.value).lower()
            assert "reading statements" in text and any(w in text for w in ("no_such", "syntax", "near", "from"))

    def test_unreachable_database_is_transient(self, firm: Firm) -> None:
        if firm.db.server is None:
            pytest.skip(f"{firm.speaks.name} has no server to be unreachable")
        mapping = firm.mapping()
        source, server = mapping.source, firm.db.server
        assert server is not None, "a server database has its server"
        if firm.via_odbc:
            assert source.connection_string is not None
            moved = source.model_copy(update={"connection_string": source.connection_string.replace(
                f"Port={server.port}", "Port=1")})
        else:
            assert source.url is not None
            moved = source.model_copy(update={"url": source.url.replace(f":{server.port}/", ":1/")})
        with pytest.raises(TransientError):
            firm.connector_class(mapping.model_copy(update={"source": moved})).check()

    def test_write_posting_is_idempotent(self, firm: Firm) -> None:
        seed(firm)
        connector = firm.connector()
        params = {"reference": "PM1:103", "statement_key": "103", "amount_minor": 64430}
        assert not connector.posting_exists("PM1:103")
        assert connector.write_posting(params) is True
        assert connector.write_posting(params) is False
        assert connector.posting_exists("PM1:103")
        assert firm.scalar("SELECT COUNT(*) FROM receipts WHERE reference = 'PM1:103'") == 1
        connector.close()

    def test_a_mistyped_source_option_is_refused_naming_it(self, firm: Firm) -> None:
        """An option the connector does not know fails at once; silently ignored, it would leave the connector
        working otherwise than the admin wrote."""
        mapping = firm.mapping()
        source = mapping.source.model_copy(update={"options": {"no_such_option": 1}})
        with pytest.raises(ConfigurationError, match=r"source\.options.*no_such_option"):
            firm.connector_class(mapping.model_copy(update={"source": source}))

    def test_a_colon_inside_a_quoted_string_is_text_not_a_parameter(self, firm: Firm) -> None:
        """``'[:]R'`` or ``'a:b'`` in mapping SQL (a regex, a time, a URL) is the string it reads as; only a bare
        ``:name`` is a parameter, for the agent's checks and the driver alike."""
        seed(firm)
        connector = firm.connector(
            "postings:\n  kind: sql\n"
            "  exists: SELECT 1 FROM receipts WHERE reference = :reference AND 'a:b' <> ':c'\n  statements:\n"
            "    - INSERT INTO receipts (reference, statement_id, amount_pence) "
            "SELECT :reference, :statement_key, :amount_minor FROM statements WHERE id = 103 AND 'x:y' <> ''\n",
            statements={"query": "SELECT id, bill_no, matter_id, amount, balance, currency, updated_at FROM "
                                 "statements WHERE bill_no <> 'no:such'", "table": None,
                        "columns": {"number": "bill_no", "matter_key": "matter_id", "amount": "amount",
                                    "balance": "balance", "currency": "currency"}})
        assert [r for r in connector.dry_run() if r.verdict != "ok"] == []
        params = {"reference": "PM1:103", "statement_key": "103", "amount_minor": 64430}
        assert connector.write_posting(params) is True
        assert connector.write_posting(params) is False
        assert firm.scalar("SELECT COUNT(*) FROM receipts") == 1
        connector.close()

    def test_long_text_is_written_whole(self, firm: Firm) -> None:
        """A description of 127 to 300 characters, non-ASCII too, goes into a VARCHAR(300) as it is (MariaDB's
        ODBC driver refused 128 to 254 through pyodbc's default data-at-execution path)."""
        firm.execute("CREATE TABLE notes (reference VARCHAR(191) NOT NULL, note VARCHAR(300) NOT NULL)")
        connector = firm.connector("postings:\n  kind: sql\n"
                                   "  exists: SELECT 1 FROM notes WHERE reference = :reference\n  statements:\n"
                                   "    - INSERT INTO notes (reference, note) VALUES (:reference, :description)\n")
        texts = {f"PM{n}:1": ("Zoë " * 75)[:n] for n in (127, 128, 200, 254, 255, 300)}
        for reference, note in texts.items():
            assert connector.write_posting({"reference": reference, "description": note}) is True
        connector.close()
        with firm.engine.connect() as c:
            assert dict(c.execute(sa.text("SELECT reference, note FROM notes")).all()) == texts

    def test_write_back_naming_a_missing_column_or_table_fails_as_configuration(self, firm: Firm) -> None:
        seed(firm)
        params = {"reference": "PM1:103", "statement_key": "103", "statement_number": "B-103", "amount_minor": 1}
        for target in ("receipts (reference, no_such_column) VALUES (:reference, :amount_minor)",
                       "no_such_table (reference) VALUES (:reference)"):
            connector = firm.connector(
                "postings:\n  kind: sql\n  exists: SELECT 1 FROM receipts WHERE reference = :reference\n"
                f"  statements:\n    - INSERT INTO {target}\n")
            with pytest.raises(ConfigurationError) as err:  # not TransientError: retrying cannot help
                connector.write_posting(params)
            text = str(err.value)
            assert "no_such" in text.lower() and "statement B-103" in text and f"INSERT INTO {target}" in text
            connector.close()
        assert firm.scalar("SELECT COUNT(*) FROM receipts") == 0

    def test_ready_query_holds_the_write_until_it_turns_true(self, firm: Firm) -> None:
        seed(firm)
        firm.execute("CREATE TABLE book_locks (book VARCHAR(20), holder VARCHAR(40))")
        firm.execute("INSERT INTO book_locks VALUES ('sales', 'JSMITH has the sales ledger open')")
        connector = firm.connector(
            "postings:\n  kind: sql\n"
            "  ready: SELECT CASE WHEN COUNT(*) = 0 THEN 1 ELSE 0 END, MAX(holder) FROM book_locks\n"
            "  exists: SELECT 1 FROM receipts WHERE reference = :reference\n  statements:\n"
            "    - INSERT INTO receipts (reference, statement_id, amount_pence) "
            "VALUES (:reference, :statement_key, :amount_minor)\n")
        params = {"reference": "PM1:103", "statement_key": "103", "amount_minor": 64430}
        with pytest.raises(NotReady, match="JSMITH has the sales ledger open"):
            connector.write_posting(params)
        assert firm.scalar("SELECT COUNT(*) FROM receipts") == 0
        firm.execute("DELETE FROM book_locks")
        assert connector.write_posting(params) is True
        assert firm.scalar("SELECT COUNT(*) FROM receipts WHERE reference = 'PM1:103'") == 1
        connector.close()

    def test_existence_check_runs_inside_the_write_transaction(self, firm: Firm) -> None:
        """Two agents writing one reference at the same moment into a table with no UNIQUE constraint: the check
        and the writes are one transaction at the isolation the check needs, so exactly one row lands."""
        seed(firm)
        firm.execute("CREATE TABLE plain_receipts (reference VARCHAR(191) NOT NULL, amount_pence INTEGER NOT NULL)")
        if firm.speaks.hold is None:
            self._sqlite_check_waits_for_the_write_lock(firm)
            return
        postings = ("postings:\n  kind: sql\n  exists: SELECT 1 FROM plain_receipts WHERE reference = :reference\n"
                    "  statements:\n    - INSERT INTO plain_receipts VALUES (:reference, :amount_minor)\n"
                    f"    - {firm.sleep_sql(0.5)}\n")
        outcomes: list[str] = []

        def agent(delay: float) -> None:
            connector = firm.connector(postings)
            time.sleep(delay)
            for _ in range(10):
                try:
                    outcomes.append("wrote" if connector.write_posting({"reference": "PM1:103",
                                                                        "amount_minor": 500}) else "already")
                    break
                except TransientError:
                    outcomes.append("retry")
            connector.close()

        threads = [threading.Thread(target=agent, args=(d,)) for d in (0.0, 0.1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert firm.scalar("SELECT COUNT(*) FROM plain_receipts") == 1
        assert outcomes.count("wrote") == 1 and outcomes.count("already") == 1, outcomes

    def _sqlite_check_waits_for_the_write_lock(self, firm: Firm) -> None:
        """On SQLite the check must hold the write lock from BEGIN: a deferred BEGIN (or none) would answer
        'already there' without waiting for a writer that has the lock."""
        firm.execute("INSERT INTO receipts (reference, statement_id, amount_pence) VALUES ('PM1:103', 103, 1)")
        connector = firm.connector(
            "postings:\n  kind: sql\n  exists: SELECT 1 FROM receipts WHERE reference = :reference\n"
            "  statements:\n    - INSERT INTO receipts (reference, statement_id, amount_pence) "
            "VALUES (:reference, :statement_key, :amount_minor)\n",
        ) if not firm.via_odbc else firm.connector()
        assert firm.db.url.database is not None, "a SQLite URL names its file"
        holder = sqlite3.connect(firm.db.url.database, isolation_level=None, timeout=0)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        try:
            self._with_short_busy_timeout(connector)
            with pytest.raises(TransientError, match="locked"):
                connector.write_posting({"reference": "PM1:103", "statement_key": "103", "amount_minor": 1})
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert connector.write_posting({"reference": "PM1:103", "statement_key": "103", "amount_minor": 1}) is False
        connector.close()

    @staticmethod
    def _with_short_busy_timeout(connector: Connector) -> None:
        engine = getattr(connector, "engine", None)
        if engine is not None:
            sa.event.listen(engine, "connect", lambda dbapi, _rec: dbapi.execute("PRAGMA busy_timeout=200"))
            engine.dispose()
        else:  # a connector without an engine is the ODBC one: its driver's own busy timeout
            odbc: Any = connector
            odbc.connection_string = odbc.connection_string.replace("Timeout=30000", "Timeout=200")

    def test_a_bad_row_is_quarantined_the_rest_synced_and_it_is_retried_by_key(self, firm: Firm,
                                                                              store: StateStore) -> None:
        seed(firm)
        firm.execute("UPDATE statements SET currency = 'JPY' WHERE id = 103")  # 644.30 is not whole yen
        syncer = self.syncer(firm, store)
        result = syncer.sync()
        assert result.rows["statements"] == 3 and result.quarantined["statements"] == 1
        assert set(mirror(store, firm_statements)) == {"101", "102", "104"}
        with store.read() as conn:
            held = conn.execute(sa.select(quarantine)).mappings().one()
        assert (held["entity"], held["key"], held["number"], held["field"]) == ("statements", "103", "B-103", "amount")
        assert "644.3" in held["reason"] and "JPY" in held["reason"]
        assert syncer.sync().quarantined["statements"] == 1  # still bad: still held, first_seen kept
        firm.execute("UPDATE statements SET currency = 'GBP' WHERE id = 103")  # fixed, watermark untouched
        result = syncer.sync()
        assert result.quarantined["statements"] == 0 and result.rows["statements"] == 1
        assert mirror(store, firm_statements)["103"]["amount"] == Decimal("644.30")

    def test_dry_run_finds_a_missing_column_and_changes_nothing(self, firm: Firm) -> None:
        seed(firm)
        good = ("postings:\n  kind: sql\n  ready: SELECT 1\n"
                "  exists: SELECT 1 FROM receipts WHERE reference = :reference\n  statements:\n"
                "    - INSERT INTO receipts (reference, statement_id, amount_pence) "
                "VALUES (:reference, :statement_key, :amount_minor)\n"
                "    - UPDATE statements SET bill_no = bill_no WHERE id = :statement_key\n")
        connector = firm.connector(good)
        report = connector.dry_run()
        assert [r.what for r in report] == ["entities.clients", "entities.matters", "entities.statements",
                                            "postings.ready", "postings.exists", "postings.statements.0",
                                            "postings.statements.1"]
        assert all(r.verdict == "ok" for r in report), report
        connector.close()
        firm.execute("INSERT INTO receipts (reference, statement_id, amount_pence) VALUES ('real', 101, 1)")
        assert firm.scalar("SELECT COUNT(*) FROM receipts") == 1
        assert firm.scalar("SELECT id FROM receipts") == 1  # the rehearsal used no identity number

        bad = firm.connector(good.replace("amount_pence)", "amount_pense)"),
                             statements={"columns": {"number": "bill_number", "matter_key": "matter_id",
                                                     "amount": "amount", "balance": "balance"}})
        refused = {r.what: str(r.message) for r in bad.dry_run() if r.verdict == "refused"}
        assert set(refused) == {"entities.statements", "postings.statements.0"}
        assert "bill_number" in refused["entities.statements"]
        assert "amount_pense" in refused["postings.statements.0"]
        assert "INSERT INTO receipts (reference, statement_id, amount_pense) VALUES" in refused["postings.statements.0"]
        bad.close()

    def test_an_audit_checkpoint_is_written_once_and_read_back_signed(self, firm: Firm) -> None:
        """The mapping's audit table (no UNIQUE: the (seq, hash) check inside the insert's transaction keeps a
        checkpoint from being written twice); its newest rows come back as the agent signed them."""
        firm.execute("CREATE TABLE ledgerlink_audit (seq INTEGER NOT NULL, entry_hash VARCHAR(64) NOT NULL, "
                     "signed_at VARCHAR(20) NOT NULL, signer VARCHAR(64) NOT NULL, signature VARCHAR(128) NOT NULL)")
        columns = {"hash": "entry_hash", "at": "signed_at", "sig": "signature"}

        def with_audit(**renamed: str) -> Connector:
            table = AuditTable(table="ledgerlink_audit", columns={**columns, **renamed})
            return firm.connector_class(firm.mapping().model_copy(update={"audit": table}))

        connector = with_audit()
        assert connector.newest_checkpoints() == []
        keys = AuditKeys.new(keyed_from=1)
        third, fourth = (Checkpoint.make(keys, n, f"{n:064x}", T0 + dt.timedelta(minutes=n)) for n in (3, 4))
        assert connector.write_checkpoint(third.fields()) is True
        assert connector.write_checkpoint(third.fields()) is False
        assert connector.write_checkpoint(fourth.fields()) is True
        assert firm.scalar("SELECT COUNT(*) FROM ledgerlink_audit") == 2
        found = firm_latest("ledgerlink_audit", connector.newest_checkpoints(), keys)
        assert found.forged is None and found.checkpoint == fourth
        report = {r.what: r for r in connector.dry_run() if r.what.startswith("audit")}
        assert list(report) == ["audit.newest", "audit.exists", "audit.statements.0"]
        assert all(r.verdict == "ok" for r in report.values()), report
        assert firm.scalar("SELECT COUNT(*) FROM ledgerlink_audit") == 2  # the rehearsal wrote nothing
        connector.close()
        misnamed = with_audit(sig="signatur")
        refused = {r.what: str(r.message) for r in misnamed.dry_run() if r.verdict == "refused"}
        assert "signatur" in refused["audit.newest"] and "signatur" in refused["audit.statements.0"]
        with pytest.raises(ConfigurationError, match="signatur"):
            misnamed.write_checkpoint(Checkpoint.make(keys, 5, f"{5:064x}", T0).fields())
        misnamed.close()

    def test_dry_run_runs_a_write_in_order_as_the_write_does(self, firm: Firm) -> None:
        """A write built as a sequence (a TEMP table one statement makes and the next reads) passes the rehearsal
        as it passes a real write; a statement the database refuses is named and the rest are not tried."""
        seed(firm)
        drop = firm.speaks.drop_temporary
        steps = ("postings:\n  kind: sql\n"
                 "  exists: SELECT 1 FROM receipts WHERE reference = :reference\n  statements:\n"
                 "    - CREATE TEMPORARY TABLE ledgerlink_guard (reference VARCHAR(64), pence INTEGER)\n"
                 "    - INSERT INTO ledgerlink_guard (reference, pence) VALUES (:reference, :amount_minor)\n"
                 "    - INSERT INTO receipts (reference, statement_id, amount_pence) "
                 "SELECT reference, :statement_key, pence FROM ledgerlink_guard\n"
                 f"    - {drop} ledgerlink_guard\n")
        connector = firm.connector(steps)
        report = [r for r in connector.dry_run() if r.what.startswith("postings")]
        assert [(r.what, r.verdict, r.message) for r in report] == [
            ("postings.exists", "ok", None), *((f"postings.statements.{i}", "ok", None) for i in range(4))]
        assert firm.scalar("SELECT COUNT(*) FROM receipts") == 0  # rolled back, and the temp table went with it
        params = {"reference": "PM9:101", "statement_key": "101", "amount_minor": 10}
        assert connector.write_posting(params) is True  # the real write runs the same sequence
        assert connector.write_posting(params) is False  # and, on the same connection, finds it posted
        assert firm.scalar("SELECT amount_pence FROM receipts WHERE reference = 'PM9:101'") == 10
        connector.close()

        bad = firm.connector(steps.replace("SELECT reference, :statement_key, pence", "SELECT reference, "
                                           ":statement_key, pense"))
        found = {r.what: r for r in bad.dry_run() if r.what.startswith("postings.statements")}
        assert [found[f"postings.statements.{i}"].verdict for i in range(4)] == ["ok", "ok", "refused", "unchecked"]
        assert "pense" in str(found["postings.statements.2"].message)
        assert "postings.statements.2 came first" in str(found["postings.statements.3"].message)
        bad.close()

    def test_reconciliation_sweep_finds_changes_without_a_watermark_and_rewrites_nothing_else(
            self, firm: Firm, store: StateStore) -> None:
        seed(firm)
        syncer = self.syncer(firm, store)
        syncer.sync()
        firm.execute("UPDATE statements SET balance = :b WHERE id = 103", b=firm.money("1.23"))  # no watermark bump
        firm.execute("DELETE FROM statements WHERE id = 104")
        assert syncer.sync().rows["statements"] == 0  # the incremental sync cannot see either
        stored: list[int] = []
        real_store = syncer._store

        def counting(batch: Any, checkpoint: bool = True, prepared: Any = None) -> None:
            stored.append(len(batch.rows))
            real_store(batch, checkpoint, prepared)

        syncer._store = counting  # type: ignore[method-assign]
        result = syncer.reconcile()
        assert result.rows == {"clients": 0, "matters": 0, "statements": 1}
        assert result.deleted["statements"] == 1
        st = mirror(store, firm_statements)
        assert st["103"]["balance"] == Decimal("1.23") and st["104"]["deleted"]
        stored.clear()
        assert syncer.reconcile().rows == {"clients": 0, "matters": 0, "statements": 0}
        assert stored == []  # a clean sweep is a read: not one mirror row rewritten
