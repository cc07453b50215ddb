"""The providers as the money tests need them: each ``MoneyWorld`` plays the payer and the provider's back office
for one provider (the embedded sandbox, and the GoCardless and Stripe fakes in tests/fakes, one fake server per
merchant account as each account is its own creditor or Stripe account). Fee figures are computed from the fee
schedule each provider documents (as its fake or the sandbox implements it), never copied from one provider.

The ``money`` fixture (tests/conftest.py) gives one world per provider."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, ClassVar, Protocol

from fakes.gocardless_api import FakeGoCardless
from fakes.stripe_api import FakeStripe

from agent.core.model import Actor
from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.engine.sync import Syncer
from agent.runtime import Runtime
from connectors.providers import sandbox
from connectors.providers.contract import Provider
from connectors.providers.gocardless import GoCardlessProvider
from connectors.providers.sandbox.provider import SandboxProvider
from connectors.providers.stripe import StripeProvider

TRUST_MATTER, TRUST_MATTER_ID = "M-2026-0010", 10
OFFICE_MATTERS = ("M-2026-0011", "M-2026-0020", "M-2026-0030")
ADMIN = Actor("user", "bookkeeper")


PENNY = Decimal("0.01")


class MoneyWorld(Protocol):
    """One provider as the tests need it: the payer, the banks and the provider's settings and fee schedule."""

    name: ClassVar[str]
    fees_billed_apart: ClassVar[bool]  # a gross account's fees are invoiced, in no payout (else the fees_account's)
    repays_failed_payout: ClassVar[bool]  # a returned payout's money is paid out again with the next one
    provider: ClassVar[type[Provider]]  # its class: what it can do is its capabilities

    def secrets(self) -> dict[str, str]:
        """Secret name -> value the configured accounts refer to (set in the environment)."""

    def configure(self, config: str, *, trust_net: bool) -> str:
        """The demo ledgerlink.toml rewritten for this provider (its accounts; the trust account paid out net
        of fees when ``trust_net``)."""

    def pay(self, rt: Runtime, link_ref: str, method: str) -> str:
        """Pay a link as the payer; returns the provider's payment ref."""

    def charge_back(self, payment_ref: str) -> None: ...

    def pay_out(self) -> None:
        """The provider's end of day: pay every account out."""

    def activate_mandate(self, setup_ref: str) -> None:
        """The payer finishes the provider's mandate flow (at Stripe: saves a card in a setup-mode Checkout)."""

    def collect(self, collection_ref: str) -> None:
        """The banks take a Direct Debit collection: submitted, then confirmed (a card: charged when made)."""

    def fail_payout(self, payout_ref: str) -> None:
        """The firm's bank returns a payout."""

    def fee(self, amount: str, method: str) -> Decimal:
        """The provider's fee on one payment, exactly as its schedule gives it (a tenth of a penny at GoCardless)."""

    def chargeback_fees(self, amount: str) -> list[Decimal]:
        """Fees a chargeback of a paid-out payment adds (positive) or gives back (negative)."""

    def paid_out(self, gross: Decimal, fees: list[Decimal]) -> Decimal:
        """What a payout of ``gross`` less exactly ``fees`` credits to the bank, rounded as the provider does."""

    def close(self) -> None: ...


