"""The link engine's rules (instant-bank-pay-flow.txt, send-for-payment-user-guide.txt), each with its own test,
on the demo firm and the embedded sandbox provider."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests_support import STAFF

from agent.core.errors import DataError, RuleError, TransientError
from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.engine.sync import Syncer
from agent.runtime import Runtime
from agent.state.schema import link_items
from connectors.providers import sandbox

MATTER = "M-2026-0010"  # Okafor probate: INV-1001 (644.30) + INV-1002 (1443.75), payer has an email
NO_EMAIL = "M-2026-0040"  # payer without an email address
CLOSED = "M-2026-0120"


def provider_links(home: Path) -> int:
    db = home / "sandbox.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        count: int = conn.execute("SELECT count(*) FROM links").fetchone()[0]
        return count


def firm_balances(home: Path) -> dict[str, int]:
    with sqlite3.connect(home / "demo-firm.db") as conn:
        return dict(conn.execute("SELECT bill_no, balance_pence FROM bills"))


def make_runtime(home: Path, **settings: str) -> Runtime:
    config = home / "ledgerlink.toml"
    kept = [line for line in config.read_text().splitlines() if line.split(" = ")[0] not in settings]
    config.write_text("".join(f'{k} = "{v}"\n' for k, v in settings.items()) + "\n".join(kept) + "\n")
    rt = Runtime.for_home(home)
    rt.links.retry_initial = 0.01
    Syncer(rt.store, rt.connector).sync()
    return rt


def poll(rt: Runtime, account: str = "operating") -> None:
    EventPoller(rt.store, rt.provider(account), account, retry_initial=0.01).poll()


def test_amount_defaults_to_balance_after_unposted_payments(rt: Runtime, home: Path) -> None:
    before = firm_balances(home)
    d = rt.links.defaults(MATTER)
    assert (d.open_balance, d.amount, d.pending_collections) == (Decimal("2088.05"), Decimal("2088.05"), Decimal(0))
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER, amount=Decimal("500.00")))
    assert link.provider_ref is not None
    sandbox.pay(home, link.provider_ref)
    poll(rt)
    d = rt.links.defaults(MATTER)
    # The firm still says 2088.05 (nothing posted yet), but 500 is on its way: the default is what remains.
    assert (d.open_balance, d.unposted_payments, d.amount) == (Decimal("2088.05"), Decimal("500.00"),
                                                                Decimal("1588.05"))
    assert firm_balances(home) == before  # creating and paying a link never wrote to the firm database


def test_existing_link_comes_back(rt: Runtime, home: Path) -> None:
    first = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    again = rt.links.create(STAFF, LinkRequest(matter=MATTER, amount=Decimal("1.00")))
    assert not first.existing and again.existing
    assert again.id == first.id and again.url == first.url and again.amount == Decimal("2088.05")
    assert provider_links(home) == 1


def test_concurrent_threads_make_one_link(rt: Runtime, home: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        links = list(pool.map(lambda _: rt.links.create(STAFF, LinkRequest(matter=MATTER)), range(8)))
    assert len({x.id for x in links}) == 1
    assert provider_links(home) == 1


def _create_in_process(home: str) -> str:
    runtime = Runtime.for_home(Path(home))
    try:
        return runtime.links.create(STAFF, LinkRequest(matter=MATTER)).id
    finally:
        runtime.close()


def test_concurrent_processes_make_one_link(rt: Runtime, home: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        ids = pool.map(_create_in_process, [str(home)] * 4)
    assert len(set(ids)) == 1
    assert provider_links(home) == 1


def test_description_defaults_to_service_and_date(home: Path) -> None:
    rt = make_runtime(home, service_name="Okafor & Co", description_template="{service} {date:%d %B %Y}")
    rt.links.today = lambda: dt.date(2026, 11, 22)
    assert rt.links.defaults(MATTER).description == "Okafor & Co 22 November 2026"
    edited = rt.links.create(STAFF, LinkRequest(matter=MATTER, description="Probate fees, first bill"))
    assert edited.description == "Probate fees, first bill"
    rt.close()


def test_payer_email_required_before_anything_is_sent(rt: Runtime, home: Path) -> None:
    with pytest.raises(RuleError) as err:
        rt.links.create(STAFF, LinkRequest(matter=NO_EMAIL))
    assert NO_EMAIL in str(err.value) and "Súilleabháin" in str(err.value) and "by text" in str(err.value)
    assert provider_links(home) == 0


def test_cancel_and_create_new(rt: Runtime, home: Path) -> None:
    old = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    new = rt.links.recreate(STAFF, old.id)
    assert rt.links.get(old.id).status == "cancelled"
    assert new.status == "outstanding" and new.replaces == old.id and new.url != old.url
    assert rt.links.create(STAFF, LinkRequest(matter=MATTER)).id == new.id  # the new one is now the debt's link


def test_cancel_failure_creates_nothing(rt: Runtime, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    provider = rt.provider("operating")

    def down(ref: str) -> None:
        raise TransientError("provider unavailable (503)")

    monkeypatch.setattr(provider, "cancel_link", down)
    with pytest.raises(TransientError):
        rt.links.recreate(STAFF, old.id)
    assert rt.links.get(old.id).status == "outstanding"
    assert provider_links(home) == 1


def test_recreate_after_payment_tells_the_user(rt: Runtime, home: Path) -> None:
    old = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    assert old.provider_ref is not None
    sandbox.pay(home, old.provider_ref)  # paid before the agent heard of it
    with pytest.raises(RuleError, match="was paid before it could be cancelled; no new link"):
        rt.links.recreate(STAFF, old.id)
    assert provider_links(home) == 1


@pytest.mark.parametrize("mode", ["offer", "auto"])
def test_partial_payment_closes_the_link_and_leaves_the_remainder(home: Path, mode: str) -> None:
    from agent.service.loop import poll_payments

    rt = make_runtime(home, remainder_link=mode)
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    assert link.provider_ref is not None
    sandbox.pay(home, link.provider_ref, Decimal("88.05"))
    poll_payments(rt)
    closed = rt.links.get(link.id)
    assert closed.status == "payment_received"
    assert closed.status_reason == "partial payment: 2000.00 GBP still owing"
    with pytest.raises(sandbox.ProviderError):
        sandbox.pay(home, link.provider_ref, Decimal("1.00"))  # single-use
    outstanding = rt.links.find(["outstanding"])
    if mode == "auto":
        assert [x.amount for x in outstanding] == [Decimal("2000.00")]
    else:
        assert outstanding == []
    rt.close()


def test_expiry_per_account(rt: Runtime, home: Path) -> None:
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER, account="trust"))
    assert link.expires_at - link.created_at == dt.timedelta(days=14)  # the trust account's expiry
    later = link.expires_at + dt.timedelta(seconds=1)
    sandbox.expire_due(home, later)
    assert rt.links.expire_due(later) == 1
    assert rt.links.get(link.id).status == "expired"
    assert rt.links.create(STAFF, LinkRequest(matter=MATTER)).id != link.id  # an expired link is no longer the debt's


@pytest.mark.parametrize("mode", ["cancel", "flag"])
def test_link_never_outlives_its_debt(home: Path, mode: str) -> None:
    rt = make_runtime(home, stale_link=mode)
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    with sqlite3.connect(home / "demo-firm.db") as firm:
        firm.execute("UPDATE bills SET state = 'VOID' WHERE bill_no = 'INV-1002'")
    Syncer(rt.store, rt.connector).sync()
    assert rt.links.review_outstanding(STAFF) == [link.id]
    after = rt.links.get(link.id)
    if mode == "cancel":
        assert after.status == "cancelled" and "INV-1002 was voided" in (after.status_reason or "")
    else:
        assert after.status == "outstanding" and "INV-1002 was voided" in (after.flagged or "")
    assert rt.links.review_outstanding(STAFF) == []  # reported once
    rt.close()


BILL_CHANGES = [  # (what happened to INV-1001 in the firm database, the flag's words or None)
    ("unchanged", "SELECT 1", None),
    ("raised", "UPDATE bills SET total_pence = 74430, balance_pence = 74430 WHERE bill_no = 'INV-1001'",
     "INV-1001 was raised from 644.30 to 744.30"),
    ("lowered", "UPDATE bills SET total_pence = 54430, balance_pence = 54430 WHERE bill_no = 'INV-1001'",
     "INV-1001 now owes 544.30, less than the link's 644.30"),
    ("part-paid", "UPDATE bills SET balance_pence = 40000 WHERE bill_no = 'INV-1001'",
     "INV-1001 now owes 400.00, less than the link's 644.30"),
    ("paid elsewhere", "UPDATE bills SET balance_pence = 0, state = 'PAID' WHERE bill_no = 'INV-1001'",
     "INV-1001"),
    ("voided", "UPDATE bills SET state = 'VOID' WHERE bill_no = 'INV-1001'", "INV-1001 was voided or removed"),
    ("deleted", "DELETE FROM bills WHERE bill_no = 'INV-1001'", "INV-1001 was voided or removed"),
    ("moved", "UPDATE bills SET matter_id = 11 WHERE bill_no = 'INV-1001'",
     "INV-1001 was moved to another matter"),
]


@pytest.mark.parametrize(("change", "sql", "flag"), BILL_CHANGES, ids=[c[0] for c in BILL_CHANGES])
@pytest.mark.parametrize("mode", ["flag", "cancel"])
def test_every_change_a_bill_can_undergo_reaches_its_outstanding_link(
        home: Path, mode: str, change: str, sql: str, flag: str | None) -> None:
    """A link for INV-1001's 644.30, then the bill changes: every change but none is the link's problem."""
    rt = make_runtime(home, stale_link=mode)
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER, statements={"INV-1001": Decimal("644.30")}))
    with sqlite3.connect(home / "demo-firm.db") as firm:
        firm.execute(sql)
    Syncer(rt.store, rt.connector).sync()
    Syncer(rt.store, rt.connector).sweep_deletes("statements")
    assert rt.links.review_outstanding(STAFF) == ([] if flag is None else [link.id])
    after = rt.links.get(link.id)
    if flag is None:
        assert (after.status, after.flagged) == ("outstanding", None)
    elif mode == "cancel":
        assert after.status == "cancelled" and flag in (after.status_reason or "")
    else:
        assert after.status == "outstanding" and flag in (after.flagged or "")
    rt.close()


def test_balance_paid_elsewhere_flags_the_link(home: Path) -> None:
    rt = make_runtime(home, stale_link="flag")
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER, statements={"INV-1001": Decimal("644.30")}))
    with sqlite3.connect(home / "demo-firm.db") as firm:
        firm.execute("UPDATE bills SET balance_pence = 10000 WHERE bill_no = 'INV-1001'")
    Syncer(rt.store, rt.connector).sync()
    rt.links.review_outstanding(STAFF)
    assert "INV-1001 now owes 100.00, less than the link's 644.30" in (rt.links.get(link.id).flagged or "")
    rt.close()


def test_amounts_across_specific_statements(rt: Runtime) -> None:
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER, statements={"INV-1001": Decimal("100.00"),
                                                                  "INV-1002": Decimal("43.75")}))
    assert link.amount == Decimal("143.75")


def test_quick_link(rt: Runtime, home: Path) -> None:
    link = rt.links.create(STAFF, LinkRequest(amount=Decimal("75.00"), name="Ada Lovelace", email="ada@example.com",
                                       invoice="Q-1", due_date=dt.date(2026, 12, 1)))
    assert link.matter_key is None and link.invoice_number == "Q-1" and link.status == "outstanding"
    assert rt.links.create(STAFF, LinkRequest(amount=Decimal("75.00"), name="Ada Lovelace", email="ada@example.com",
                                       invoice="Q-1")).existing


def test_over_balance_warns_when_set_to_warn(home: Path) -> None:
    rt = make_runtime(home, over_balance="warn")
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER, amount=Decimal("3000.00")))
    assert link.amount == Decimal("3000.00") and "more than the 2088.05" in link.warnings[0]
    rt.close()


@pytest.mark.parametrize(("request_kwargs", "error", "message"), [
    ({"matter": "M-9999"}, DataError, "unknown matter 'M-9999'"),
    ({"matter": CLOSED}, RuleError, "is closed"),
    ({"matter": MATTER, "amount": Decimal("0")}, RuleError, "more than zero"),
    ({"matter": MATTER, "amount": Decimal("-5")}, RuleError, "more than zero"),
    ({"matter": MATTER, "amount": Decimal("10.001")}, RuleError, "more than 2 decimal places"),
    ({"matter": MATTER, "amount": Decimal("2088.06")}, RuleError, "more than the 2088.05"),
    ({"matter": MATTER, "statements": {"INV-1003": Decimal("1")}}, RuleError, "cannot be paid on this matter"),
    ({"matter": MATTER, "statements": {"INV-1001": Decimal("644.31")}}, RuleError, "more than the 644.30"),
    ({"amount": Decimal("10"), "name": "X", "email": "not-an-email"}, RuleError, "email"),
])
def test_bad_input_reaches_no_provider(rt: Runtime, home: Path, request_kwargs: dict[str, Any], error: type,
                                       message: str) -> None:
    with pytest.raises(error, match=message):
        rt.links.create(STAFF, LinkRequest(**request_kwargs))
    assert provider_links(home) == 0


def test_currency_must_match_the_account(home: Path) -> None:
    config = home / "ledgerlink.toml"
    config.write_text(config.read_text() + '\n[accounts.euro]\nprovider = "sandbox"\ncurrency = "EUR"\n')
    rt = make_runtime(home)
    with pytest.raises(RuleError, match="takes EUR"):
        rt.links.create(STAFF, LinkRequest(matter=MATTER, account="euro"))
    assert provider_links(home) == 0
    rt.close()


def test_cancel_and_create_new_keeps_what_the_clerk_asked_for(rt: Runtime, home: Path) -> None:
    """Seed 000: the fresh link has "the current amount and description" (issue 13 item 8)."""
    old = rt.links.create(STAFF, LinkRequest(matter=MATTER, statements={"INV-1001": Decimal("100.00")},
                                      description="Probate: first instalment"))
    new = rt.links.recreate(STAFF, old.id)
    assert (new.amount, new.description, new.replaces) == (Decimal("100.00"), "Probate: first instalment", old.id)
    changed = rt.links.recreate(STAFF, new.id, LinkRequest(amount=Decimal("250.00")))
    assert (changed.amount, changed.description) == (Decimal("250.00"), "Probate: first instalment")
    with pytest.raises(RuleError, match="more than"):
        rt.links.recreate(STAFF, changed.id, LinkRequest(statements={"INV-1001": Decimal("700.00")}))  # owes 644.30
    assert rt.links.get(changed.id).status == "outstanding"  # refused before anything was cancelled


def test_recreate_on_the_command_line_takes_the_changes(rt: Runtime, home: Path) -> None:
    from agent.cli.main import main

    old = rt.links.create(STAFF, LinkRequest(matter=MATTER, amount=Decimal("300.00"), description="Costs on account"))
    assert main(["--home", str(home), "links", "recreate", old.id, "--description", "Costs, part 2", "--json"]) == 0
    new = rt.links.find(["outstanding"])[0]
    assert (new.amount, new.description, new.replaces) == (Decimal("300.00"), "Costs, part 2", old.id)


def test_the_payer_sees_firm_matter_invoices_and_disclaimer_and_never_a_key(rt: Runtime, home: Path) -> None:
    """Issue 24: the pay page names the firm, the matter and invoice numbers, the amount, the description and the
    account's disclaimer, as the link engine sent them; the matter's and statements' keys appear nowhere."""
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    server = sandbox.SandboxPayServer(home)
    try:
        status, body = server.render(link.provider_ref or "")
    finally:
        server.stop()
    page = body.decode()
    shown = dict(re.findall(r'<dd id="(\w+)">([^<]*)</dd>', page))
    assert status == 200 and shown == {
        "firm": "Demo Legal LLP", "matter": MATTER, "invoices": "INV-1001, INV-1002", "amount": "GBP 2088.05",
        "description": link.description}
    assert re.search(r'id="disclaimer">Demo Legal LLP is authorised and regulated', page)
    with sqlite3.connect(home / "sandbox.db") as conn:
        (reference,) = conn.execute("SELECT reference FROM links WHERE ref = ?", (link.provider_ref,)).fetchone()
    assert reference == "INV-1001, INV-1002"
    with rt.store.read() as conn:
        keys = {link.matter_key, *conn.execute(select(link_items.c.statement_key)
                                               .where(link_items.c.link_id == link.id)).scalars()}
    words = {w for value in shown.values() for w in re.split(r"[\s,]+", value)}  # the demo's keys are "1", "10"
    assert len(keys) == 3 and not keys & words, keys & words
