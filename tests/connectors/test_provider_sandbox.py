"""The sandbox provider under the contract kit, plus its pay page over real HTTP."""

from __future__ import annotations

import datetime as dt
import html
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from agent.core.model import MerchantAccount
from connectors.providers import contract as sandbox_contract
from connectors.providers import sandbox
from connectors.providers.contract import EventKind, LinkStatus, ProviderError, ProviderLink
from connectors.providers.sandbox import SandboxPayServer, SandboxProvider
from connectors.testkit.provider import PayoutContract, ProviderContract, make_spec


class SandboxWorld:
    def __init__(self, home: Path, account: str = "operating") -> None:
        self.home = home
        self.account = account

    def pay(self, link: ProviderLink, amount: Decimal | None = None, confirm: bool = True) -> str:
        return sandbox.pay(self.home, link.ref, amount, confirm=confirm)

    def fail(self, payment_ref: str) -> None:
        sandbox.fail_payment(self.home, payment_ref)

    def charge_back(self, payment_ref: str) -> None:
        sandbox.charge_back(self.home, payment_ref)

    def expire(self, link: ProviderLink) -> None:
        assert link.expires_at is not None
        assert sandbox.expire_due(self.home, now=link.expires_at + dt.timedelta(seconds=1)) == [link.ref]

    def link_count(self) -> int:
        with sqlite3.connect(self.home / sandbox.DB_NAME) as conn:
            count: int = conn.execute("SELECT count(*) FROM links").fetchone()[0]
            return count

    def payer_view(self, link: ProviderLink) -> str:
        """The pay page's text, as a browser shows it (tags dropped, entities read)."""
        status, page = _get(link.url)
        assert status == 200
        return html.unescape(re.sub(r"<[^>]+>", "\n", page))

    # PayoutWorld (connectors/testkit/provider.py), for the payout kit.

    def settle(self, gross: bool = False) -> str:
        """The banks' end of day for this account. ``gross``: its fees are billed apart, as an account set to
        ``payout_fees = "gross"`` charges them to its fees_account ("fees-billed" here) instead of this payout."""
        if gross:
            with sqlite3.connect(self.home / sandbox.DB_NAME) as conn:
                conn.execute("UPDATE balance SET account = 'fees-billed' WHERE account = ? AND kind = 'fee'"
                             " AND payout_ref IS NULL", (self.account,))
        made = set(sandbox.pay_out(self.home))
        with sqlite3.connect(self.home / sandbox.DB_NAME) as conn:
            refs = [r for (r,) in conn.execute("SELECT ref FROM payouts WHERE account = ?", (self.account,))]
        (ref,) = made.intersection(refs)
        return ref

    def fail_payout(self, payout_ref: str) -> None:
        sandbox.fail_payout(self.home, payout_ref)

    def limit_pages(self, size: int) -> None:
        """Nothing to limit: the sandbox is read in process, whole (no pages), and the kit still checks the order."""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def server(home: Path) -> Iterator[SandboxPayServer]:
    srv = SandboxPayServer(home).start()
    yield srv
    srv.stop()


@pytest.fixture
def provider(home: Path, server: SandboxPayServer) -> SandboxProvider:
    account = MerchantAccount(name="operating", api_base=server.url)
    return SandboxProvider(account, None, home=str(home))


@pytest.fixture
def payer(home: Path) -> SandboxWorld:
    return SandboxWorld(home)


@pytest.fixture
def faults() -> None:
    return None


@pytest.fixture
def webhook() -> None:
    return None


class TestSandboxContract(ProviderContract):
    pass


class TestSandboxPayouts(PayoutContract):
    """Payouts, their items and refunds of the sandbox, as every PayoutProvider owes them."""


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _post(url: str, form: dict[str, str]) -> tuple[int, str]:
    data = urllib.parse.urlencode(form).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_health(server: SandboxPayServer) -> None:
    assert _get(f"{server.url}/health") == (200, "ok")


def _shown(page: str) -> dict[str, str]:
    """The pay page's details by their ids (firm, matter, invoices, amount, description, disclaimer)."""
    return {m[1]: html.unescape(m[2]) for m in re.finditer(r'<(?:dd|p|strong) [^>]*id="([\w-]+)"[^>]*>([^<]*)<',
                                                             page)}


