"""Payment-plan instalments under SIGKILL (issue 27): the plan job that submits the instalments, and the postings
outbox that writes their payments into the firm database, are killed at random and right at their worst moments
(the provider made a collection the state store does not know of yet; the firm committed a receipt the outbox has
not marked), at the sandbox and at the GoCardless and Stripe fakes. Counted from outside afterwards: one collection
per instalment at the provider, one receipt per instalment in the firm database.

The workers are forked by the zygote in tests/plans_kill_worker.py, on the test's agent home; a fake provider's
server runs in this process, the worker reaching it at the account's api_base with credentials from the
environment. The firm database is the demo firm's SQLite file (kill tests on PostgreSQL and MariaDB are in
tests/postings/test_crash.py and tests/service/test_failover.py)."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest
from directdebit_support import (
    DUE,
    MATTER,
    PAYER,
    TODAY,
    add_bill,
    balance,
    firm,
    home_fixture,  # noqa: F401  (pytest fixture "home")
    instalment_refs,
    plans_on,
    rt_fixture,  # noqa: F401  (pytest fixture "rt")
    sync,
)
from fakes.gocardless_api import FakeGoCardless
from fakes.stripe_api import FakeStripe
from money_support import GoCardlessMoney, MoneyWorld, StripeMoney, post_all, runtime_for
from plans_kill_worker import Kills, Zygote
from tests_support import STAFF

from agent.cli.main import main
from agent.engine.payments import EventPoller
from agent.engine.plans import LEAD_DAYS, PlanRequest
from agent.home.demo import RECEIPT_TRIGGER
from agent.runtime import Runtime
from connectors.providers import sandbox
from postings.queries import posting_rows

BUDGET = 40  # seconds for one provider's run (4 to 9 on two cores, also with a second suite running beside it)


def without_unique_receipts(home: Path) -> None:
    """The demo firm's receipts without the UNIQUE key on the reference, as many a firm's table has none: a second
    write of a payment would be a second row here, not a refused insert the outbox could take for 'already'."""
    with firm(home) as conn:
        conn.executescript(f"""
            CREATE TABLE receipts_plain (
                id INTEGER PRIMARY KEY, reference TEXT NOT NULL, bill_id INTEGER NOT NULL REFERENCES bills(id),
                amount_pence INTEGER NOT NULL, received_at TEXT NOT NULL, method TEXT NOT NULL);
            INSERT INTO receipts_plain SELECT * FROM receipts;
            DROP TABLE receipts;
            ALTER TABLE receipts_plain RENAME TO receipts;
            {RECEIPT_TRIGGER}""")
        assert not [i for i in conn.execute("PRAGMA index_list(receipts)") if i[2]]  # no unique index at all


def at_provider(home: Path, money: MoneyWorld) -> dict[str, int]:
    """Every collection the provider holds on the operating account, ref -> minor units, read at the provider
    (the sandbox's database, the fake's records), not from our state."""
    if isinstance(money, GoCardlessMoney):
        api = money.apis["operating"]
        assert isinstance(api, FakeGoCardless)
        with api.lock:
            return {p["id"]: p["amount"] for p in api.payments.values()}
    if isinstance(money, StripeMoney):
        api = money.apis["operating"]
        assert isinstance(api, FakeStripe)
        with api.lock:
            return {i["id"]: i["amount"] for i in api.payment_intents.values()}
    with sqlite3.connect(home / sandbox.DB_NAME) as conn:
        rows = conn.execute("SELECT ref, amount FROM collections WHERE account = 'operating'").fetchall()
    return {ref: int(Decimal(amount) * 100) for ref, amount in rows}


@pytest.mark.timeout(BUDGET)
@pytest.mark.parametrize("money", ["sandbox", "gocardless", "stripe"], indirect=True)
def test_six_instalments_are_collected_and_posted_once_each_under_sigkill(
        home: Path, money: MoneyWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """3,000.00 in 6 monthly instalments. For each instalment's date the zygote's workers run the plan job until
    one finishes: killed from outside at a random moment (at least once a date, then in about 6 runs in 10), and
    each instalment's collection made at the provider by a worker that then killed itself before the state store
    knew (the first to get there; later ones 30% of the time). Then the provider confirms them, the events are
    read, and the outbox posts them with workers killed the same way, at least three times right after the firm
    database committed a receipt. Counted outside: 6 collections at the provider, 6 receipts of 300000 pence in
    all in a firm table that would take a second copy, and the plan's 6 instalments paid."""
    started = time.monotonic()
    without_unique_receipts(home)
    bill = add_bill(home, "INV-KILL6", 300000, DUE)
    rt = runtime_for(home, money)
    zygote: Zygote | None = None
    try:
        poller = EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01)
        money.activate_mandate(rt.directdebit.setup_mandate(STAFF, PAYER, "operating").setup_ref)
        poller.poll()
        view = plans_on(rt).create(STAFF, PlanRequest(MATTER, count=6, first=TODAY + dt.timedelta(days=LEAD_DAYS + 2)))
        plan_id = view.id or ""
        assert [i.amount for i in view.instalments] == [Decimal("500.00")] * 6
        assert [i.state for i in view.instalments] == ["scheduled"] * 6 and at_provider(home, money) == {}
        zygote = Zygote(home, tmp_path)
        rng = random.Random(f"plans-kill-{money.name}")

        submitting = Kills()
        for n, instalment in enumerate(view.instalments, start=1):
            submitting += zygote.until_done("plan", rng, day=instalment.due_on, probability=0.3)
            assert len(at_provider(home, money)) == n  # one more collection at the provider, never a second one
        made = at_provider(home, money)
        assert len(made) == 6 and sum(made.values()) == 300000
        assert set(instalment_refs(rt, plan_id)) == set(made)  # each one ours, none lost
        created = zygote.marks("created")
        assert len(set(created)) == 6, created  # each instalment's worker died right after the provider made it

        for ref in made:
            money.collect(ref)  # submitted and confirmed by the banks (a card: charged when it was made)
        poller.poll()
        with rt.store.read() as conn:
            assert len(posting_rows(conn, ["pending"])) == 6
        posting = zygote.until_done("post", rng, probability=0.3, sure=3, outside=2)
        committed = zygote.marks("posted")
        assert len(committed) >= 3, posting  # killed between the firm's commit and the local mark
    finally:
        if zygote is not None:
            zygote.close()
        rt.close()

    assert submitting.killed >= 6 and posting.killed >= 2, (submitting, posting)  # from outside, at random
    with firm(home) as conn:
        receipts = conn.execute("SELECT reference, amount_pence FROM receipts WHERE bill_id = ?",
                                (int(bill),)).fetchall()
    assert len(receipts) == 6 and sum(p for _, p in receipts) == 300000  # once each, though nothing refuses twice
    assert sorted(r.split(":")[0] for r, _ in receipts) == sorted(made)
    assert balance(home, bill) == 0

    rt = Runtime.for_home(home)
    try:
        with rt.store.read() as conn:
            rows = posting_rows(conn)
        assert {r["state"] for r in rows} == {"posted"} and len(rows) == 6
        found = {r["reference"] for r in rows if r["note"] == "already in the firm database"}
        assert set(committed) <= found  # each receipt a worker died after was found there, not written again
        sync(rt)
        plans_on(rt, TODAY + dt.timedelta(days=200)).submit_due()
        done = rt.plans.get(plan_id)
        assert done.status == "ended" and [i.state for i in done.instalments] == ["confirmed"] * 6
    finally:
        rt.close()
    assert main(["--home", str(home), "plans", "list"]) == 0
    assert "6/6 paid" in capsys.readouterr().out
    seconds = time.monotonic() - started
    print(f"{money.name}: {seconds:.1f}s; plan job {submitting}, {len(created)} killed after the provider made "
          f"it; outbox {posting}, {len(committed)} killed after the firm's commit")


