"""Stripe Checkout Sessions against the local fake API, under the contract kit."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import parse_qs, urlencode

import pytest
from fakes import FakeWorld, Json, Request, Response
from fakes.stripe_api import SECRET, FakeStripe, StripeSigner

from agent.core.errors import TransientError
from agent.core.model import MerchantAccount
from connectors.providers.contract import (
    EventKind,
    PayoutItemKind,
    ProviderError,
    RefundRefused,
    RefundStatus,
)
from connectors.providers.stripe import StripeProvider
from connectors.testkit.provider import PayoutContract, ProviderContract, drain, make_spec


@pytest.fixture
def api() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    yield server
    server.stop()


@pytest.fixture
def provider(api: FakeStripe) -> StripeProvider:
    account = MerchantAccount(name="operating", provider="stripe", api_base=api.url)
    return StripeProvider(account, "sk_test_fake", webhook_secret=SECRET, timeout=0.5)


@pytest.fixture
def payer(api: FakeStripe) -> FakeWorld:
    return FakeWorld(api)


@pytest.fixture
def faults(api: FakeStripe) -> FakeStripe:
    return api


@pytest.fixture
def webhook() -> StripeSigner:
    return StripeSigner()


class TestStripePayouts(PayoutContract):
    """Payouts, payout items and refunds against the fake, as every PayoutProvider owes them."""


class TestStripeContract(ProviderContract):
    """The link contract against the fake; what Stripe cannot do is in StripeProvider.capabilities."""


def test_create_sends_the_documented_parameters(provider: StripeProvider, api: FakeStripe) -> None:
    spec = make_spec(provider, metadata={"matter": "M-77"}, firm_name="Okafor & Co LLP", matter_number="M-77",
                     invoice_numbers=("INV-1042",), disclaimer="Regulated by the SRA.")
    link = provider.create_link(spec)
    session = api.sessions[link.ref]
    assert session["amount_total"] == 12550 and session["currency"] == "gbp"
    assert session["client_reference_id"] == "INV-1042"
    assert session["customer_email"] == "ada@example.com"
    assert session["metadata"] == {"link_id": spec.link_id, "reference": "INV-1042", "matter": "M-77"}
    assert session["custom_text"]["submit"] == {"message": "Regulated by the SRA."}
    assert session["line_item_name"] == "Invoice 1042 - conveyancing"
    assert session["line_item_description"] == "matter M-77, invoice INV-1042"
    assert session["expires_at"] == int(spec.expires_at.timestamp())
    assert link.url == session["url"]
    intent = api.payment_intents[api.pay(link.ref)]
    assert intent["description"] == "Okafor & Co LLP - matter M-77, invoice INV-1042"
    assert intent["metadata"] == {"link_id": spec.link_id, "reference": "INV-1042"}


def test_a_disclaimer_longer_than_checkout_shows_is_refused_naming_the_fix(provider: StripeProvider,
                                                                          api: FakeStripe) -> None:
    with pytest.raises(ProviderError, match=r"1201 characters; Stripe shows at most 1200.*accounts set operating"):
        provider.create_link(make_spec(provider, disclaimer="x" * 1201))
    assert api.link_count() == 0


def test_the_fake_enforces_the_documented_length_limits(api: FakeStripe) -> None:
    """custom_text[submit][message] to 1200, client_reference_id to 200, metadata 50 keys / 40 / 500: a 400."""
    def create(extra: dict[str, str]) -> tuple[int, Json]:
        form = {"mode": "payment", "success_url": "https://example.com", "line_items[0][quantity]": "1",
                "line_items[0][price_data][currency]": "gbp", "line_items[0][price_data][unit_amount]": "100",
                "line_items[0][price_data][product_data][name]": "Fees", **extra}
        request = urllib.request.Request(f"{api.url}/v1/checkout/sessions", data=urlencode(form).encode(),
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    assert create({"custom_text[submit][message]": "x" * 1200, "client_reference_id": "r" * 200,
                   "metadata[k]": "v" * 500})[0] == 200
    for param, extra in (("custom_text[submit][message]", {"custom_text[submit][message]": "x" * 1201}),
                         ("client_reference_id", {"client_reference_id": "r" * 201}),
                         ("metadata", {"metadata[k]": "v" * 501}),
                         ("metadata", {"metadata[" + "k" * 41 + "]": "v"}),
                         ("metadata", {f"metadata[k{n}]": "v" for n in range(51)}),
                         ("payment_intent_data[metadata]", {"payment_intent_data[metadata][k]": "v" * 501})):
        status, body = create(extra)
        assert (status, body["error"]["param"]) == (400, param)


def test_idempotency_key_is_sent(provider: StripeProvider, api: FakeStripe) -> None:
    spec = make_spec(provider)
    provider.create_link(spec)
    with pytest.raises(ProviderError, match="same parameters"):
        provider.create_link(make_spec(provider, idempotency_key=spec.idempotency_key))


def test_expiry_beyond_24_hours_is_a_provider_error(provider: StripeProvider) -> None:
    with pytest.raises(ProviderError, match="expires_at"):
        provider.create_link(make_spec(provider, expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=30)))


def test_sdk_does_not_retry_itself(provider: StripeProvider, api: FakeStripe) -> None:
    link = provider.create_link(make_spec(provider))
    api.requests.clear()
    api.fail_next(503, times=3)
    with pytest.raises(TransientError):
        provider.get_link(link.ref)
    assert len(api.requests) == 1


def test_card_payment_paid_at_completion_is_confirmed(provider: StripeProvider, api: FakeStripe) -> None:
    link = provider.create_link(make_spec(provider))
    session = api.sessions[link.ref]
    session.update(status="complete", payment_status="paid", payment_intent="pi_card")
    api._event("checkout.session.completed", session)
    (event,) = drain(provider, None)[0]
    assert (event.kind, event.payment_ref, event.amount) == (
        EventKind.PAYMENT_CONFIRMED,
        "pi_card",
        Decimal("125.50"),
    )


def test_events_ask_only_for_mapped_types(provider: StripeProvider, api: FakeStripe) -> None:
    provider.events(None)
    assert api.requests[-1] == ("GET", "/v1/events")
    api._event("customer.created", {"id": "cus_1"})
    assert provider.events(None).events == []


def test_chargeback_names_the_session(provider: StripeProvider, payer: FakeWorld) -> None:
    link = provider.create_link(make_spec(provider))
    payer.charge_back(payer.pay(link))
    events, _ = drain(provider, None)
    assert events[-1].kind is EventKind.PAYMENT_CHARGED_BACK and events[-1].link_ref == link.ref


def test_form_encoding_of_line_items(provider: StripeProvider, api: FakeStripe,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    captured: list[bytes] = []
    original = api._route

    def spy(request: Request) -> Response:
        captured.append(request.body)
        return original(request)

    monkeypatch.setattr(api, "_route", spy)
    provider.create_link(make_spec(provider))
    form = parse_qs(captured[0].decode())
    assert form["line_items[0][price_data][product_data][name]"] == ["Invoice 1042 - conveyancing"]
    assert form["mode"] == ["payment"]


# --- payouts and refunds: what only Stripe does -----------------------------------------------------------------


def _paid(provider: StripeProvider, payer: FakeWorld, amount: Decimal | None = None) -> str:
    return payer.pay(provider.create_link(make_spec(provider, **({"amount": amount} if amount else {}))))


def test_a_charge_is_its_gross_and_its_fee_and_the_payout_transaction_is_no_line(
    provider: StripeProvider, payer: FakeWorld, api: FakeStripe
) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    payment_ref = _paid(provider, payer)
    ref = payer.settle()
    items = provider.payout_items(ref)
    # UK card pricing in the fake: 1.5% of 125.50 is 1.8825, rounded to 1.88, + 0.20 = 2.08 (docs.stripe.com/pricing)
    assert [(i.kind, i.amount, i.payment_ref, i.raw_type) for i in items] == [
        (PayoutItemKind.PAYMENT, Decimal("125.50"), payment_ref, "charge"),
        (PayoutItemKind.FEE, Decimal("-2.08"), payment_ref, "stripe_fee"),
    ]
    (payout,) = provider.payouts(since)
    assert payout.amount == Decimal("123.42") and payout.bank_reference == ""  # statement_descriptor unset
    assert payout.arrival_date is not None and payout.arrival_date > payout.created_at.date() - dt.timedelta(days=1)
    listed = [q for q in api.requests if q == ("GET", "/v1/balance_transactions")]
    assert listed, "the payout's contents come from its balance transactions"


def test_a_dispute_is_a_chargeback_with_its_fee_and_a_won_one_gives_the_money_back(
    provider: StripeProvider, payer: FakeWorld, api: FakeStripe
) -> None:
    disputed = _paid(provider, payer)
    payer.settle()
    api.charge_back(disputed)
    _paid(provider, payer, Decimal("500.00"))
    items = provider.payout_items(payer.settle())
    mine = [(i.kind, i.amount) for i in items if i.payment_ref == disputed]
    assert mine == [(PayoutItemKind.CHARGEBACK, Decimal("-125.50")), (PayoutItemKind.FEE, Decimal("-20.00"))]
    api.win_dispute(disputed)
    _paid(provider, payer, Decimal("1.00"))
    items = provider.payout_items(payer.settle())
    assert [(i.kind, i.amount) for i in items if i.payment_ref == disputed] == [
        (PayoutItemKind.ADJUSTMENT, Decimal("125.50"))]


def test_a_failed_payout_comes_back_in_the_next_one(provider: StripeProvider, payer: FakeWorld) -> None:
    _paid(provider, payer)
    failed = payer.settle()
    payer.fail_payout(failed)
    items = provider.payout_items(payer.settle())
    assert [(i.kind, i.amount, i.raw_type) for i in items] == [
        (PayoutItemKind.ADJUSTMENT, Decimal("123.42"), "payout_failure")]


def test_refund_reason_is_one_of_stripes_words_and_the_text_is_kept(
    provider: StripeProvider, payer: FakeWorld, api: FakeStripe
) -> None:
    payment_ref = _paid(provider, payer)
    free = provider.refund(payment_ref, Decimal("10.00"), "GBP", "Client paid twice for the same bill", "k-1")
    exact = provider.refund(payment_ref, Decimal("10.00"), "GBP", "duplicate", "k-2")
    assert api.refunds[free.ref]["reason"] == "requested_by_customer"
    assert api.refunds[free.ref]["metadata"] == {"reason": "Client paid twice for the same bill"}
    assert api.refunds[exact.ref]["reason"] == "duplicate"
    assert free.status is RefundStatus.SUCCEEDED and free.payment_ref == payment_ref


def test_refund_retried_after_a_timeout_makes_one_refund(
    provider: StripeProvider, payer: FakeWorld, api: FakeStripe
) -> None:
    payment_ref = _paid(provider, payer)
    api.slow_next(1.5)  # Stripe makes the refund, the answer comes after the client gave up
    with pytest.raises(TransientError):
        provider.refund(payment_ref, Decimal("5.00"), "GBP", "duplicate", "k-timeout")
    again = provider.refund(payment_ref, Decimal("5.00"), "GBP", "duplicate", "k-timeout")
    assert list(api.refunds) == [again.ref]


def test_refund_of_a_disputed_or_unknown_payment_is_refused(
    provider: StripeProvider, payer: FakeWorld, api: FakeStripe
) -> None:
    payment_ref = _paid(provider, payer)
    api.charge_back(payment_ref)
    with pytest.raises(RefundRefused, match="charged back"):
        provider.refund(payment_ref, Decimal("5.00"), "GBP", "duplicate", "k-disputed")
    with pytest.raises(ProviderError, match="No such payment_intent"):
        provider.refund("pi_unknown", Decimal("5.00"), "GBP", "duplicate", "k-unknown")


def test_a_dashboard_refund_of_everything_leaves_nothing_to_refund(
    provider: StripeProvider, payer: FakeWorld
) -> None:
    payment_ref = _paid(provider, payer)
    payer.refund(payment_ref)
    with pytest.raises(RefundRefused, match="already been refunded"):
        provider.refund(payment_ref, Decimal("0.01"), "GBP", "duplicate", "k-after-dashboard")
