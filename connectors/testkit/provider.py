"""The provider contract test kit: subclass ``ProviderContract`` and provide the fixtures below.

Fixtures a subclass provides:

* ``provider`` - the Provider under test, talking to its fake API (or the sandbox) with a short timeout.
* ``payer`` - a ``World`` acting as the payer and the provider's back office (pay, fail, charge back,
  expire).
* ``faults`` - a ``Faults`` for injecting 5xx/429/slow responses, or None where the provider has no wire.
* ``webhook`` - a ``WebhookSigner``, or None where the provider takes no webhooks.

Class attributes say how a provider reports cancellation, because Stripe can only *expire* a Checkout Session, and
whether it reports expiry at all (a GoCardless billing request has no expired status). A payment is tied to its
link by whichever event names both (``tied``): GoCardless names the billing request only on its fulfilled event.
The kit also checks ``event`` (one event read again, for parked ones) and ``snapshot`` (reconciliation).

``PayoutContract`` is the kit for a ``PayoutProvider`` (payouts, their items, refunds). Its ``payer`` is a
``PayoutWorld``: a ``World`` that can also ``settle`` (pay out the balance collected, refunded and charged back
since the last payout, net of fees or ``gross``), ``fail_payout`` (the firm's bank returns it) and
``limit_pages`` (answer lists in pages of at most n records, so a reader that stops after one page is caught).
Amounts a test uses are chosen so that no payout goes negative (no provider pays one out).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol

import pytest

from agent.core import retry
from agent.core.errors import TransientError
from connectors.providers.contract import (
    CancelRefused,
    EventKind,
    InvalidSignature,
    LinkNotFound,
    LinkSpec,
    LinkStatus,
    Payout,
    PayoutItem,
    PayoutItemKind,
    PayoutProvider,
    PayoutStatus,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderLink,
    RefundRefused,
    RefundStatus,
)

__all__ = [
    "AMOUNT",
    "Faults",
    "PayoutContract",
    "PayoutWorld",
    "PaysOut",
    "ProviderContract",
    "WebhookSigner",
    "World",
    "drain",
    "make_spec",
    "paid",
    "the_payout",
    "tied",
    "total",
]

AMOUNT = Decimal("125.50")


class World(Protocol):
    def pay(self, link: ProviderLink, amount: Decimal | None = None, confirm: bool = True) -> str:
        """Pay the link as the payer; returns the payment_ref. ``confirm=False`` leaves it pending."""

    def fail(self, payment_ref: str) -> None: ...

    def charge_back(self, payment_ref: str) -> None: ...

    def expire(self, link: ProviderLink) -> None:
        """Let the link's time run out."""

    def link_count(self) -> int:
        """How many link objects exist at the provider (to prove a retried create made one)."""

    def payer_view(self, link: ProviderLink) -> str:
        """The text the payer is shown for the link (the pay page, Checkout, GoCardless's payment page)."""


class Faults(Protocol):
    def fail_next(self, status: int, times: int = 1, headers: Mapping[str, str] | None = None) -> None: ...

    def slow_next(self, seconds: float, times: int = 1) -> None: ...


class WebhookSigner(Protocol):
    timestamped: bool

    def body(self) -> bytes:
        """A delivery holding at least one event the provider maps."""

    def sign(
        self, body: bytes, *, timestamp: int | None = None, secret: str | None = None
    ) -> dict[str, str]: ...


def make_spec(provider: Provider, **overrides: object) -> LinkSpec:
    """A valid spec within the provider's expiry limits, unique per call."""
    link_id = uuid.uuid4().hex
    expiry = min(provider.capabilities.max_expiry, dt.timedelta(days=2)) - dt.timedelta(hours=1)
    values: dict[str, object] = {
        "link_id": link_id,
        "amount": AMOUNT,
        "currency": provider.account.currency,
        "description": "Invoice 1042 - conveyancing",
        "payer_name": "Ada Lovelace",
        "payer_email": "ada@example.com",
        "expires_at": dt.datetime.now(dt.UTC) + expiry,
        "idempotency_key": f"create-{link_id}",
        "reference": "INV-1042",
    }
    values.update(overrides)
    return LinkSpec(**values)  # type: ignore[arg-type]  # a test overrides any field, each with its own type