class SandboxMoney:
    name: ClassVar[str] = "sandbox"
    fees_billed_apart: ClassVar[bool] = False  # charged to the fees_account's payout
    repays_failed_payout: ClassVar[bool] = True
    provider: ClassVar[type[Provider]] = SandboxProvider

    def __init__(self, home: Path) -> None:
        self.home = home

    def secrets(self) -> dict[str, str]:
        return {}

    def configure(self, config: str, *, trust_net: bool) -> str:
        return config.replace('payout_fees = "gross"', 'payout_fees = "net"') if trust_net else config

    def pay(self, rt: Runtime, link_ref: str, method: str) -> str:
        return sandbox.pay(self.home, link_ref, method=method)

    def charge_back(self, payment_ref: str) -> None:
        sandbox.charge_back(self.home, payment_ref)

    def pay_out(self) -> None:
        sandbox.pay_out(self.home)

    def activate_mandate(self, setup_ref: str) -> None:
        sandbox.set_mandate(self.home, setup_ref, "active")

    def collect(self, collection_ref: str) -> None:
        for status in ("submitted", "confirmed"):
            sandbox.set_collection(self.home, collection_ref, status)

    def fail_payout(self, payout_ref: str) -> None:
        sandbox.fail_payout(self.home, payout_ref)

    def fee(self, amount: str, method: str) -> Decimal:
        return sandbox.money.fee_for(Decimal(amount), "GBP", method)  # the schedule in sandbox/money.py

    def chargeback_fees(self, amount: str) -> list[Decimal]:
        return []  # the sandbox keeps the payment's fee and charges none for the dispute

    def paid_out(self, gross: Decimal, fees: list[Decimal]) -> Decimal:
        return gross - sum(fees, Decimal(0))

    def close(self) -> None:
        """Nothing to stop: the sandbox lives in the home's sandbox.db."""


class FakeMoney:
    """A provider played by one fake server per account; ``trust_net`` chooses how the trust server settles."""

    name: ClassVar[str]
    # settle(gross=True): the fees are invoiced (GoCardless) or billed separately (Stripe)
    fees_billed_apart: ClassVar[bool] = True
    repays_failed_payout: ClassVar[bool]
    provider: ClassVar[type[Provider]]

    def __init__(self, home: Path) -> None:
        self.apis = {"operating": self.server(1), "trust": self.server(10**6)}
        for api in self.apis.values():
            api.start()
        self.trust_net = False

    @staticmethod
    def server(ids_from: int) -> FakeGoCardless | FakeStripe:
        raise NotImplementedError

    def secrets(self) -> dict[str, str]:
        return {f"{self.name}-{account}": f"token-{account}" for account in self.apis}

    def configure(self, config: str, *, trust_net: bool) -> str:
        self.trust_net = trust_net
        # the sandbox's options are not this provider's (a key it does not have is refused): how a trust account
        # is paid out is the fake's settle(gross) here
        config = re.sub(r"\noptions = \{ payout_fees = [^\n]*", "", config)
        for account, api in self.apis.items():
            config = re.sub(rf'(\[accounts\.{account}\]\n(?:[^\[]*?\n)?)provider = "sandbox"\n',
                            rf'\1provider = "{self.name}"\napi_base = "{api.url}"\n'
                            rf'credentials = "secret:{self.name}-{account}"\n', config)
        assert config.count(f'provider = "{self.name}"') == 2, config
        return config

    def _api(self, ref: str) -> Any:
        [api] = [a for a in self.apis.values() if self.knows(a, ref)]
        return api

    @staticmethod
    def knows(api: Any, ref: str) -> bool:
        raise NotImplementedError

    def pay(self, rt: Runtime, link_ref: str, method: str) -> str:
        return str(self._api(link_ref).pay(link_ref, None, True))

    def charge_back(self, payment_ref: str) -> None:
        self._api(payment_ref).charge_back(payment_ref)

    def pay_out(self) -> None:
        for account, api in self.apis.items():
            if api.owes():  # neither provider pays out an empty balance
                api.settle(account == "trust" and not self.trust_net)

    def fail_payout(self, payout_ref: str) -> None:
        self._api(payout_ref).fail_payout(payout_ref)

    def close(self) -> None:
        for api in self.apis.values():
            api.stop()


