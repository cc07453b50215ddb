"""A Direct Debit payer on the demo firm, for the Direct Debit and payment-plan tests: payer 90 with matter
M-2026-0900 (so the demo's own bills never change the figures), an active sandbox mandate, and the firm-database
and provider steps the tests drive by hand. Its ``home`` and ``rt`` fixtures are imported by each test module."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import STAFF

from agent.engine.payments import EventPoller
from agent.engine.plans import Plans
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.runtime import Runtime
from connectors.providers import sandbox

TODAY = dt.date.today()
DUE = TODAY + dt.timedelta(days=10)
PAST = TODAY - dt.timedelta(days=10)
PAYER = "90"
MATTER = "M-2026-0900"


def firm(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "demo-firm.db")


def make_home(home: Path) -> Path:
    """The demo home with the test payer, its client and matter (no bills yet)."""
    init_home(home)
    add_payer(home)
    return home


def add_payer(home: Path) -> None:
    """Payer 90, Ada Direct, with her client and matter M-2026-0900, in the demo firm at ``home``."""
    with firm(home) as conn:
        conn.execute("INSERT INTO clients (id, name, email) VALUES (90, 'Ada Direct', 'ada@example.com')")
        conn.execute("INSERT INTO payers (id, client_id, name, email) VALUES (90, 90, 'Ada Direct', 'ada@example.com')")
        conn.execute("INSERT INTO matters (id, matter_no, title, client_id, payer_id) VALUES (900, ?, 'Lease', 90, 90)",
                     (MATTER,))


def owing_3000_with_a_mandate(runtime: Runtime, home: Path) -> None:
    """Payer 90 (M-2026-0900) owes 3,000.00 on one bill, due on DUE, and has finished the sandbox's mandate flow."""
    add_payer(home)
    add_bill(home, "INV-3000", 300000, DUE)
    sync(runtime)
    sandbox.set_mandate(home, runtime.directdebit.setup_mandate(STAFF, PAYER).setup_ref, "active")
    poll(runtime)


@pytest.fixture(name="home")
def home_fixture(tmp_path: Path) -> Path:
    return make_home(tmp_path / "home")


@pytest.fixture(name="rt")
def rt_fixture(home: Path) -> Iterator[Runtime]:
    runtime = with_active_mandate(home)
    yield runtime
    runtime.close()


def with_active_mandate(home: Path) -> Runtime:
    """A runtime on ``home`` whose payer has completed the sandbox's mandate flow."""
    runtime = Runtime.for_home(home)
    runtime.links.retry_initial = 0.01
    sync(runtime)
    mandate = runtime.directdebit.setup_mandate(STAFF, PAYER)
    assert mandate.status == "pending_customer_approval" and mandate.url
    sandbox.set_mandate(home, mandate.setup_ref, "active")  # the payer completes the flow
    poll(runtime)
    assert [m.status for m in runtime.directdebit.list_mandates()] == ["active"]
    return runtime


def add_bill(home: Path, number: str, pence: int, due: dt.date) -> str:
    """A statement for the test payer; issued 30 days before it is due, as the demo firm does."""
    with firm(home) as conn:
        cur = conn.execute(
            "INSERT INTO bills (bill_no, matter_id, issued_on, due_on, total_pence, balance_pence)"
            " VALUES (?, 900, ?, ?, ?, ?)", (number, (due - dt.timedelta(days=30)).isoformat(), due.isoformat(),
                                               pence, pence))
        return str(cur.lastrowid)


def set_balance(home: Path, key: str, pence: int) -> None:
    with firm(home) as conn:
        conn.execute("UPDATE bills SET balance_pence = ? WHERE id = ?", (pence, int(key)))


def balance(home: Path, key: str) -> int:
    with firm(home) as conn:
        pence: int = conn.execute("SELECT balance_pence FROM bills WHERE id = ?", (int(key),)).fetchone()[0]
        return pence


def sync(rt: Runtime) -> None:
    Syncer(rt.store, rt.connector).sync()


def poll(rt: Runtime) -> None:
    EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()


def at_sandbox(home: Path, ref: str | None) -> tuple[str, str]:
    with sqlite3.connect(home / sandbox.DB_NAME) as conn:
        row: tuple[str, str] = conn.execute("SELECT amount, status FROM collections WHERE ref = ?", (ref,)).fetchone()
        return row


# --- payment plans ---------------------------------------------------------------------------------------------


def plans_on(rt: Runtime, day: dt.date = TODAY) -> Plans:
    """The plan engine as the service runs it on ``day``."""
    return Plans(rt.settings, rt.store, rt.directdebit, today=lambda: day)


def instalment_refs(rt: Runtime, plan_id: str) -> list[str | None]:
    """Each instalment's collection at the provider (None: not asked for yet)."""
    return [rt.directdebit.get_collection(i.collection_id).provider_ref if i.collection_id else None
            for i in rt.plans.get(plan_id).instalments]


def receipts(home: Path, refs: list[str | None]) -> list[tuple[str, int]]:
    """The firm's receipts for these provider payments, in the order they were written."""
    with firm(home) as conn:
        rows = conn.execute("SELECT reference, amount_pence FROM receipts ORDER BY id").fetchall()
    return [(r, p) for r, p in rows if r.split(":")[0] in refs]