def drain(provider: Provider, cursor: str | None, limit: int = 100) -> tuple[list[ProviderEvent], str | None]:
    """Every event after ``cursor`` and the cursor to continue from."""
    events: list[ProviderEvent] = []
    while True:
        page = provider.events(cursor, limit)
        events.extend(page.events)
        assert page.cursor is None or isinstance(page.cursor, str)
        cursor = page.cursor
        if not page.has_more:
            return events, cursor


def tied(events: list[ProviderEvent]) -> dict[str, str]:
    """payment_ref -> link_ref, from whichever events name both (GoCardless names the link on one event only)."""
    return {e.payment_ref: e.link_ref for e in events if e.payment_ref and e.link_ref}


def _signer(provider: Provider, webhook: WebhookSigner | None) -> WebhookSigner:
    """The test's signer where the provider declares webhooks; a provider that declares none is skipped (its
    refusal is tested apart), and a provider that declares them must be given a signer."""
    if not provider.capabilities.webhooks:
        pytest.skip(f"{provider.name} declares no webhooks (Capabilities.webhooks)")
    assert webhook is not None, f"{provider.name} declares webhooks: give the kit a webhook fixture that signs"
    return webhook


def _need(fixture: object, reason: str) -> None:
    if fixture is None:
        pytest.skip(reason)


