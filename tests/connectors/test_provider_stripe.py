"""Stripe Checkout Sessions against the local fake API, under the contract kit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import parse_qs

import pytest
from fakes import FakeWorld
from fakes.stripe_api import SECRET, FakeStripe, StripeSigner

from agent.core.errors import TransientError
from agent.core.model import MerchantAccount
from connectors.providers.contract import EventKind, LinkStatus, ProviderError
from connectors.providers.stripe import StripeProvider
from connectors.testkit.provider import ProviderContract, drain, make_spec


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


class TestStripeContract(ProviderContract):
    cancelled_status = LinkStatus.EXPIRED  # Stripe can only expire a session
    cancel_event = EventKind.LINK_EXPIRED


def test_create_sends_the_documented_parameters(provider: StripeProvider, api: FakeStripe) -> None:
    spec = make_spec(provider, metadata={"matter": "M-77"})
    link = provider.create_link(spec)
    session = api.sessions[link.ref]
    assert session["amount_total"] == 12550 and session["currency"] == "gbp"
    assert session["client_reference_id"] == spec.link_id
    assert session["customer_email"] == "ada@example.com"
    assert session["metadata"] == {"link_id": spec.link_id, "reference": "INV-1042", "matter": "M-77"}
    assert session["expires_at"] == int(spec.expires_at.timestamp())
    assert link.url == session["url"]


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


def test_form_encoding_of_line_items(provider: StripeProvider, api: FakeStripe) -> None:
    captured: list[bytes] = []
    original = api._route

    def spy(request):  # type: ignore[no-untyped-def]
        captured.append(request.body)
        return original(request)

    api._route = spy  # type: ignore[method-assign]
    provider.create_link(make_spec(provider))
    form = parse_qs(captured[0].decode())
    assert form["line_items[0][price_data][product_data][name]"] == ["Invoice 1042 - conveyancing"]
    assert form["mode"] == ["payment"]
