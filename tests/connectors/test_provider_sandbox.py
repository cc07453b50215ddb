"""The sandbox provider under the contract kit, plus its pay page over real HTTP."""

from __future__ import annotations

import datetime as dt
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from agent.core.model import MerchantAccount
from connectors.providers import sandbox
from connectors.providers.contract import EventKind, LinkStatus, ProviderError, ProviderLink
from connectors.providers.sandbox import SandboxPayServer, SandboxProvider
from connectors.testkit.provider import ProviderContract, make_spec


class SandboxWorld:
    def __init__(self, home: Path) -> None:
        self.home = home

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
            return conn.execute("SELECT count(*) FROM links").fetchone()[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def server(home: Path) -> Iterator[SandboxPayServer]:
    srv = SandboxPayServer(home, disclaimer_for=lambda name: f"Paid to {name} client account.").start()
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


def test_pay_page_shows_amount_description_and_disclaimer(provider: SandboxProvider) -> None:
    link = provider.create_link(make_spec(provider, description="Matter 77 <fees>"))
    assert link.url.startswith(provider.base + "/pay/")
    status, page = _get(link.url)
    assert status == 200
    assert "GBP 125.50" in page
    assert "Matter 77 &lt;fees&gt;" in page
    assert "Paid to operating client account." in page
    assert "Pay by bank" in page and "Pay by card" in page
    assert '<label for="partial">' in page


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