def test_pay_page_shows_what_is_paid_for_and_no_internal_key(provider: SandboxProvider) -> None:
    spec = make_spec(provider, description="Matter 77 <fees>", firm_name="Okafor & Co LLP",
                     matter_number="M-2026-0077", invoice_numbers=("INV-7", "INV-9"), reference="INV-7, INV-9",
                     disclaimer="Paid to the operating client account.",
                     metadata={"link_id": "lnk_internal", "matter": "M-2026-0077"})
    link = provider.create_link(spec)
    assert link.url.startswith(provider.base + "/pay/")
    status, page = _get(link.url)
    assert status == 200
    assert _shown(page) == {"firm": "Okafor & Co LLP", "matter": "M-2026-0077", "invoices": "INV-7, INV-9",
                            "amount": "GBP 125.50", "description": "Matter 77 <fees>",
                            "disclaimer": "Paid to the operating client account."}
    assert "Matter 77 &lt;fees&gt;" in page  # escaped, never markup
    assert spec.link_id not in page and "lnk_internal" not in page and spec.idempotency_key not in page
    assert "Pay by bank" in page and "Pay by card" in page
    assert '<label for="partial">' in page


def test_receipt_shows_the_amount_paid_the_firm_and_what_for(provider: SandboxProvider) -> None:
    link = provider.create_link(make_spec(provider, firm_name="Okafor & Co LLP", matter_number="M-2026-0077",
                                          invoice_numbers=("INV-7",), reference="INV-7"))
    status, page = _post(link.url, {"method": "bank", "partial": "20.25"})
    assert status == 200 and "Payment received" in page
    shown = _shown(page)
    assert shown["amount-paid"] == "GBP 20.25" and shown["amount"] == "GBP 20.25"
    assert (shown["firm"], shown["matter"], shown["invoices"]) == ("Okafor & Co LLP", "M-2026-0077", "INV-7")
    assert "Amount paid" in page and "Invoice<" in page  # one invoice: singular
    assert "payment was received: <strong id=\"amount-paid\">GBP 20.25</strong> to Okafor &amp; Co LLP" in page


def test_a_sandbox_db_from_before_payer_fields_is_upgraded(home: Path) -> None:
    """A sandbox.db written before links carried what the payer sees gains the columns; its links still show."""
    home.mkdir(parents=True)
    with sqlite3.connect(home / sandbox.DB_NAME) as conn:
        conn.execute("CREATE TABLE links (ref TEXT PRIMARY KEY, account TEXT NOT NULL, link_id TEXT NOT NULL,"
                     " idempotency_key TEXT NOT NULL, amount TEXT NOT NULL, currency TEXT NOT NULL, description"
                     " TEXT NOT NULL, reference TEXT NOT NULL, payer_name TEXT NOT NULL, payer_email TEXT NOT NULL,"
                     " url TEXT NOT NULL, status TEXT NOT NULL, amount_paid TEXT, expires_at TEXT NOT NULL,"
                     " created_at TEXT NOT NULL, UNIQUE (account, idempotency_key))")
        conn.execute("INSERT INTO links VALUES ('old', 'operating', 'lnk_1', 'k1', '10.00', 'GBP', 'Old fees', '',"
                     " 'Ada', 'ada@example.com', 'http://x/pay/old', 'outstanding', NULL,"
                     " '2999-01-01T00:00:00.000000+00:00', '2026-01-01T00:00:00.000000+00:00')")
    srv = SandboxPayServer(home).start()
    try:
        status, page = _get(f"{srv.url}/pay/old")
    finally:
        srv.stop()
    assert status == 200 and _shown(page) == {"amount": "GBP 10.00", "description": "Old fees"}


def test_pay_page_pays_by_card_and_then_refuses(provider: SandboxProvider) -> None:
    link = provider.create_link(make_spec(provider))
    status, page = _post(link.url, {"method": "card"})
    assert status == 200 and "payment was received" in page
    got = provider.get_link(link.ref)
    assert got.status is LinkStatus.PAYMENT_RECEIVED and got.amount_paid == Decimal("125.50")
    events = provider.events(None).events
    assert [e.kind for e in events] == [EventKind.PAYMENT_PENDING, EventKind.PAYMENT_CONFIRMED]
    assert {e.method.value for e in events} == {"card"}

    status, page = _get(link.url)
    assert status == 200 and "can no longer be paid: payment received" in page
    assert "Pay by bank" not in page
    status, page = _post(link.url, {"method": "bank"})
    assert status == 409
    assert len(provider.events(None).events) == 2


def test_partial_payment_closes_the_link(provider: SandboxProvider) -> None:
    link = provider.create_link(make_spec(provider))
    status, _ = _post(link.url, {"method": "bank", "partial": "20.25"})
    assert status == 200
    got = provider.get_link(link.ref)
    assert got.status is LinkStatus.PAYMENT_RECEIVED
    assert got.amount_paid == Decimal("20.25")
    confirmed = provider.events(None).events[-1]
    assert confirmed.kind is EventKind.PAYMENT_CONFIRMED and confirmed.amount == Decimal("20.25")