@pytest.mark.timeout(BUDGET)
def test_instalments_are_collected_once_each_when_the_job_is_killed_at_random(rt: Runtime, home: Path,
                                                                              tmp_path: Path) -> None:
    """SIGKILL while 30 due instalments are submitted in one pass, at random moments and right after the provider
    made a collection: each is one collection at the provider under its own key, none is lost, each posts once."""
    bill = add_bill(home, "INV-KILL", 300001, DUE)
    sync(rt)
    view = plans_on(rt).create(STAFF, PlanRequest(MATTER, count=30, frequency="weekly", first=TODAY))
    plan_id = view.id or ""
    zygote = Zygote(home, tmp_path)
    try:
        kills = zygote.until_done("plan", random.Random(27), day=TODAY + dt.timedelta(weeks=40), probability=0.25,
                                  sure=2)
    finally:
        zygote.close()
    assert kills.selfkilled >= 2 and kills.killed >= 1, kills
    refs = instalment_refs(rt, plan_id)
    assert None not in refs and len(set(refs)) == 30
    with sqlite3.connect(home / sandbox.DB_NAME) as conn:
        made = conn.execute("SELECT idempotency_key, amount FROM collections").fetchall()
    assert len(made) == len({k for k, _ in made}) == 30  # once each, under our own keys
    assert sum(Decimal(a) for _, a in made) == Decimal("3000.01")
    for ref in refs:
        assert ref is not None
        for status in ("submitted", "confirmed"):
            sandbox.set_collection(home, ref, status)
    EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
    post_all(rt)
    with firm(home) as conn:
        mine = conn.execute("SELECT amount_pence FROM receipts WHERE bill_id = ?", (int(bill),)).fetchall()
    assert sum(p for (p,) in mine) == 300001 and len(mine) == 30 and balance(home, bill) == 0