class ProviderContract:
    """Behaviour every provider owes the link engine."""

    # What the provider cannot do is read from its own declaration (Provider.capabilities), as the engines read
    # it: the kit holds no list of its own.

    def test_payer_sees_what_is_paid_for_and_no_internal_key(self, provider: Provider, payer: World) -> None:
        spec = make_spec(provider, firm_name="Okafor & Co LLP", matter_number="M-2026-0042",
                         invoice_numbers=("INV-1042", "INV-1043"), reference="INV-1042, INV-1043",
                         disclaimer="Okafor & Co LLP is regulated by the Solicitors Regulation Authority.",
                         metadata={"matter": "M-2026-0042"})
        seen = payer.payer_view(provider.create_link(spec))
        for text in (f"{spec.currency} 125.50", spec.description, "M-2026-0042", "INV-1042", "INV-1043"):
            assert text in seen, f"{text!r} is not shown to the payer: {seen!r}"
        if provider.capabilities.shows_firm_name:
            assert spec.firm_name in seen
        if provider.capabilities.shows_disclaimer:
            assert spec.disclaimer in seen
        assert spec.link_id not in seen and spec.idempotency_key not in seen

    def test_a_reference_longer_than_the_provider_keeps_still_makes_the_link(self, provider: Provider) -> None:
        """Sixty invoices on one link: each field is cut to the provider's documented limit, never refused."""
        invoices = tuple(f"INV-{n:06d}" for n in range(60))
        spec = make_spec(provider, invoice_numbers=invoices, reference=", ".join(invoices),
                         metadata={"matter": "M-" + "9" * 600})
        assert provider.create_link(spec).status is LinkStatus.OUTSTANDING

    def test_create_returns_outstanding_link(self, provider: Provider) -> None:
        link = provider.create_link(make_spec(provider))
        assert link.ref
        assert link.url.startswith(("http://", "https://"))
        assert link.status is LinkStatus.OUTSTANDING
        assert link.amount_paid is None

    def test_get_shows_the_link(self, provider: Provider) -> None:
        link = provider.create_link(make_spec(provider))
        got = provider.get_link(link.ref)
        assert got.ref == link.ref
        assert got.status is LinkStatus.OUTSTANDING
        if provider.capabilities.stable_url:
            assert got.url == link.url

    def test_get_unknown_link_raises_link_not_found(self, provider: Provider) -> None:
        with pytest.raises(LinkNotFound):
            provider.get_link("no-such-link-0000")

    def test_create_is_idempotent(self, provider: Provider, payer: World) -> None:
        spec = make_spec(provider)
        first = provider.create_link(spec)
        second = provider.create_link(spec)
        assert second.ref == first.ref
        if provider.capabilities.stable_url:
            assert second.url == first.url
        assert payer.link_count() == 1
        provider.create_link(make_spec(provider))
        assert payer.link_count() == 2

    def test_server_error_is_transient_and_retried_create_makes_one_link(
        self, provider: Provider, payer: World, faults: Faults | None
    ) -> None:
        _need(faults, "no wire to inject server errors into (embedded provider)")
        assert faults is not None
        spec = make_spec(provider)
        faults.fail_next(503)
        with pytest.raises(TransientError):
            provider.create_link(spec)
        faults.fail_next(500)
        link = retry.call(provider.create_link, spec, attempts=3, initial=0.01)
        assert link.status is LinkStatus.OUTSTANDING
        assert payer.link_count() == 1

    def test_timeout_is_transient_and_retried_create_makes_one_link(
        self, provider: Provider, payer: World, faults: Faults | None
    ) -> None:
        _need(faults, "no wire to delay (embedded provider)")
        assert faults is not None
        spec = make_spec(provider)
        faults.slow_next(1.5)  # the server acts on the request, but answers after the client gave up
        with pytest.raises(TransientError):
            provider.create_link(spec)
        faults.slow_next(1.5)
        link = retry.call(provider.create_link, spec, attempts=3, initial=0.01)
        assert provider.get_link(link.ref).status is LinkStatus.OUTSTANDING
        assert payer.link_count() == 1

    def test_rate_limit_retry_after_is_honoured(
        self, provider: Provider, payer: World, faults: Faults | None
    ) -> None:
        _need(faults, "no wire to rate-limit (embedded provider)")
        assert faults is not None
        faults.fail_next(429, headers={"Retry-After": "1"})
        started = time.monotonic()
        link = retry.call(provider.create_link, make_spec(provider), attempts=3, initial=0.01)
        assert time.monotonic() - started >= 1.0
        assert link.status is LinkStatus.OUTSTANDING
        assert payer.link_count() == 1

    def test_rate_limit_retries_are_bounded(
        self, provider: Provider, payer: World, faults: Faults | None
    ) -> None:
        _need(faults, "no wire to rate-limit (embedded provider)")
        assert faults is not None
        faults.fail_next(429, times=10, headers={"Retry-After": "1"})
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            retry.call(provider.create_link, make_spec(provider), attempts=2, initial=0.01)
        assert caught.value.retry_after == pytest.approx(1.0, abs=0.5)
        assert 1.0 <= time.monotonic() - started < 5
        assert payer.link_count() == 0

    def test_cancel(self, provider: Provider) -> None:
        link = provider.create_link(make_spec(provider))
        cancelled = provider.cancel_link(link.ref)
        assert cancelled.ref == link.ref
        assert cancelled.status is LinkStatus.CANCELLED
        assert provider.get_link(link.ref).status is provider.capabilities.cancelled_status
        if provider.capabilities.cancel_event is not None:
            events, _ = drain(provider, None)
            assert [e.kind for e in events if e.link_ref == link.ref] == [provider.capabilities.cancel_event]

    def test_cancel_of_paid_link_is_refused(self, provider: Provider, payer: World) -> None:
        link = provider.create_link(make_spec(provider))
        payer.pay(link)
        with pytest.raises(CancelRefused) as refused:
            provider.cancel_link(link.ref)
        assert refused.value.link is not None
        assert refused.value.link.status is LinkStatus.PAYMENT_RECEIVED

    def test_expiry(self, provider: Provider, payer: World) -> None:
        link = provider.create_link(make_spec(provider))
        payer.expire(link)
        events, _ = drain(provider, None)
        if not provider.capabilities.reports_expiry:
            assert provider.get_link(link.ref).status is LinkStatus.OUTSTANDING
            assert [e.kind for e in events if e.link_ref == link.ref] == []
            assert provider.cancel_link(link.ref).status is LinkStatus.CANCELLED  # what the engine does after
            return
        assert provider.get_link(link.ref).status is LinkStatus.EXPIRED
        assert [e.kind for e in events if e.link_ref == link.ref] == [EventKind.LINK_EXPIRED]
        with pytest.raises(CancelRefused):
            provider.cancel_link(link.ref)

    def test_events_resume_from_cursor_oldest_first(self, provider: Provider, payer: World) -> None:
        early = provider.create_link(make_spec(provider))
        payer.pay(early)
        before, cursor = drain(provider, None)
        assert {e.link_ref for e in before} - {None} == {early.ref}
        assert isinstance(cursor, str)

        link = provider.create_link(make_spec(provider))
        payment_ref = payer.pay(link)
        later, next_cursor = drain(provider, cursor)
        assert later, "events after the cursor were not returned"
        assert {e.link_ref for e in later} - {None} == {link.ref}
        assert tied(later) == {payment_ref: link.ref}
        assert {e.payment_ref for e in later} == {payment_ref}
        kinds = [e.kind for e in later]
        assert kinds.index(EventKind.PAYMENT_PENDING) < kinds.index(EventKind.PAYMENT_CONFIRMED)
        assert [e.occurred_at for e in later] == sorted(e.occurred_at for e in later)
        assert not {e.event_id for e in later} & {e.event_id for e in before}

        one_at_a_time, _ = drain(provider, cursor, limit=1)
        assert [e.event_id for e in one_at_a_time] == [e.event_id for e in later]

        assert isinstance(next_cursor, str)
        rest = provider.events(next_cursor)
        assert rest.events == [] and not rest.has_more
        assert rest.cursor == next_cursor

    def test_paid_link_reports_pending_then_confirmed(self, provider: Provider, payer: World) -> None:
        link = provider.create_link(make_spec(provider))
        payment_ref = payer.pay(link)
        events, _ = drain(provider, None)
        mine = [e for e in events if e.payment_ref == payment_ref]
        kinds = [e.kind for e in mine]
        assert kinds[0] is EventKind.PAYMENT_PENDING
        assert kinds[-1] is EventKind.PAYMENT_CONFIRMED
        confirmed = mine[-1]
        assert tied(mine) == {payment_ref: link.ref}
        assert confirmed.amount == AMOUNT and isinstance(confirmed.amount, Decimal)
        assert confirmed.currency == provider.account.currency
        got = provider.get_link(link.ref)
        assert got.status is LinkStatus.PAYMENT_RECEIVED
        assert got.amount_paid == AMOUNT

    def test_failed_payment_is_reported(self, provider: Provider, payer: World) -> None:
        link = provider.create_link(make_spec(provider))
        payment_ref = payer.pay(link, confirm=False)
        payer.fail(payment_ref)
        events, _ = drain(provider, None)
        kinds = [e.kind for e in events if e.payment_ref == payment_ref]
        assert EventKind.PAYMENT_CONFIRMED not in kinds
        assert kinds[-1] is EventKind.PAYMENT_FAILED

    def test_charge_back_is_reported(self, provider: Provider, payer: World) -> None:
        link = provider.create_link(make_spec(provider))
        payment_ref = payer.pay(link)
        payer.charge_back(payment_ref)
        events, _ = drain(provider, None)
        charged = [e for e in events if e.kind is EventKind.PAYMENT_CHARGED_BACK]
        assert [e.payment_ref for e in charged] == [payment_ref]
        assert charged[0].amount == AMOUNT

    def test_event_is_read_again_by_id(self, provider: Provider, payer: World) -> None:
        link = provider.create_link(make_spec(provider))
        payer.pay(link)
        events, _ = drain(provider, None)
        for event in events:
            again = provider.event(event.event_id)
            assert again is not None
            assert (again.event_id, again.kind, again.payment_ref, again.amount) == (
                event.event_id, event.kind, event.payment_ref, event.amount)

    def test_snapshot_lists_payments_and_closed_links_as_they_are(self, provider: Provider, payer: World) -> None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        paid = provider.create_link(make_spec(provider))
        payment_ref = payer.pay(paid)
        pending = provider.create_link(make_spec(provider))
        pending_ref = payer.pay(pending, confirm=False)
        closed = provider.create_link(make_spec(provider))
        provider.cancel_link(closed.ref)
        snapshot = provider.snapshot(since)
        by_payment = {e.payment_ref: e for e in snapshot if e.payment_ref}
        assert by_payment[payment_ref].kind is EventKind.PAYMENT_CONFIRMED
        assert by_payment[payment_ref].amount == AMOUNT
        assert by_payment[pending_ref].kind is EventKind.PAYMENT_PENDING
        assert tied(snapshot)[payment_ref] == paid.ref and tied(snapshot)[pending_ref] == pending.ref
        closed_kinds = [e.kind for e in snapshot if e.link_ref == closed.ref]
        assert closed_kinds == [provider.capabilities.cancel_event or EventKind.LINK_CANCELLED]
        assert len({e.event_id for e in snapshot}) == len(snapshot)
        # Ids name the state, so a state already reconciled is not applied twice.
        assert sorted(e.event_id for e in provider.snapshot(since)) == sorted(e.event_id for e in snapshot)

    def test_a_provider_without_webhooks_refuses_a_delivery(self, provider: Provider) -> None:
        if provider.capabilities.webhooks:
            pytest.skip(f"{provider.name} takes webhooks: the signature tests below cover it")
        with pytest.raises(ProviderError):
            provider.verify_webhook(b"{}", {})

    def test_webhook_with_good_signature_is_parsed(
        self, provider: Provider, webhook: WebhookSigner | None
    ) -> None:
        webhook = _signer(provider, webhook)
        body = webhook.body()
        assert provider.verify_webhook(body, webhook.sign(body))

    def test_webhook_with_bad_signature_is_rejected(
        self, provider: Provider, webhook: WebhookSigner | None
    ) -> None:
        webhook = _signer(provider, webhook)
        body = webhook.body()
        with pytest.raises(InvalidSignature):
            provider.verify_webhook(body + b" ", webhook.sign(body))
        with pytest.raises(InvalidSignature):
            provider.verify_webhook(body, webhook.sign(body, secret="not-the-secret"))
        with pytest.raises(InvalidSignature):
            provider.verify_webhook(body, {})

    def test_webhook_with_old_signature_is_rejected(
        self, provider: Provider, webhook: WebhookSigner | None
    ) -> None:
        webhook = _signer(provider, webhook)
        if not webhook.timestamped:
            pytest.skip("this provider's signatures carry no timestamp")
        body = webhook.body()
        with pytest.raises(InvalidSignature):
            provider.verify_webhook(body, webhook.sign(body, timestamp=int(time.time()) - 3600))