def test_partial_payment_above_amount_is_refused(provider: SandboxProvider) -> None:
    link = provider.create_link(make_spec(provider))
    status, page = _post(link.url, {"method": "bank", "partial": "500"})
    assert status == 409 and "Payment not made" in page
    assert provider.get_link(link.ref).status is LinkStatus.OUTSTANDING


def test_cancelled_and_unknown_links_cannot_be_paid(
    provider: SandboxProvider, server: SandboxPayServer
) -> None:
    link = provider.create_link(make_spec(provider))
    provider.cancel_link(link.ref)
    assert "can no longer be paid: cancelled" in _get(link.url)[1]
    with pytest.raises(ProviderError):
        sandbox.pay(provider.home, link.ref)
    assert _get(f"{server.url}/pay/nope")[0] == 404


def test_lazy_expiry_on_get(provider: SandboxProvider, home: Path) -> None:
    link = provider.create_link(make_spec(provider))
    with sqlite3.connect(home / sandbox.DB_NAME) as conn:
        conn.execute("UPDATE links SET expires_at = '2000-01-01T00:00:00.000000+00:00'")
    assert provider.get_link(link.ref).status is LinkStatus.EXPIRED
    assert [e.kind for e in provider.events(None).events] == [EventKind.LINK_EXPIRED]


def test_create_rejects_expiry_beyond_90_days(provider: SandboxProvider) -> None:
    spec = make_spec(provider, expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=91))
    with pytest.raises(ProviderError):
        provider.create_link(spec)


def test_events_are_per_account(provider: SandboxProvider, home: Path, payer: SandboxWorld) -> None:
    other = SandboxProvider(MerchantAccount(name="trust"), None, home=str(home))
    payer.pay(other.create_link(make_spec(other)))
    assert provider.events(None).events == []
    assert len(other.events(None).events) == 2


def test_confirm_later(provider: SandboxProvider, home: Path) -> None:
    link = provider.create_link(make_spec(provider))
    payment_ref = sandbox.pay(home, link.ref, confirm=False)
    assert [e.kind for e in provider.events(None).events] == [EventKind.PAYMENT_PENDING]
    sandbox.confirm_payment(home, payment_ref)
    assert provider.events(None).events[-1].kind is EventKind.PAYMENT_CONFIRMED


# --- fees, daily payouts and refunds (sandbox/money.py) -------------------------------------------------------


def _accounts(home: Path, trust_fees: str) -> tuple[SandboxProvider, SandboxProvider]:
    office = SandboxProvider(MerchantAccount(name="office"), None, home=str(home))
    client = SandboxProvider(MerchantAccount(name="client", kind="client", options={"payout_fees": trust_fees},
                                             fees_account="office"), None, home=str(home))
    return office, client


def _paid(provider: SandboxProvider, home: Path, amount: str, method: str = "card") -> str:
    link = provider.create_link(make_spec(provider, amount=Decimal(amount)))
    return sandbox.pay(home, link.ref, method=method)


def test_fee_schedule_rounds_half_up_and_caps() -> None:
    assert sandbox.money.fee_for(Decimal("100.00"), "GBP", "card") == Decimal("1.70")
    assert sandbox.money.fee_for(Decimal("10.00"), "GBP", "bank") == Decimal("0.20")  # the minimum
    assert sandbox.money.fee_for(Decimal("1000.00"), "GBP", "bank") == Decimal("2.00")  # the cap
    assert sandbox.money.fee_for(Decimal("33.33"), "GBP", "card") == Decimal("0.70")  # 0.69995 rounds up
    assert sandbox.money.fee_for(Decimal("1000.00"), "GBP", "direct_debit") == Decimal("4.00")


