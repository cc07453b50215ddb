"""Stripe's saved cards as the Direct Debit contract's mandates and collections (payment plans, issue 27), against
the fake API (tests/fakes/stripe_api.py: a setup-mode Checkout Session, a SetupIntent, off-session PaymentIntents,
as docs.stripe.com/payments/save-and-reuse?platform=checkout and stripe-python ``_payment_intent.py`` give them)."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal

import pytest
from fakes.stripe_api import SECRET, FakeStripe

from agent.core.model import MerchantAccount
from connectors.providers.contract import (
    CollectionCancelRefused,
    CollectionStatus,
    EventKind,
    LinkNotFound,
    MandatePayer,
    MandateStatus,
    PaymentMethod,
    ProviderError,
    ProviderEvent,
)
from connectors.providers.stripe import COLLECTION_KEY, StripeProvider
from connectors.testkit.provider import drain, make_spec

AMOUNT = Decimal("500.01")


@pytest.fixture
def api() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    yield server
    server.stop()


@pytest.fixture
def provider(api: FakeStripe) -> StripeProvider:
    account = MerchantAccount(name="operating", provider="stripe", api_base=api.url)
    return StripeProvider(account, "sk_test_fake", webhook_secret=SECRET, timeout=2)


def _payer(key: str = "p1") -> MandatePayer:
    return MandatePayer(key=key, name="Ada Card", email="ada@example.com", idempotency_key=f"dd-mdt_{key}")


def _saved_card(provider: StripeProvider, api: FakeStripe) -> str:
    return api.complete_setup(provider.setup_mandate(_payer()).ref)


def _mine(events: list[ProviderEvent], ref: str) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.raw_status) for e in events if e.payment_ref == ref]


def test_setup_is_a_customer_and_a_setup_session_and_a_retry_gives_the_same(
        provider: StripeProvider, api: FakeStripe) -> None:
    setup = provider.setup_mandate(_payer())
    assert provider.setup_mandate(_payer()) == setup
    assert len(api.customers) == 1 and len(api.sessions) == 1
    [session] = api.sessions.values()
    assert (session["mode"], session["currency"], session["customer"]) == ("setup", "gbp", next(iter(api.customers)))
    assert setup.url == session["url"]
    waiting = provider.get_mandate(setup.ref)
    assert (waiting.ref, waiting.status, waiting.raw_status) == (setup.ref, MandateStatus.PENDING_CUSTOMER_APPROVAL,
                                                                 "open")


def test_a_finished_setup_is_an_active_mandate_named_by_its_setup_intent_and_announced(
        provider: StripeProvider, api: FakeStripe) -> None:
    setup = provider.setup_mandate(_payer())
    seti = api.complete_setup(setup.ref)
    got = provider.get_mandate(setup.ref)
    assert (got.ref, got.status, got.raw_status) == (seti, MandateStatus.ACTIVE, "succeeded")
    assert provider.get_mandate(seti) == got
    events, _ = drain(provider, None)
    [changed] = [e for e in events if e.kind is EventKind.MANDATE_CHANGED]
    assert (changed.link_ref, changed.mandate_ref, changed.raw_status) == (setup.ref, seti, "active")
    assert changed.method is PaymentMethod.DIRECT_DEBIT


def test_an_expired_setup_and_a_detached_card_are_announced(provider: StripeProvider, api: FakeStripe) -> None:
    lapsed = provider.setup_mandate(_payer("p2"))
    api.expire(lapsed.ref)
    assert provider.get_mandate(lapsed.ref).status is MandateStatus.EXPIRED
    seti = _saved_card(provider, api)
    _, cursor = drain(provider, None)
    api.detach(api.setup_intents[seti]["payment_method"])
    assert provider.get_mandate(seti).status is MandateStatus.CANCELLED
    events, _ = drain(provider, cursor)
    assert [(e.kind, e.mandate_ref, e.raw_status) for e in events] == [
        (EventKind.MANDATE_CHANGED, seti, "cancelled")]
    with pytest.raises(ProviderError, match="cannot be charged"):
        provider.create_collection(seti, AMOUNT, "GBP", None, "Instalment 2 of 6", "dd-col_after")


def test_an_instalment_is_a_payment_intent_charged_off_session_now_under_our_key(
        provider: StripeProvider, api: FakeStripe) -> None:
    seti = _saved_card(provider, api)
    _, cursor = drain(provider, None)
    made = provider.create_collection(seti, AMOUNT, "GBP", dt.date.today(), "Ledgerlink INV-7", "dd-col_1")
    assert (made.status, made.amount, made.currency, made.charge_date) == (
        CollectionStatus.CONFIRMED, AMOUNT, "GBP", dt.date.today())
    intent = api.payment_intents[made.ref]
    assert (intent["amount"], intent["customer"], intent["payment_method"]) == (
        50001, api.setup_intents[seti]["customer"], api.setup_intents[seti]["payment_method"])
    assert intent["metadata"][COLLECTION_KEY] == "dd-col_1"
    assert provider.create_collection(seti, AMOUNT, "GBP", dt.date.today(), "Ledgerlink INV-7", "dd-col_1") == made
    assert len(api.payment_intents) == 1 and provider.get_collection(made.ref) == made
    with pytest.raises(ProviderError, match=r"idempotency|same parameters"):  # the key reused for other money
        provider.create_collection(seti, Decimal("1.00"), "GBP", dt.date.today(), "Ledgerlink INV-7", "dd-col_1")
    events, _ = drain(provider, cursor)
    [confirmed] = [e for e in events if e.payment_ref == made.ref]
    assert (confirmed.kind, confirmed.raw_status, confirmed.amount, confirmed.mandate_ref, confirmed.method) == (
        EventKind.PAYMENT_CONFIRMED, "confirmed", AMOUNT, seti, PaymentMethod.DIRECT_DEBIT)


def test_a_later_charge_date_is_refused_as_a_card_cannot_be_held(provider: StripeProvider, api: FakeStripe) -> None:
    seti = _saved_card(provider, api)
    with pytest.raises(ProviderError, match="cannot hold"):
        provider.create_collection(seti, AMOUNT, "GBP", dt.date.today() + dt.timedelta(days=30), "x", "dd-col_2")
    assert api.payment_intents == {}
    assert StripeProvider.capabilities.holds_collections is False


def test_a_decline_is_a_failed_collection_and_a_retry_gives_the_same(provider: StripeProvider,
                                                                      api: FakeStripe) -> None:
    seti = _saved_card(provider, api)
    _, cursor = drain(provider, None)
    api.decline_next()
    failed = provider.create_collection(seti, AMOUNT, "GBP", None, "Instalment 3 of 6", "dd-col_3")
    assert failed.status is CollectionStatus.FAILED
    assert provider.create_collection(seti, AMOUNT, "GBP", None, "Instalment 3 of 6", "dd-col_3") == failed
    assert api.payment_intents[failed.ref]["last_payment_error"]["code"] == "card_declined"
    assert _mine(drain(provider, cursor)[0], failed.ref) == [(EventKind.PAYMENT_FAILED, "failed")]


def test_a_dispute_charges_back_the_instalment_and_cancel_is_refused_once_charged(
        provider: StripeProvider, api: FakeStripe) -> None:
    made = provider.create_collection(_saved_card(provider, api), AMOUNT, "GBP", None, "Instalment", "dd-col_4")
    _, cursor = drain(provider, None)
    with pytest.raises(CollectionCancelRefused) as refused:
        provider.cancel_collection(made.ref)
    assert refused.value.collection is not None and refused.value.collection.status is CollectionStatus.CONFIRMED
    api.charge_back(made.ref)
    assert provider.get_collection(made.ref).status is CollectionStatus.CHARGED_BACK
    events, _ = drain(provider, cursor)
    assert _mine(events, made.ref) == [(EventKind.PAYMENT_CHARGED_BACK, "charged_back")]
    assert [e.method for e in events if e.payment_ref == made.ref] == [PaymentMethod.DIRECT_DEBIT]


def test_a_processing_intent_can_be_cancelled_and_a_retried_cancel_gives_it(
        provider: StripeProvider, api: FakeStripe) -> None:
    made = provider.create_collection(_saved_card(provider, api), AMOUNT, "GBP", None, "Instalment", "dd-col_5")
    api.set_intent_status(made.ref, "processing")
    assert provider.get_collection(made.ref).status is CollectionStatus.SUBMITTED
    assert provider.cancel_collection(made.ref).status is CollectionStatus.CANCELLED
    assert provider.cancel_collection(made.ref).status is CollectionStatus.CANCELLED
    events, _ = drain(provider, None)
    assert _mine(events, made.ref)[-1] == (EventKind.COLLECTION_CANCELLED, "cancelled")


def test_a_link_payment_is_never_taken_for_a_collection_nor_a_collection_for_a_link(
        provider: StripeProvider, api: FakeStripe) -> None:
    """Checkout's own PaymentIntent (a paid link) emits payment_intent.succeeded too; its metadata carries the
    link, not our collection key, so it comes out only as the link's payment; an instalment only as a collection."""
    link = provider.create_link(make_spec(provider))
    link_intent = api.pay(link.ref, None, True)
    assert any(e["type"] == "payment_intent.succeeded" and e["data"]["object"]["id"] == link_intent
               for e in api.events)
    made = provider.create_collection(_saved_card(provider, api), AMOUNT, "GBP", None, "Instalment", "dd-col_6")
    events, _ = drain(provider, None)
    of_link = [e for e in events if e.payment_ref == link_intent]
    assert of_link and all(e.method is PaymentMethod.CARD and e.link_ref == link.ref for e in of_link)
    of_plan = [e for e in events if e.payment_ref == made.ref]
    assert [(e.kind, e.method, e.link_ref) for e in of_plan] == [
        (EventKind.PAYMENT_CONFIRMED, PaymentMethod.DIRECT_DEBIT, None)]
    with pytest.raises(LinkNotFound):
        provider.get_collection(link_intent)