class GoCardlessMoney(FakeMoney):
    """Instant Bank Pay and Direct Debit; the fee is the fake's (tests/fakes/gocardless_api.py): 1% + 20p plus 20%
    VAT, each to a tenth of a penny, a payout's sum rounded to the penny."""

    name = "gocardless"
    repays_failed_payout = False  # a bounced payout is GoCardless's to re-send; the fake does not (Payout.cs)
    provider: ClassVar[type[Provider]] = GoCardlessProvider

    @staticmethod
    def server(ids_from: int) -> FakeGoCardless:
        return FakeGoCardless(ids_from)

    @staticmethod
    def knows(api: Any, ref: str) -> bool:
        return ref in api.billing_requests or ref in api.payments or ref in api.payouts

    def activate_mandate(self, setup_ref: str) -> None:
        api = self._api(setup_ref)
        api.set_mandate(api.complete_mandate_flow(setup_ref), "active")

    def collect(self, collection_ref: str) -> None:
        for status in ("submitted", "confirmed"):
            self._api(collection_ref).set_payment(collection_ref, status)

    def fee(self, amount: str, method: str) -> Decimal:
        fee, vat = FakeGoCardless.fee(int(Decimal(amount) * 100))
        return (fee + vat) / 100

    def chargeback_fees(self, amount: str) -> list[Decimal]:
        return [-self.fee(amount, "bank")]  # given back (PayoutItem.cs: credits on a chargeback)

    def paid_out(self, gross: Decimal, fees: list[Decimal]) -> Decimal:
        return (gross - sum(fees, Decimal(0))).quantize(PENNY, ROUND_HALF_UP)


class StripeMoney(FakeMoney):
    """Checkout, and saved cards for payment plans; the fee is the fake's (tests/fakes/stripe_api.py, Stripe's UK
    prices): 1.5% + 20p on every charge, GBP 20 a dispute."""

    name = "stripe"
    repays_failed_payout = True  # a payout_failure transaction returns the money to the balance
    provider: ClassVar[type[Provider]] = StripeProvider

    @staticmethod
    def server(ids_from: int) -> FakeStripe:
        return FakeStripe(ids_from)

    @staticmethod
    def knows(api: Any, ref: str) -> bool:
        return ref in api.sessions or ref in api.payouts or ref in api.payment_intents

    def activate_mandate(self, setup_ref: str) -> None:
        self._api(setup_ref).complete_setup(setup_ref)

    def collect(self, collection_ref: str) -> None:
        """A card charge has no stage at the bank: the PaymentIntent succeeded when it was made."""
        assert self._api(collection_ref).payment_intents[collection_ref]["status"] == "succeeded"

    def decline_next(self, account: str = "operating") -> None:
        """The payer's bank declines the account's next card charge."""
        api = self.apis[account]
        assert isinstance(api, FakeStripe)
        api.decline_next()

    def fee(self, amount: str, method: str) -> Decimal:
        return ((Decimal(amount) * Decimal("0.015")).quantize(PENNY, ROUND_HALF_UP) + Decimal("0.20"))

    def chargeback_fees(self, amount: str) -> list[Decimal]:
        return [Decimal("20.00")]  # the dispute fee; the charge's own fee is not given back

    def paid_out(self, gross: Decimal, fees: list[Decimal]) -> Decimal:
        return gross - sum(fees, Decimal(0))


WORLDS: dict[str, type[SandboxMoney] | type[GoCardlessMoney] | type[StripeMoney]] = {
    "sandbox": SandboxMoney, "gocardless": GoCardlessMoney, "stripe": StripeMoney}


def runtime_for(home: Path, money: MoneyWorld, *, trust_net: bool = False) -> Runtime:
    """The home's runtime with its accounts at ``money``'s provider, synced once."""
    config = home / "ledgerlink.toml"
    config.write_text(money.configure(config.read_text(), trust_net=trust_net))
    rt = Runtime.for_home(home)
    rt.links.retry_initial = 0.01
    Syncer(rt.store, rt.connector).sync()
    return rt


def firm(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "demo-firm.db") as conn:
        return conn.execute(sql).fetchall()


def paid(rt: Runtime, money: MoneyWorld, matter: str, amount: str, account: str, method: str = "card") -> str:
    link = rt.links.create(ADMIN, LinkRequest(matter=matter, amount=Decimal(amount), account=account))
    assert link.provider_ref is not None
    ref = money.pay(rt, link.provider_ref, method)
    EventPoller(rt.store, rt.provider(account), account, retry_initial=0.01).poll()
    return ref


def post_all(rt: Runtime) -> None:
    rt.outbox.reversal_wait = dt.timedelta(0)
    for _ in range(5):  # a reversal waits for its original: a few passes settle everything
        if not rt.outbox.run_once():
            return