def test_gross_trust_payout_carries_no_fee_and_its_fee_goes_to_operating(home: Path) -> None:
    office, client = _accounts(home, "gross")
    ref = _paid(client, home, "200.00")
    assert sandbox.pay_out(home)
    [trust_payout] = client.payouts(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    assert trust_payout.amount == Decimal("200.00")
    assert [(i.kind, i.amount) for i in client.payout_items(trust_payout.ref)] == [("payment", Decimal("200.00"))]
    assert office.payouts(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) == []  # a fee alone is no payout: carried
    office_ref = _paid(office, home, "100.00")
    sandbox.pay_out(home)
    [office_payout] = office.payouts(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    items = office.payout_items(office_payout.ref)
    assert {(i.kind, i.payment_ref, i.amount) for i in items} == {
        ("fee", ref, Decimal("-3.20")), ("payment", office_ref, Decimal("100.00")), ("fee", office_ref,
                                                                                     Decimal("-1.70"))}
    assert sum(i.amount for i in items) == office_payout.amount == Decimal("95.10")


def test_net_trust_payout_deducts_the_fee(home: Path) -> None:
    _office, client = _accounts(home, "net")
    _paid(client, home, "200.00")
    sandbox.pay_out(home)
    [payout] = client.payouts(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    assert payout.amount == Decimal("196.80")
    assert sorted(i.kind for i in client.payout_items(payout.ref)) == ["fee", "payment"]


def test_refund_is_idempotent_and_never_exceeds_what_is_left(home: Path) -> None:
    office, _client = _accounts(home, "gross")
    ref = _paid(office, home, "50.00")
    first = office.refund(ref, Decimal("20.00"), "GBP", "duplicate", "key-1")
    assert office.refund(ref, Decimal("20.00"), "GBP", "duplicate", "key-1") == first
    with pytest.raises(sandbox_contract.RefundRefused, match=r"30\.00 GBP left"):
        office.refund(ref, Decimal("30.01"), "GBP", "too much", "key-2")
    office.refund(ref, Decimal("29.00"), "GBP", "most of the rest", "key-3")
    with pytest.raises(sandbox_contract.RefundRefused, match=r"1\.00 GBP left"):
        office.refund(ref, Decimal("1.01"), "GBP", "too much", "key-4")
    sandbox.pay_out(home)
    [payout] = office.payouts(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    items = office.payout_items(payout.ref)
    assert [i.amount for i in items if i.kind == "refund"] == [Decimal("-20.00"), Decimal("-29.00")]
    assert payout.amount == Decimal("0.05")  # 50.00 less 49.00 refunded less the 0.95 fee


def test_unsettled_payment_cannot_be_refunded(home: Path) -> None:
    office, _client = _accounts(home, "gross")
    link = office.create_link(make_spec(office))
    pending = sandbox.pay(home, link.ref, confirm=False)
    with pytest.raises(sandbox_contract.RefundRefused, match="not settled"):
        office.refund(pending, Decimal("1.00"), "GBP", "x", "key-p")


def test_chargeback_and_payouts_are_daily(home: Path) -> None:
    office, _client = _accounts(home, "gross")
    kept = _paid(office, home, "80.00")
    disputed = _paid(office, home, "40.00")
    sandbox.charge_back(home, disputed)
    sandbox.pay_out(home)
    sandbox.pay_out(home)  # nothing new to pay: no second payout
    [payout] = office.payouts(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    items = office.payout_items(payout.ref)
    assert ("chargeback", disputed, Decimal("-40.00")) in {(i.kind, i.payment_ref, i.amount) for i in items}
    assert payout.amount == sum(i.amount for i in items) == Decimal("80.00") - Decimal("1.40") - Decimal("0.80")
    assert kept in {i.payment_ref for i in items}
    with pytest.raises(ProviderError, match="does not exist"):
        office.payout_items("po_unknown")
def test_a_quiet_poll_still_sees_every_change_to_the_file(provider: SandboxProvider, home: Path,
                                                         payer: SandboxWorld) -> None:
    """An idle poll answers from PRAGMA data_version without reading the file: a write by any other connection
    (a payer's process, the pay page, a test editing the file by hand) must still show on the next poll."""
    link = provider.create_link(make_spec(provider))
    first = provider.events(None)
    assert first.events == [] and not first.has_more
    assert provider.events(first.cursor).events == []  # the quiet answer, same cursor
    payer.pay(link)
    page = provider.events(first.cursor)
    assert [e.kind for e in page.events] == [EventKind.PAYMENT_PENDING, EventKind.PAYMENT_CONFIRMED]
    assert provider.events(page.cursor).events == []
    other = provider.create_link(make_spec(provider))
    with sqlite3.connect(home / sandbox.DB_NAME) as conn:  # a raw edit: no sandbox helper involved
        conn.execute("UPDATE links SET expires_at = '2000-01-01T00:00:00.000000+00:00' WHERE ref = ?", (other.ref,))
    expired = provider.events(page.cursor)
    assert [(e.kind, e.link_ref) for e in expired.events] == [(EventKind.LINK_EXPIRED, other.ref)]


def test_a_quiet_poll_expires_links_when_their_time_comes(provider: SandboxProvider,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Expiry is written by the poll itself when the clock passes a link's expires_at, with no write to the file
    to notice: the quiet answer holds only until the next expiry."""
    link = provider.create_link(make_spec(provider))
    quiet = provider.events(None)
    assert provider.events(quiet.cursor).events == []
    assert link.expires_at is not None
    later = link.expires_at + dt.timedelta(seconds=1)
    monkeypatch.setattr("connectors.providers.sandbox.provider._now", lambda: later)
    assert [(e.kind, e.link_ref) for e in provider.events(quiet.cursor).events] == [(EventKind.LINK_EXPIRED,
                                                                                     link.ref)]