def test_the_fake_refuses_what_stripe_refuses(api: FakeStripe) -> None:
    """Setup mode takes no line items and needs a currency; an intent cannot charge another customer's card."""
    def post(path: str, body: str, key: str | None = None) -> tuple[int, dict[str, object]]:
        headers = {"Authorization": "Bearer sk_test_fake", **({"Idempotency-Key": key} if key else {})}
        req = urllib.request.Request(api.url + path, data=body.encode(), method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    base = "mode=setup&success_url=https%3A%2F%2Fx.test"
    assert post("/v1/checkout/sessions", base)[0] == 400  # no currency
    assert post("/v1/checkout/sessions", base + "&currency=gbp&line_items[0][quantity]=1")[0] == 400
    _, customer = post("/v1/customers", "email=ada%40example.com")
    status, session = post("/v1/checkout/sessions", base + f"&currency=gbp&customer={customer['id']}")
    assert status == 200 and session["setup_intent"] is None
    seti = api.complete_setup(str(session["id"]))
    card = api.setup_intents[seti]["payment_method"]
    status, body = post("/v1/payment_intents", f"amount=100&currency=gbp&customer=cus_other&payment_method={card}"
                        "&confirm=true&off_session=true")
    assert status == 400 and "does not belong" in str(body["error"])