# --- payouts and refunds ----------------------------------------------------------------------------------------


class PayoutWorld(World, Protocol):
    def settle(self, gross: bool = False) -> str:
        """Pay out everything collected, refunded and charged back since the last payout (net of the provider's
        fees, or ``gross`` when they are billed apart); returns the payout's ref."""

    def fail_payout(self, payout_ref: str) -> None:
        """The firm's bank returns the payout."""

    def limit_pages(self, size: int) -> None:
        """Answer every list in pages of at most ``size`` records."""


class PaysOut(Provider, PayoutProvider):
    """A provider under the payout kit: a Provider (to make and pay links) that is also a PayoutProvider."""


def paid(provider: Provider, payer: World, amount: Decimal = AMOUNT) -> str:
    """A link paid and confirmed; returns the payment_ref."""
    return payer.pay(provider.create_link(make_spec(provider, amount=amount)))


def total(items: list[PayoutItem], *kinds: PayoutItemKind) -> Decimal:
    return sum((i.amount for i in items if not kinds or i.kind in kinds), Decimal(0))


def the_payout(provider: PayoutProvider, since: dt.datetime, ref: str) -> Payout:
    (payout,) = [p for p in provider.payouts(since) if p.ref == ref]
    return payout


class PayoutContract:
    """Behaviour every PayoutProvider owes the payouts engine and the refunds it makes."""

    def test_net_payout_items_add_up_to_it_to_the_penny_and_show_the_fees(
        self, provider: PaysOut, payer: PayoutWorld
    ) -> None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        amounts = [Decimal("125.50"), Decimal("99.99"), Decimal("1234.57")]
        refs = [paid(provider, payer, amount) for amount in amounts]
        payout = the_payout(provider, since, payer.settle())
        items = provider.payout_items(payout.ref)
        assert total(items) == payout.amount, "the items do not add up to the bank credit"
        assert isinstance(payout.amount, Decimal) and payout.currency == provider.account.currency
        assert payout.status is PayoutStatus.PAID and payout.raw_status
        payments = {i.payment_ref: i.amount for i in items if i.kind is PayoutItemKind.PAYMENT}
        assert payments == dict(zip(refs, amounts, strict=True)), "each payment's gross is one line"
        fees = [i for i in items if i.kind is PayoutItemKind.FEE]
        for ref in refs:  # (a rounding line of the provider's may be of either sign and name no payment)
            assert sum(i.amount for i in fees if i.payment_ref == ref) < 0, f"no fee shown for payment {ref}"
        assert payout.amount == sum(amounts) + total(items, PayoutItemKind.FEE)
        assert all(i.amount == i.amount.quantize(Decimal("0.01")) for i in items), "lines are in whole pence"
        assert len({i.ref for i in items}) == len(items), "each line has its own ref"

    def test_gross_payout_carries_no_fee(self, provider: PaysOut, payer: PayoutWorld) -> None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        refs = [paid(provider, payer), paid(provider, payer, Decimal("10.01"))]
        payout = the_payout(provider, since, payer.settle(gross=True))
        items = provider.payout_items(payout.ref)
        assert payout.amount == AMOUNT + Decimal("10.01") == total(items)
        assert [i.kind for i in items] == [PayoutItemKind.PAYMENT] * 2
        assert {i.payment_ref for i in items} == set(refs)

    def test_every_page_of_payouts_and_items_is_read_oldest_first(
        self, provider: PaysOut, payer: PayoutWorld
    ) -> None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        payer.limit_pages(2)
        made = []
        for _ in range(3):
            paid(provider, payer)
            made.append(payer.settle())
        refs = [paid(provider, payer, Decimal(n)) for n in range(1, 6)]
        made.append(payer.settle(gross=True))
        payouts = provider.payouts(since)
        assert [p.ref for p in payouts] == made
        assert [p.created_at for p in payouts] == sorted(p.created_at for p in payouts)
        items = provider.payout_items(made[-1])
        assert {i.payment_ref for i in items} == set(refs) and total(items) == Decimal(15)
        assert provider.payouts(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)) == []

    def test_refund_is_idempotent_under_its_key(self, provider: PaysOut, payer: PayoutWorld) -> None:
        payment_ref = paid(provider, payer)
        payer.settle()
        first = provider.refund(payment_ref, Decimal("20.00"), provider.account.currency, "overpaid", "rf-1")
        again = provider.refund(payment_ref, Decimal("20.00"), provider.account.currency, "overpaid", "rf-1")
        assert again.ref == first.ref and again.amount == first.amount == Decimal("20.00")
        assert first.payment_ref == payment_ref and first.currency == provider.account.currency
        assert first.status in (RefundStatus.PENDING, RefundStatus.SUCCEEDED) and first.raw_status
        paid(provider, payer)  # so the next payout is positive
        items = provider.payout_items(payer.settle())
        refunds = [i for i in items if i.kind is PayoutItemKind.REFUND]
        assert [(i.payment_ref, i.amount) for i in refunds] == [(payment_ref, Decimal("-20.00"))]
        assert [i.ref for i in refunds] == [first.ref], "a refund's line is named by the refund (PayoutItem.ref)"

    def test_partial_refunds_never_exceed_what_is_left(self, provider: PaysOut, payer: PayoutWorld) -> None:
        payment_ref = paid(provider, payer)
        payer.settle()
        currency = provider.account.currency
        one = provider.refund(payment_ref, Decimal("50.00"), currency, "duplicate", "part-1")
        two = provider.refund(payment_ref, Decimal("50.00"), currency, "requested_by_customer", "part-2")
        assert one.ref != two.ref
        with pytest.raises(RefundRefused):
            provider.refund(payment_ref, Decimal("25.51"), currency, "too much", "part-3")
        last = provider.refund(payment_ref, Decimal("25.50"), currency, "the rest", "part-4")
        assert last.amount == Decimal("25.50")
        with pytest.raises(RefundRefused):
            provider.refund(payment_ref, Decimal("0.01"), currency, "nothing left", "part-5")

    def test_refund_and_chargeback_reconcile_in_the_next_payout(
        self, provider: PaysOut, payer: PayoutWorld
    ) -> None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        refunded, disputed = paid(provider, payer), paid(provider, payer)
        payer.settle()
        provider.refund(refunded, Decimal("30.00"), provider.account.currency, "goodwill", "rf-day-2")
        payer.charge_back(disputed)
        fresh = paid(provider, payer, Decimal("900.00"))
        payout = the_payout(provider, since, payer.settle())
        items = provider.payout_items(payout.ref)
        assert total(items) == payout.amount
        assert [(i.payment_ref, i.amount) for i in items if i.kind is PayoutItemKind.REFUND] == [
            (refunded, Decimal("-30.00"))]
        assert [(i.payment_ref, i.amount) for i in items if i.kind is PayoutItemKind.CHARGEBACK] == [
            (disputed, -AMOUNT)]
        assert [(i.payment_ref, i.amount) for i in items if i.kind is PayoutItemKind.PAYMENT] == [
            (fresh, Decimal("900.00"))]

    def test_failed_payout_is_reported_failed(self, provider: PaysOut, payer: PayoutWorld) -> None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        paid(provider, payer)
        ref = payer.settle()
        payer.fail_payout(ref)
        payout = the_payout(provider, since, ref)
        assert payout.status is PayoutStatus.FAILED
        assert payout.raw_status not in ("", "paid")

    def test_server_error_while_reading_payouts_is_transient(
        self, provider: PaysOut, payer: PayoutWorld, faults: Faults | None
    ) -> None:
        _need(faults, "no wire to inject server errors into (embedded provider)")
        assert faults is not None
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        payment_ref = paid(provider, payer)
        ref = payer.settle()
        for read in (lambda: provider.payouts(since), lambda: provider.payout_items(ref),
                     lambda: provider.refund(payment_ref, Decimal("1.00"), provider.account.currency, "x", "k")):
            faults.fail_next(503)
            with pytest.raises(TransientError):
                read()
        assert provider.refund(payment_ref, Decimal("1.00"), provider.account.currency, "x", "k").amount == 1
        assert total(provider.payout_items(ref)) == the_payout(provider, since, ref).amount
