"""Stripe's saved cards as the Direct Debit contract's mandates and collections (payment plans, issue 27), against
the fake API (tests/fakes/stripe_api.py: a setup-mode Checkout Session, a SetupIntent, off-session PaymentIntents,
as docs.stripe.com/payments/save-and-reuse?platform=checkout and stripe-python ``_payment_intent.py`` give them).

What every DirectDebitProvider owes is the contract kit's, run for Stripe in test_directdebit_contract.py
(TestStripeDirectDebit); these are what is Stripe's own: its objects, its words and its idempotency."""

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
    CollectionStatus,
    EventKind,
    LinkNotFound,
    Mandate,
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


def test_setup_is_a_customer_and_a_setup_session_and_the_mandate_its_setup_intent(
        provider: StripeProvider, api: FakeStripe) -> None:
    """What the contract kit (TestStripeDirectDebit) holds every provider to, in Stripe's objects: one customer and
    one setup-mode session for a retried setup, the session's own status while it is open and the SetupIntent's
    once it is finished."""
    setup = provider.setup_mandate(_payer())
    assert provider.setup_mandate(_payer()) == setup
    assert len(api.customers) == 1 and len(api.sessions) == 1
    [session] = api.sessions.values()
    assert (session["mode"], session["currency"], session["customer"]) == ("setup", "gbp", next(iter(api.customers)))
    assert setup.url == session["url"]
    assert provider.get_mandate(setup.ref).raw_status == "open"
    seti = api.complete_setup(setup.ref)
    assert seti.startswith("seti_") and api.setup_intents[seti]["customer"] == session["customer"]
    assert provider.get_mandate(setup.ref).raw_status == "succeeded"


def test_a_setup_left_unfinished_expires_and_is_announced(provider: StripeProvider, api: FakeStripe) -> None:
    """checkout.session.expired of a setup session: the mandate never was (the kit's mandates are all finished)."""
    lapsed = provider.setup_mandate(_payer("p2"))
    _, cursor = drain(provider, None)
    api.expire(lapsed.ref)
    assert provider.get_mandate(lapsed.ref) == Mandate(lapsed.ref, MandateStatus.EXPIRED, "expired")
    events, _ = drain(provider, cursor)
    assert [(e.kind, e.link_ref, e.mandate_ref, e.raw_status) for e in events] == [
        (EventKind.MANDATE_CHANGED, lapsed.ref, lapsed.ref, "expired")]


def test_an_instalment_is_a_payment_intent_charged_off_session_under_our_key(
        provider: StripeProvider, api: FakeStripe) -> None:
    seti = _saved_card(provider, api)
    made = provider.create_collection(seti, AMOUNT, "GBP", dt.date.today(), "Ledgerlink INV-7", "dd-col_1")
    intent = api.payment_intents[made.ref]
    assert (intent["amount"], intent["customer"], intent["payment_method"]) == (
        50001, api.setup_intents[seti]["customer"], api.setup_intents[seti]["payment_method"])
    assert intent["metadata"][COLLECTION_KEY] == "dd-col_1"
    with pytest.raises(ProviderError, match=r"idempotency|same parameters"):  # the key reused for other money
        provider.create_collection(seti, Decimal("1.00"), "GBP", dt.date.today(), "Ledgerlink INV-7", "dd-col_1")


def test_a_decline_is_a_failed_collection_and_a_retry_gives_the_same(provider: StripeProvider,
                                                                      api: FakeStripe) -> None:
    """Stripe answers a retried decline with the same 402 (docs.stripe.com/idempotency)."""
    seti = _saved_card(provider, api)
    api.decline_next()
    failed = provider.create_collection(seti, AMOUNT, "GBP", None, "Instalment 3 of 6", "dd-col_3")
    assert failed.status is CollectionStatus.FAILED
    assert provider.create_collection(seti, AMOUNT, "GBP", None, "Instalment 3 of 6", "dd-col_3") == failed
    assert api.payment_intents[failed.ref]["last_payment_error"]["code"] == "card_declined"
    assert len(api.payment_intents) == 1


def test_a_processing_intent_can_be_cancelled_and_a_retried_cancel_gives_it(
        provider: StripeProvider, api: FakeStripe) -> None:
    made = provider.create_collection(_saved_card(provider, api), AMOUNT, "GBP", None, "Instalment", "dd-col_5")
    api.set_intent_status(made.ref, "processing")
    assert provider.get_collection(made.ref).status is CollectionStatus.SUBMITTED
    assert provider.cancel_collection(made.ref).status is CollectionStatus.CANCELLED
    assert provider.cancel_collection(made.ref).status is CollectionStatus.CANCELLED
    events, _ = drain(provider, None)
    assert _mine(events, made.ref)[-1] == (EventKind.COLLECTION_CANCELLED, "cancelled")


def test_a_disputed_instalment_is_charged_back_until_the_dispute_is_won(provider: StripeProvider,
                                                                        api: FakeStripe) -> None:
    """The charge's ``disputed`` stays true after a won dispute; the dispute's balance transactions say where the
    money is, so a won dispute reads as collected again and an inquiry never as charged back."""
    card = _saved_card(provider, api)
    made = provider.create_collection(card, AMOUNT, "GBP", None, "Instalment", "dd-col_6")
    assert provider.get_collection(made.ref).status is CollectionStatus.CONFIRMED
    api.charge_back(made.ref)
    assert provider.get_collection(made.ref).status is CollectionStatus.CHARGED_BACK
    api.win_dispute(made.ref)
    charge = next(c for c in api.charges.values() if c["payment_intent"] == made.ref)
    assert charge["disputed"]
    assert provider.get_collection(made.ref).status is CollectionStatus.CONFIRMED
    other = provider.create_collection(card, AMOUNT, "GBP", None, "Instalment", "dd-col_7")
    api.charge_back(other.ref)  # another intent's dispute is not this one's
    assert provider.get_collection(made.ref).status is CollectionStatus.CONFIRMED
    assert provider.get_collection(other.ref).status is CollectionStatus.CHARGED_BACK


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
