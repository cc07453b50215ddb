"""Issue 12: each defect found by reading the providers' SDKs and API references, against fakes that follow them.

Every test here fails on the adapters, engine and fakes as they were before issue 12 (see the commit message):
the fakes (tests/fakes) cite the sources they follow.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from fakes.gocardless_api import FakeGoCardless
from fakes.stripe_api import FakeStripe
from sqlalchemy import func, select, update
from tests_support import STAFF

from agent.core.errors import TransientError
from agent.core.model import MerchantAccount
from agent.engine.payments import EventPoller, apply_event, parked_events
from agent.state import StateStore
from agent.state.schema import links, payments, postings
from agent.state.store import utcnow
from connectors.providers.contract import EventKind, LinkStatus, MandatePayer, ProviderEvent
from connectors.providers.gocardless import GoCardlessProvider
from connectors.providers.stripe import DEFAULT_SUCCESS_URL, StripeProvider
from connectors.testkit.provider import AMOUNT, drain, make_spec, tied
from postings.outbox import WITHDRAWN

ACCOUNT = "operating"


@pytest.fixture
def gc_api() -> Iterator[FakeGoCardless]:
    server = FakeGoCardless().start()
    yield server
    server.stop()


@pytest.fixture
def gc(gc_api: FakeGoCardless) -> GoCardlessProvider:
    account = MerchantAccount(name=ACCOUNT, provider="gocardless", api_base=gc_api.url)
    return GoCardlessProvider(account, "sandbox_token", timeout=2)


@pytest.fixture
def st_api() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    yield server
    server.stop()


@pytest.fixture
def st(st_api: FakeStripe) -> StripeProvider:
    account = MerchantAccount(name=ACCOUNT, provider="stripe", api_base=st_api.url)
    return StripeProvider(account, "sk_test_fake", timeout=2)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    state = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield state
    state.close()


def collection(provider: GoCardlessProvider, api: FakeGoCardless, amount: str = "30.00") -> str:
    """A Direct Debit payment against an active mandate at the fake."""
    setup = provider.setup_mandate(MandatePayer("P1", "Ada Lovelace", "ada@example.com", uuid.uuid4().hex))
    mandate = api.complete_mandate_flow(setup.ref)
    api.set_mandate(mandate, "active")
    return provider.create_collection(mandate, Decimal(amount), "GBP", None, "INV-1", uuid.uuid4().hex).ref


def on_the_books(store: StateStore, payment_ref: str) -> Decimal:
    """What the outbox holds for the payment: live postings less live reversals."""
    with store.read() as conn:
        total = conn.execute(
            select(func.coalesce(func.sum(postings.c.amount), 0))
            .join(payments, payments.c.id == postings.c.payment_id)
            .where(payments.c.payment_ref == payment_ref, postings.c.state != "removed")
        ).scalar()
        return Decimal(str(total))


def status(store: StateStore, payment_ref: str) -> str:
    with store.read() as conn:
        state: str = conn.execute(select(payments.c.status).where(payments.c.payment_ref == payment_ref)).scalar_one()
        return state


def apply_all(store: StateStore, events: list[ProviderEvent], provider: str = "gocardless") -> None:
    for event in events:  # one transaction each, as separate polls would
        with store.begin() as conn:
            apply_event(conn, ACCOUNT, provider, event)


def add_link(store: StateStore, ref: str, provider: str = "gocardless") -> str:
    link_id = uuid.uuid4().hex[:32]
    now = utcnow()
    with store.begin() as conn:
        conn.execute(links.insert().values(
            id=link_id, account=ACCOUNT, provider=provider, provider_ref=ref, status="outstanding", amount=AMOUNT,
            currency="GBP", description="Invoice 1042", created_at=now, expires_at=now + dt.timedelta(days=6),
            idempotency_key=uuid.uuid4().hex))
    return link_id


# --- defect 1: a retried Direct Debit collection is posted, once, in any order ------------------------------------


def test_retried_collection_is_posted_exactly_once_whatever_the_order(
    gc: GoCardlessProvider, gc_api: FakeGoCardless, tmp_path: Path
) -> None:
    ref = collection(gc, gc_api)
    for step in ("submitted", "failed"):
        gc_api.set_payment(ref, step)
    gc_api.resubmit(ref)  # resubmission_requested (PaymentsService.retry), then submission again
    for step in ("submitted", "confirmed"):
        gc_api.set_payment(ref, step)
    events = [e for e in drain(gc, None)[0] if e.payment_ref == ref]
    assert [e.raw_status for e in events][-3:] == ["pending_submission", "submitted", "confirmed"]
    orders = [events, list(reversed(events))] + [random.Random(seed).sample(events, len(events)) for seed in range(4)]
    for i, order in enumerate(orders):
        store = StateStore(f"sqlite:///{tmp_path / f'order{i}.db'}")
        apply_all(store, order)
        apply_all(store, order)  # a re-read changes nothing
        assert status(store, ref) == "confirmed", [e.raw_status for e in order]
        assert on_the_books(store, ref) == Decimal("30.00"), [e.raw_status for e in order]
        store.close()


def test_resubmission_withdraws_an_unwritten_reversal_and_reposts_a_written_one(
    gc: GoCardlessProvider, gc_api: FakeGoCardless, store: StateStore
) -> None:
    ref = collection(gc, gc_api)
    cursor = None

    def step(*moves: str) -> None:
        nonlocal cursor
        for move in moves:
            gc_api.resubmit(ref) if move == "resubmit" else gc_api.set_payment(ref, move)
        events, cursor = drain(gc, cursor)
        apply_all(store, events)

    def written() -> None:  # the outbox wrote everything pending
        with store.begin() as conn:
            conn.execute(update(postings).where(postings.c.state.in_(("pending", "incomplete")))
                         .values(state="posted", attempts=1))

    step("submitted", "confirmed")
    written()
    step("failed")  # a late failure after confirmation: reversed
    assert on_the_books(store, ref) == 0
    step("resubmit", "submitted", "confirmed")  # collected after all, before the outbox wrote the reversal
    assert on_the_books(store, ref) == Decimal("30.00")
    with store.read() as conn:
        notes = conn.execute(select(postings.c.kind, postings.c.note)).all()
    assert ("reversal", WITHDRAWN) in notes
    written()
    step("failed")  # fails again: the withdrawn reversal stands again
    assert on_the_books(store, ref) == 0
    written()
    step("resubmit", "submitted", "confirmed")  # the reversal was written this time: posted again, new round
    assert on_the_books(store, ref) == Decimal("30.00")
    with store.read() as conn:
        refs = conn.execute(select(postings.c.reference).where(postings.c.kind == "payment")).scalars().all()
    assert any(r.endswith(":P2") for r in refs)


# --- defect 2: an Instant Bank Pay payment is tied to its link by the billing request's fulfilled event ----------


def test_payment_is_tied_to_its_billing_request_by_the_fulfilled_event(
    gc: GoCardlessProvider, gc_api: FakeGoCardless
) -> None:
    link = gc.create_link(make_spec(gc))
    payment_ref = gc_api.pay(link.ref)
    payment_events = [e for e in gc_api.events if e["resource_type"] == "payments"]
    assert payment_events and all(set(e["links"]) == {"payment"} for e in payment_events)  # Payment.cs
    events, _ = drain(gc, None)
    assert tied(events) == {payment_ref: link.ref}
    (fulfilled,) = [e for e in events if e.raw_status == "billing_requests.fulfilled"]
    assert (fulfilled.kind, fulfilled.amount) == (EventKind.PAYMENT_PENDING, AMOUNT)


def test_link_learnt_after_the_payment_closes_the_link_and_allocates_through_it(
    gc: GoCardlessProvider, gc_api: FakeGoCardless, store: StateStore
) -> None:
    link = gc.create_link(make_spec(gc))
    link_id = add_link(store, link.ref)
    payment_ref = gc_api.pay(link.ref)
    events, _ = drain(gc, None)
    fulfilled = [e for e in events if e.raw_status == "billing_requests.fulfilled"]
    apply_all(store, [e for e in events if e not in fulfilled] + fulfilled)  # the fulfilled event came late
    with store.read() as conn:
        assert conn.execute(select(payments.c.link_id).where(payments.c.payment_ref == payment_ref)).scalar() \
            == link_id
        assert conn.execute(select(links.c.status).where(links.c.id == link_id)).scalar() == "payment_received"
    assert on_the_books(store, payment_ref) == AMOUNT


# --- defect 3: event reading that cannot skip events ------------------------------------------------------------


def test_gocardless_event_that_appears_late_is_still_read(gc: GoCardlessProvider, gc_api: FakeGoCardless) -> None:
    first = gc.create_link(make_spec(gc))
    gc_api.pay(first.ref)
    _, cursor = drain(gc, None)
    late = gc.create_link(make_spec(gc))
    gc_api.delay_events()  # event creation is asynchronous (EventService.cs)
    late_payment = gc_api.pay(late.ref)
    gc_api.release_events()
    gc_api.delay_events()
    on_time = gc.create_link(make_spec(gc))
    gc_api.release_events()
    gc_api.pay(on_time.ref)
    # Publish the newer payment's events first, then the older ones: the older appear after newer ones.
    held = [e for e in gc_api.events if late_payment in e["links"].values()]
    gc_api.events = [e for e in gc_api.events if e not in held]
    seen, cursor = drain(gc, cursor)
    assert late_payment not in {e.payment_ref for e in seen}
    gc_api.events.extend(held)
    later, _ = drain(gc, cursor)
    assert late_payment in {e.payment_ref for e in later}
    assert not {e.event_id for e in later} & {e.event_id for e in seen}  # the overlap is not returned twice


def test_stripe_event_that_appears_late_is_still_read(st: StripeProvider, st_api: FakeStripe) -> None:
    first = st.create_link(make_spec(st))
    st_api.pay(first.ref)
    _, cursor = drain(st, None)
    late = st.create_link(make_spec(st))
    st_api.delay_events()
    late_intent = st_api.pay(late.ref)
    on_time = st.create_link(make_spec(st))
    held = st_api._held or []
    st_api._held = None
    st_api.pay(on_time.ref)
    seen, cursor = drain(st, cursor)
    assert late_intent not in {e.payment_ref for e in seen}
    st_api.events.extend(held)
    later, _ = drain(st, cursor)
    assert late_intent in {e.payment_ref for e in later}
    assert not {e.event_id for e in later} & {e.event_id for e in seen}


def test_a_page_without_mapped_events_does_not_end_a_read_from_the_start(
    gc: GoCardlessProvider, gc_api: FakeGoCardless, store: StateStore
) -> None:
    link = gc.create_link(make_spec(gc))
    payment_ref = gc_api.pay(link.ref)
    for _ in range(3):  # newer events the agent does not follow
        gc_api._event("creditors", "updated", creditor="CR000000000001")
    gc_api.events.sort(key=lambda e: e["resource_type"] != "creditors")  # ...and older ones
    for i, event in enumerate(gc_api.events):
        event["created_at"] = (dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i)).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
    result = EventPoller(store, gc, ACCOUNT, page_size=1, retry_initial=0.01).poll(from_start=True)
    assert result.new >= 1
    assert status(store, payment_ref) == "confirmed"


# --- defect 6: one bad event is parked, the feed goes on ---------------------------------------------------------


def test_unreadable_event_is_parked_listed_and_retried(
    gc: GoCardlessProvider, gc_api: FakeGoCardless, store: StateStore
) -> None:
    setup = gc.setup_mandate(MandatePayer("P1", "Ada Lovelace", "ada@example.com", uuid.uuid4().hex))
    mandate = gc_api.complete_mandate_flow(setup.ref)
    gc_api.set_mandate(mandate, "awaiting_new_documentation")  # a status this agent does not know
    link = gc.create_link(make_spec(gc))
    payment_ref = gc_api.pay(link.ref)
    poller = EventPoller(store, gc, ACCOUNT, retry_initial=0.01)
    result = poller.poll()
    assert result.parked >= 1
    assert status(store, payment_ref) == "confirmed"  # the feed went on past the bad event
    parked = parked_events(store, ACCOUNT)
    assert parked and all("undocumented status" in p.error for p in parked)
    assert poller.poll().new == 0 and poller.cursor() is not None  # and the cursor moved on
    gc_api.mandates[mandate]["status"] = "active"  # readable now
    assert sorted(poller.retry_parked()) == sorted(p.event_id for p in parked)
    assert parked_events(store, ACCOUNT) == []


# --- defect 4: Stripe hosted Checkout needs success_url ----------------------------------------------------------


def test_stripe_refuses_a_session_without_success_url_and_the_adapter_sends_one(
    st: StripeProvider, st_api: FakeStripe
) -> None:
    refused = requests.post(f"{st_api.url}/v1/checkout/sessions", data={"mode": "payment"}, timeout=5)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "success_url"
    link = st.create_link(make_spec(st))
    assert st_api.sessions[link.ref]["success_url"] == DEFAULT_SUCCESS_URL
    own = MerchantAccount(name=ACCOUNT, provider="stripe", api_base=st_api.url,
                          options={"success_url": "https://firm.example/paid?s={CHECKOUT_SESSION_ID}"})
    link = StripeProvider(own, "sk_test_fake", timeout=2).create_link(make_spec(st))
    assert st_api.sessions[link.ref]["success_url"] == "https://firm.example/paid?s={CHECKOUT_SESSION_ID}"


# --- defect 8: idempotency replays and concurrent keys -----------------------------------------------------------


def test_a_500_saved_under_the_key_does_not_block_the_link_for_a_day(st: StripeProvider, st_api: FakeStripe) -> None:
    spec = make_spec(st)
    st_api.fail_next_saved()
    with pytest.raises(TransientError):
        st.create_link(spec)
    link = st.create_link(spec)  # the key now replays that 500 for 24 hours
    assert link.status is LinkStatus.OUTSTANDING and st_api.link_count() == 1
    assert st.create_link(spec).ref == link.ref  # and a further retry finds the same session


def test_a_concurrent_request_with_the_same_key_is_transient(st: StripeProvider, st_api: FakeStripe) -> None:
    spec = make_spec(st)
    st_api.key_in_flight(spec.idempotency_key)
    with pytest.raises(TransientError, match="in progress"):
        st.create_link(spec)
    st_api.key_in_flight(spec.idempotency_key, busy=False)
    assert st.create_link(spec).status is LinkStatus.OUTSTANDING


# --- defect 9: books that follow the provider ---------------------------------------------------------------------


def test_a_won_dispute_posts_again(st: StripeProvider, st_api: FakeStripe, store: StateStore) -> None:
    link = st.create_link(make_spec(st))
    intent = st_api.pay(link.ref)
    st_api.inquire(intent)  # an inquiry takes no money
    poller = EventPoller(store, st, ACCOUNT, retry_initial=0.01)
    poller.poll()
    assert (status(store, intent), on_the_books(store, intent)) == ("confirmed", AMOUNT)
    st_api.charge_back(intent)
    poller.poll()
    assert (status(store, intent), on_the_books(store, intent)) == ("charged_back", Decimal(0))
    st_api.win_dispute(intent)
    poller.poll()
    assert (status(store, intent), on_the_books(store, intent)) == ("confirmed", AMOUNT)
    assert poller.reconcile(utcnow() - dt.timedelta(hours=1)).unknown_at_provider == []
    assert (status(store, intent), on_the_books(store, intent)) == ("confirmed", AMOUNT)


def test_fulfilled_billing_request_is_not_paid_until_its_payment_is_confirmed(
    gc: GoCardlessProvider, gc_api: FakeGoCardless
) -> None:
    link = gc.create_link(make_spec(gc))
    payment_ref = gc_api.pay(link.ref, confirm=False)
    assert gc_api.billing_requests[link.ref]["status"] == "fulfilled"
    got = gc.get_link(link.ref)
    assert (got.status, got.amount_paid) == (LinkStatus.PAYMENT_RECEIVED, None)  # used up, nothing received yet
    gc_api.set_payment(payment_ref, "failed")
    assert gc.get_link(link.ref).status is LinkStatus.FAILED
    gc_api.expire(gc.create_link(make_spec(gc)).ref)
    assert {br["status"] for br in gc_api.billing_requests.values()} <= {"pending", "fulfilled"}


# --- reconciliation: lost events are healed, nothing doubled ----------------------------------------------------


def test_reconcile_recovers_every_deleted_gocardless_event(
    gc: GoCardlessProvider, gc_api: FakeGoCardless, store: StateStore
) -> None:
    since = utcnow() - dt.timedelta(hours=1)
    poller = EventPoller(store, gc, ACCOUNT, retry_initial=0.01)
    link = gc.create_link(make_spec(gc))
    link_id = add_link(store, link.ref)
    paid = gc_api.pay(link.ref)
    dd = collection(gc, gc_api)
    gc_api.set_payment(dd, "submitted")
    gc_api.set_payment(dd, "confirmed")
    cancelled = gc.create_link(make_spec(gc))
    cancelled_id = add_link(store, cancelled.ref)
    gc.cancel_link(cancelled.ref)
    gc_api.events.clear()  # the feed lost everything
    assert poller.poll().new == 0
    result = poller.reconcile(since)
    assert result.unknown_at_provider == []
    assert (status(store, paid), on_the_books(store, paid)) == ("confirmed", AMOUNT)
    assert (status(store, dd), on_the_books(store, dd)) == ("confirmed", Decimal("30.00"))
    with store.read() as conn:
        assert conn.execute(select(payments.c.link_id).where(payments.c.payment_ref == paid)).scalar() == link_id
        assert conn.execute(select(links.c.status).where(links.c.id == cancelled_id)).scalar() == "cancelled"
    again = poller.reconcile(since)
    assert again.applied == 0
    assert on_the_books(store, paid) == AMOUNT and on_the_books(store, dd) == Decimal("30.00")


def test_reconcile_applies_a_missed_status_and_reports_what_the_provider_lacks(
    st: StripeProvider, st_api: FakeStripe, store: StateStore
) -> None:
    since = utcnow() - dt.timedelta(hours=1)
    poller = EventPoller(store, st, ACCOUNT, retry_initial=0.01)
    kept = st_api.pay(st.create_link(make_spec(st)).ref)
    poller.poll()
    lost = st_api.pay(st.create_link(make_spec(st)).ref)
    st_api.charge_back(kept)
    st_api.delete_events("charge.dispute.created")  # the dispute's event is lost, and the whole new payment
    st_api.events = [e for e in st_api.events if e["data"]["object"].get("payment_intent") != lost]
    poller.poll()
    assert on_the_books(store, kept) == AMOUNT
    with store.begin() as conn:  # a payment the provider has no record of
        conn.execute(payments.insert().values(
            id="pay_pi_ghost", account=ACCOUNT, provider="stripe", payment_ref="pi_ghost", amount=AMOUNT,
            currency="GBP", status="confirmed", method="card", status_at=utcnow(), created_at=utcnow()))
    result = poller.reconcile(since)
    assert (status(store, kept), on_the_books(store, kept)) == ("charged_back", Decimal(0))
    assert on_the_books(store, lost) == AMOUNT
    assert result.unknown_at_provider == ["pay_pi_ghost"]
    assert poller.reconcile(since).applied == 0
    assert on_the_books(store, lost) == AMOUNT


# --- defect 7: one bad account does not stop the others -----------------------------------------------------------


def test_a_failing_account_backs_off_alone_and_shows_its_error(
    gc: GoCardlessProvider, gc_api: FakeGoCardless, store: StateStore
) -> None:
    from agent.service.loop import PaymentPolls

    broken_api = FakeGoCardless().start()
    try:
        broken_api.fail_next(401, times=100)
        broken = GoCardlessProvider(MerchantAccount(name="trust", provider="gocardless", api_base=broken_api.url),
                                    "sandbox_revoked", timeout=2)
        providers = {"trust": broken, ACCOUNT: gc}  # the failing account comes first in the config
        rt = SimpleNamespace(store=store, provider=providers.__getitem__, links=None,
                             settings=SimpleNamespace(accounts=providers, remainder_link="off"))
        link = gc.create_link(make_spec(gc))
        payment_ref = gc_api.pay(link.ref)
        polls = PaymentPolls(rt, backoff=60)  # type: ignore[arg-type]  # a stand-in: only what PaymentPolls reads
        assert polls() >= 1
        assert status(store, payment_ref) == "confirmed"
        parts = store.component_status()
        assert "401" in parts["payments:trust"]["last_error"]
        assert parts["payments:operating"]["last_ok_at"] is not None
        tries = len(broken_api.requests)
        assert tries == 1  # one attempt, no in-call retries holding up the others
        polls()
        assert len(broken_api.requests) == tries  # backing off
    finally:
        broken_api.stop()


def test_cli_reconcile_heals_a_sandbox_feed_that_lost_its_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import sqlite3

    from agent.cli.main import main
    from agent.engine.links import LinkRequest
    from agent.engine.sync import Syncer
    from agent.runtime import Runtime
    from connectors.providers import sandbox

    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    rt = Runtime.for_home(home)
    try:
        Syncer(rt.store, rt.connector).sync()
        link = rt.links.create(STAFF, LinkRequest(matter="M-2026-0010", amount=Decimal("500.00")))
    finally:
        rt.close()
    assert link.provider_ref is not None
    payment_ref = sandbox.pay(home, link.provider_ref)
    with sqlite3.connect(home / sandbox.DB_NAME) as conn:
        conn.execute("DELETE FROM events")  # the feed lost the payment
    capsys.readouterr()
    assert main(["--home", str(home), "payments", "poll", "--json"]) == 0
    assert all(t["new"] == 0 for t in json.loads(capsys.readouterr().out).values())
    since = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    for _ in range(2):  # a second run finds nothing more to apply
        assert main(["--home", str(home), "payments", "reconcile", "--since", since, "--json"]) == 0
        totals = json.loads(capsys.readouterr().out)
        assert totals["operating"]["unknown_at_provider"] == []
    assert totals["operating"]["applied"] == 0
    assert main(["--home", str(home), "payments", "list", "--json"]) == 0
    (paid,) = [p for p in json.loads(capsys.readouterr().out) if p["payment_ref"] == payment_ref]
    assert (paid["status"], paid["link_id"]) == ("confirmed", link.id)
    assert main(["--home", str(home), "payments", "parked", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    rt = Runtime.for_home(home)
    try:
        rt.store.record_error("payments:trust", "ProviderError: GoCardless refused the request (401)")
    finally:
        rt.close()
    assert main(["--home", str(home), "check", "--json"]) == 0
    assert "payments:trust: ProviderError: GoCardless refused the request (401)" in json.loads(
        capsys.readouterr().out)["warnings"]


def test_an_older_agents_event_id_cursor_is_taken_up(gc: GoCardlessProvider, gc_api: FakeGoCardless) -> None:
    first = gc.create_link(make_spec(gc))
    gc_api.pay(first.ref)
    legacy = gc_api.events[-1]["id"]  # what the agent stored before issue 12: the last event id read
    later = gc.create_link(make_spec(gc))
    payment_ref = gc_api.pay(later.ref)
    events, cursor = drain(gc, legacy)
    assert payment_ref in {e.payment_ref for e in events}
    assert legacy not in {e.event_id for e in events}  # the overlap before it is re-read; the store dedupes that
    assert cursor is not None and cursor.startswith("{")
    assert drain(gc, cursor)[0] == []
