"""The shipped GnuCash mapping against a real GnuCash 4 SQLite book (Debian's gnucash and python3-gnucash), judged
by GnuCash's own code: the book is made and every verdict read through GnuCash's Python bindings (gnucash_book.py,
run under Debian's Python, where they live), never through our SQL.

A full payment, a part payment and its settling remainder, one link paying two invoices, a charge-back reversed,
the book-open lock holding the write, workers killed while writing (every payment exactly once), the assistant
recognising the book, and the rehearsal passing on it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from money_support import post_all
from systems_support import debts, firm_runtime, paid_link, pay, poll, post_while_killing
from tests_support import require

from agent.engine.sync import Syncer
from agent.runtime import Runtime
from connectors.database.introspect import read_catalog
from connectors.providers import sandbox
from mappings.suggest import recognise
from postings.queries import posting_rows

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-gnucash is built for it
BOOK_TOOL = Path(__file__).with_name("gnucash_book.py")
MAPPING = Path(__file__).parents[2] / "mappings" / "gnucash.yaml"


def gnucash_unavailable() -> str | None:
    try:
        subprocess.run([SYSTEM_PYTHON, "-c", "import gnucash"], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return (f"GnuCash's Python bindings do not load under {SYSTEM_PYTHON} ({exc}); Debian: apt install gnucash "
                "python3-gnucash libdbd-sqlite3")
    return None


def book_tool(*args: str) -> str:
    done = subprocess.run([SYSTEM_PYTHON, str(BOOK_TOOL), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def judge(book: Path) -> dict[str, Any]:
    verdict: dict[str, Any] = json.loads(book_tool("judge", str(book)).strip().splitlines()[-1])
    return verdict


@pytest.fixture
def book(tmp_path: Path) -> Path:
    require(gnucash_unavailable())
    path = tmp_path / "home" / "accounts.gnucash"
    path.parent.mkdir()
    book_tool("make", str(path))
    return path


@pytest.fixture
def rt(book: Path) -> Iterator[Runtime]:
    runtime = firm_runtime(book.parent, MAPPING.read_text(encoding="utf-8"))
    yield runtime
    runtime.close()


def test_the_book_reads_as_customers_matters_and_posted_invoices(rt: Runtime, book: Path) -> None:
    assert debts(rt, "J001") == {"INV-1": Decimal("100.00"), "INV-3": Decimal("60.00")}
    assert debts(rt, "customer C001") == {"INV-2": Decimal("250.00")}
    assert all(not v["paid"] and v["payments"] == [] for v in judge(book).values())


def test_a_full_payment_is_a_gnucash_payment_that_pays_the_invoice(rt: Runtime, book: Path) -> None:
    pay(rt, "J001", statements={"INV-1": "100.00"})
    seen = judge(book)
    assert seen["INV-1"]["paid"] is True and seen["INV-1"]["balance_pence"] == 0
    assert seen["INV-1"]["balanced"] is True and len(seen["INV-1"]["payments"]) == 1
    assert seen["INV-3"] == {"balance_pence": 6000, "paid": False, "splits": 1, "balanced": True, "payments": []}
    assert debts(rt, "J001") == {"INV-3": Decimal("60.00")}  # never offered again


def test_a_part_payment_then_the_remainder_settle_the_invoice(rt: Runtime, book: Path) -> None:
    pay(rt, "customer C001", "100.00")
    seen = judge(book)["INV-2"]
    assert seen["balance_pence"] == 15000 and seen["paid"] is False and seen["balanced"] is True
    assert debts(rt, "customer C001") == {"INV-2": Decimal("150.00")}
    pay(rt, "customer C001")  # the whole of what is left
    seen = judge(book)["INV-2"]
    assert seen["balance_pence"] == 0 and seen["paid"] is True and len(seen["payments"]) == 2


def test_one_link_paying_two_invoices_writes_one_payment_into_each(rt: Runtime, book: Path) -> None:
    pay(rt, "J001")  # INV-1 and INV-3: 160.00
    seen = judge(book)
    for number in ("INV-1", "INV-3"):
        assert seen[number]["paid"] is True and seen[number]["balance_pence"] == 0 and seen[number]["balanced"]
        assert len(seen[number]["payments"]) == 1
    with sqlite3.connect(book) as conn:
        assert conn.execute("SELECT COUNT(*) FROM transactions WHERE num LIKE '%:%'").fetchone() == (2,)
    conn.close()


def test_a_charge_back_is_reversed_in_the_invoices_lot(rt: Runtime, book: Path) -> None:
    ref = pay(rt, "J001", statements={"INV-1": "100.00"})
    sandbox.charge_back(rt.settings.home, ref)
    poll(rt)
    post_all(rt)
    seen = judge(book)["INV-1"]
    assert seen["balance_pence"] == 10000 and seen["paid"] is False and seen["balanced"] is True
    assert len(seen["payments"]) == 2  # the payment and its reversal, both GnuCash payments
    Syncer(rt.store, rt.connector).sync()
    assert debts(rt, "J001")["INV-1"] == Decimal("100.00")


def test_a_book_open_in_gnucash_holds_the_payment_until_it_is_closed(rt: Runtime, book: Path) -> None:
    with sqlite3.connect(book) as conn:
        conn.execute("INSERT INTO gnclock (Hostname, PID) VALUES ('bookkeeper-pc', 4242)")
    conn.close()
    rt.outbox.ready_wait = 0  # ask the book again at once, not after the usual wait
    pay(rt, "J001", statements={"INV-1": "100.00"})
    assert judge(book)["INV-1"]["paid"] is False
    with rt.store.read() as state:
        held = posting_rows(state, ["retrying"])
    assert held and "the book is open in GnuCash on bookkeeper-pc (process 4242)" in str(held[0]["last_error"])
    with sqlite3.connect(book) as conn:
        conn.execute("DELETE FROM gnclock")
    conn.close()
    post_all(rt)
    assert judge(book)["INV-1"]["paid"] is True


def test_the_assistant_recognises_the_book_and_check_rehearses_every_statement(rt: Runtime, book: Path) -> None:
    matches = recognise(read_catalog(url=f"sqlite:///{book}"))
    assert matches and matches[0].name == "GnuCash"
    report = rt.connector.dry_run()
    assert [r for r in report if r.verdict != "ok"] == []
    assert judge(book)["INV-1"]["splits"] == 1  # the rehearsal wrote nothing


def test_killed_while_writing_every_payment_is_in_the_book_exactly_once(rt: Runtime, book: Path) -> None:
    """25 payments of 10.00 on INV-2, written by workers killed at random: some by the test at any moment, some
    by themselves right after GnuCash's book committed and before the state store knew. GnuCash then counts the
    payments in the invoice's lot; the transactions table has no UNIQUE on num to hide a double."""
    for _ in range(25):
        paid_link(rt, "customer C001", "10.00")  # each paid before the next is asked for
    assert post_while_killing(rt) >= 3, "the workers were hardly killed: the test proved nothing"
    seen = judge(book)["INV-2"]
    assert seen["paid"] is True and seen["balance_pence"] == 0 and seen["balanced"] is True
    assert len(seen["payments"]) == len(set(seen["payments"])) == 25
    with sqlite3.connect(book) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT num) FROM transactions WHERE num LIKE 'pay_%'"
                            ).fetchone() == (25, 25)
    conn.close()


def test_an_invoice_unposted_since_it_was_read_fails_its_payment_and_nothing_is_written(
        rt: Runtime, book: Path) -> None:
    with sqlite3.connect(book) as conn:
        transactions = conn.execute("SELECT COUNT(*) FROM transactions").fetchone()
        conn.execute("UPDATE invoices SET post_txn = NULL WHERE id = 'INV-1'")  # as GnuCash's Unpost leaves it
    conn.close()
    paid_link(rt, "J001", statements={"INV-1": "100.00"})
    post_all(rt)
    with rt.store.read() as state:
        [row] = posting_rows(state)
    assert row["state"] != "posted"
    assert "statement INV-1" in str(row["last_error"]) and "transactions.currency_guid" in str(row["last_error"])
    with sqlite3.connect(book) as conn:
        assert conn.execute("SELECT COUNT(*) FROM transactions").fetchone() == transactions
        assert conn.execute("SELECT COUNT(*) FROM splits WHERE memo LIKE 'Ledgerlink %'").fetchone() == (0,)
    conn.close()
