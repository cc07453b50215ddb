"""GoCardless Instant Bank Pay against the local fake API, under the contract kit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fakes import FakeWorld
from fakes.gocardless_api import SECRET, FakeGoCardless, GoCardlessSigner

from agent.core.errors import TransientError
from agent.core.model import MerchantAccount
from connectors.providers.contract import LinkStatus, ProviderError
from connectors.providers.gocardless import GoCardlessProvider, retry_after
from connectors.testkit.provider import PayoutContract, ProviderContract, make_spec


@pytest.fixture
def api() -> Iterator[FakeGoCardless]:
    server = FakeGoCardless().start()
    yield server
    server.stop()


@pytest.fixture
def provider(api: FakeGoCardless) -> GoCardlessProvider:
    account = MerchantAccount(name="operating", provider="gocardless", api_base=api.url)
    return GoCardlessProvider(account, "sandbox_token", webhook_secret=SECRET, timeout=0.5)


@pytest.fixture
def payer(api: FakeGoCardless) -> FakeWorld:
    return FakeWorld(api)


@pytest.fixture
def faults(api: FakeGoCardless) -> FakeGoCardless:
    return api


@pytest.fixture
def webhook() -> GoCardlessSigner:
    return GoCardlessSigner()


class TestGoCardlessPayouts(PayoutContract):
    """Payouts, payout items and refunds against the fake, as every PayoutProvider owes them."""


class TestGoCardlessContract(ProviderContract):
    stable_url = False  # a flow cannot be read back; each create makes a new flow for the same billing request
    reports_expiry = False  # billing requests have no expired status (BillingRequest.cs)


def test_create_sends_minor_units_metadata_and_prefilled_payer(
    provider: GoCardlessProvider, api: FakeGoCardless
) -> None:
    spec = make_spec(provider, metadata={"matter": "M-77"})
    link = provider.create_link(spec)
    br = api.billing_requests[link.ref]
    assert br["payment_request"]["amount"] == 12550
    assert br["payment_request"]["metadata"] == {"link_id": spec.link_id, "matter": "M-77"}
    (flow,) = api.flows.values()
    assert link.url == flow["authorisation_url"]
    assert flow["prefilled_customer"] == {
        "email": "ada@example.com",
        "given_name": "Ada",
        "family_name": "Lovelace",
    }
    assert link.expires_at is not None and link.expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(days=6)


def test_validation_error_carries_the_api_message(provider: GoCardlessProvider) -> None:
    with pytest.raises(ProviderError, match="not supported for instant payments"):
        provider.create_link(make_spec(provider, currency="USD"))


def test_too_much_metadata_is_refused_before_calling(
    provider: GoCardlessProvider, api: FakeGoCardless
) -> None:
    with pytest.raises(ProviderError, match="3 metadata keys"):
        provider.create_link(make_spec(provider, metadata={"a": "1", "b": "2", "c": "3"}))
    assert api.requests == []


def test_sdk_does_not_retry_server_errors_itself(provider: GoCardlessProvider, api: FakeGoCardless) -> None:
    link = provider.create_link(make_spec(provider))
    api.requests.clear()
    api.fail_next(500, times=3)
    with pytest.raises(TransientError):
        provider.get_link(link.ref)
    assert len(api.requests) == 1


def test_rate_limit_reset_http_date_is_read() -> None:
    reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    wait = retry_after({"RateLimit-Reset": reset.strftime("%a, %d %b %Y %H:%M:%S GMT")})
    assert wait is not None and 25 <= wait <= 30
    assert retry_after({"Retry-After": "2"}) == 2.0
    assert retry_after({}) is None


def test_paid_link_shows_payment_received(provider: GoCardlessProvider, api: FakeGoCardless) -> None:
    link = provider.create_link(make_spec(provider))
    api.pay(link.ref)
    assert provider.get_link(link.ref).status is LinkStatus.PAYMENT_RECEIVED
