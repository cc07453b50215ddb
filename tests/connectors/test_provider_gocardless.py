"""GoCardless Instant Bank Pay against the local fake API, under the contract kit."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal

import pytest
from fakes import FakeWorld, Json
from fakes.gocardless_api import SECRET, FakeGoCardless, GoCardlessSigner

from agent.core.errors import TransientError
from agent.core.model import MerchantAccount
from connectors.providers.contract import LinkStatus, PayoutItemKind, ProviderError, RefundRefused, RefundStatus
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
    """The link contract against the fake; what GoCardless cannot do is in GoCardlessProvider.capabilities."""


def test_create_sends_minor_units_metadata_and_prefilled_payer(
    provider: GoCardlessProvider, api: FakeGoCardless
) -> None:
    spec = make_spec(provider, metadata={"matter": "M-77"}, matter_number="M-77", invoice_numbers=("INV-1042",))
    link = provider.create_link(spec)
    br = api.billing_requests[link.ref]
    assert br["payment_request"]["amount"] == 12550
    assert br["payment_request"]["description"] == "Invoice 1042 - conveyancing (matter M-77, invoice INV-1042)"
    assert br["payment_request"]["metadata"] == {"link_id": spec.link_id, "reference": "INV-1042", "matter": "M-77"}
    assert br["metadata"] == {"link_id": spec.link_id, "reference": "INV-1042"}
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


# --- payouts and refunds: what only GoCardless does -------------------------------------------------------------


def _paid(provider: GoCardlessProvider, payer: FakeWorld, amount: str = "125.50") -> str:
    return payer.pay(provider.create_link(make_spec(provider, amount=Decimal(amount))))


def test_fees_in_tenths_of_a_penny_round_to_the_payout_through_one_rounding_line(
    provider: GoCardlessProvider, payer: FakeWorld, api: FakeGoCardless
) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    refs = [_paid(provider, payer), _paid(provider, payer)]
    ref = payer.settle()
    # The fake's fee on 12550p: 1% + 20p = 145.5p, VAT 29.1p, so each fee line is "-174.6" (VAT included, as
    # PayoutItem.cs documents). GoCardless sums the items and rounds: 25100 - 349.2 = 24750.8 -> 24751p.
    assert [i["amount"] for i in api.payout_items[ref] if i["type"] == "gocardless_fee"] == ["-174.6", "-174.6"]
    (payout,) = provider.payouts(since)
    assert payout.amount == Decimal("247.51")
    items = provider.payout_items(ref)
    fees = [(i.amount, i.payment_ref, i.raw_type) for i in items if i.kind is PayoutItemKind.FEE]
    assert fees == [(Decimal("-1.75"), refs[0], "gocardless_fee"), (Decimal("-1.75"), refs[1], "gocardless_fee"),
                    (Decimal("0.01"), None, "fee_rounding")]
    assert sum(i.amount for i in items) == payout.amount


def test_payout_carries_the_bank_reference_and_arrival_date(
    provider: GoCardlessProvider, payer: FakeWorld, api: FakeGoCardless
) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    _paid(provider, payer)
    ref = payer.settle()
    (payout,) = provider.payouts(since)
    assert payout.bank_reference == api.payouts[ref]["reference"] != ""
    assert payout.arrival_date == dt.date.fromisoformat(api.payouts[ref]["arrival_date"])
    assert payout.raw_status == "paid"


def test_an_undocumented_item_type_is_kept_signed_as_an_adjustment(
    provider: GoCardlessProvider, payer: FakeWorld, api: FakeGoCardless
) -> None:
    _paid(provider, payer)
    ref = payer.settle(True)
    api.payout_items[ref].append({"type": "payment_reversed", "amount": "-100.0", "taxes": [], "links": {}})
    api.payouts[ref]["amount"] -= 100
    items = provider.payout_items(ref)
    assert (items[-1].kind, items[-1].amount, items[-1].raw_type) == (
        PayoutItemKind.ADJUSTMENT, Decimal("-1.00"), "payment_reversed")
    assert sum(i.amount for i in items) == Decimal("124.50")


def test_a_chargeback_gives_the_fee_back(provider: GoCardlessProvider, payer: FakeWorld) -> None:
    disputed = _paid(provider, payer)
    payer.settle()
    payer.charge_back(disputed)
    _paid(provider, payer, "200.00")
    mine = [(i.kind, i.amount) for i in provider.payout_items(payer.settle()) if i.payment_ref == disputed]
    assert mine == [(PayoutItemKind.CHARGEBACK, Decimal("-125.50")), (PayoutItemKind.FEE, Decimal("1.75"))]


def test_refund_confirms_the_total_and_a_cancelled_refund_no_longer_counts(
    provider: GoCardlessProvider, payer: FakeWorld, api: FakeGoCardless
) -> None:
    payment_ref = _paid(provider, payer)
    first = provider.refund(payment_ref, Decimal("100.00"), "GBP", "overpaid", "rf-a")
    assert api.refunds[first.ref]["metadata"] == {"reason": "overpaid"}
    assert first.status is RefundStatus.PENDING and first.raw_status == "created"
    api.refunds[first.ref]["status"] = "cancelled"
    again = provider.refund(payment_ref, Decimal("125.50"), "GBP", "all of it", "rf-b")
    assert again.amount == Decimal("125.50")
    with pytest.raises(RefundRefused, match="left to refund"):
        provider.refund(payment_ref, Decimal("0.01"), "GBP", "more", "rf-c")


def test_refund_of_a_payment_not_yet_collected_is_refused(
    provider: GoCardlessProvider, payer: FakeWorld
) -> None:
    pending = payer.pay(provider.create_link(make_spec(provider)), confirm=False)
    with pytest.raises(RefundRefused, match="submitted"):
        provider.refund(pending, Decimal("1.00"), "GBP", "duplicate", "rf-pending")


def test_refund_retried_after_a_timeout_makes_one_refund(
    provider: GoCardlessProvider, payer: FakeWorld, api: FakeGoCardless
) -> None:
    payment_ref = _paid(provider, payer)
    api.slow_next(1.5)
    with pytest.raises(TransientError):
        provider.refund(payment_ref, Decimal("5.00"), "GBP", "duplicate", "rf-timeout")
    again = provider.refund(payment_ref, Decimal("5.00"), "GBP", "duplicate", "rf-timeout")
    assert list(api.refunds) == [again.ref]


def test_items_that_do_not_add_up_are_not_hidden_behind_a_rounding_line(
    provider: GoCardlessProvider, payer: FakeWorld, api: FakeGoCardless
) -> None:
    _paid(provider, payer)
    ref = payer.settle()
    api.payouts[ref]["amount"] += 1  # a line the listing lacks
    items = provider.payout_items(ref)
    assert "fee_rounding" not in [i.raw_type for i in items]
    assert sum(i.amount for i in items) == Decimal("123.75") != Decimal("123.76")


def test_an_amount_not_in_tenths_of_a_penny_is_refused(
    provider: GoCardlessProvider, payer: FakeWorld, api: FakeGoCardless
) -> None:
    _paid(provider, payer)
    ref = payer.settle(True)
    api.payout_items[ref][0]["amount"] = "1e4"
    with pytest.raises(ProviderError, match="pence to one decimal place"):
        provider.payout_items(ref)


def test_a_dashboard_refund_shows_in_the_next_payout(provider: GoCardlessProvider, payer: FakeWorld) -> None:
    payment_ref = _paid(provider, payer)
    payer.settle()
    payer.refund(payment_ref, Decimal("25.00"))
    _paid(provider, payer, "100.00")
    items = provider.payout_items(payer.settle())
    assert [(i.payment_ref, i.amount) for i in items if i.kind is PayoutItemKind.REFUND] == [
        (payment_ref, Decimal("-25.00"))]
    with pytest.raises(RefundRefused):
        provider.refund(payment_ref, Decimal("100.51"), "GBP", "more than is left", "rf-after-dashboard")


def test_the_fake_enforces_the_documented_metadata_limits(api: FakeGoCardless) -> None:
    """Up to 3 keys, keys to 50 characters, values to 500 (the API reference): more is a 422 naming metadata."""
    def create(metadata: dict[str, str]) -> tuple[int, Json]:
        body = json.dumps({"billing_requests": {"payment_request": {"amount": 100, "currency": "GBP",
                                                                     "metadata": metadata}}}).encode()
        request = urllib.request.Request(f"{api.url}/billing_requests", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    assert create({"a": "1", "b": "2", "c": "x" * 500})[0] == 201
    for bad in ({"a": "1", "b": "2", "c": "3", "d": "4"}, {"k" * 51: "1"}, {"a": "x" * 501}):
        status, body = create(bad)
        assert status == 422 and body["error"]["errors"][0]["field"] == "metadata", bad
