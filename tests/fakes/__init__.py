"""Local stand-ins for provider APIs, on the testkit's fake HTTP server (connectors.testkit.fakehttp).

``FakeWorld`` is the payer, the bank and the provider's back office for the contract kits
(connectors/testkit/provider.py) and end-to-end tests: pay, fail, charge back and expire for links, and for money
after the payment ``settle`` (a day's balance paid out, net of fees or gross), ``refund`` (one made in the
provider's dashboard, outside Ledgerlink), ``fail_payout`` (the bank returns it) and ``limit_pages`` (small pages,
so every list is read to its end). Ledgerlink's own refunds go through ``PayoutProvider.refund``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from connectors.providers.contract import ProviderLink
from connectors.testkit.fakehttp import FakeAPI, Json, Request, Response, json_response

__all__ = ["FakeAPI", "FakeWorld", "Json", "PaymentsFake", "PayoutsFake", "Request", "Response", "json_response"]


class PaymentsFake(Protocol):
    """What a fake provider server lets a test do as the payer or the bank would."""

    def pay(self, ref: str, amount: Decimal | None, confirm: bool, /) -> str: ...
    def fail(self, payment_ref: str, /) -> None: ...
    def charge_back(self, payment_ref: str, /) -> None: ...
    def expire(self, ref: str, /) -> None: ...
    def link_count(self) -> int: ...
    def payer_view(self, ref: str, /) -> str: ...


class PayoutsFake(PaymentsFake, Protocol):
    """What a fake provider server lets a test do as the provider's back office and the firm's bank would."""

    def settle(self, gross: bool = False, /) -> str: ...
    def refund(self, payment_ref: str, amount: Decimal | None = None, /) -> str: ...
    def fail_payout(self, payout_ref: str, /) -> None: ...
    def limit_pages(self, size: int, /) -> None: ...


class FakeWorld:
    """The contract kit's "world" (payer, bank, clock) for a provider whose fake server plays them."""

    def __init__(self, api: PayoutsFake) -> None:
        self.api = api

    def settle(self, gross: bool = False) -> str:
        """Pay out everything collected, refunded and charged back since the last payout; returns its ref."""
        return self.api.settle(gross)

    def refund(self, payment_ref: str, amount: Decimal | None = None) -> str:
        """A refund the firm makes in the provider's own dashboard, not through Ledgerlink (all that is left
        unless ``amount``); returns the refund's ref."""
        return self.api.refund(payment_ref, amount)

    def fail_payout(self, payout_ref: str) -> None:
        self.api.fail_payout(payout_ref)

    def limit_pages(self, size: int) -> None:
        self.api.limit_pages(size)

    def pay(self, link: ProviderLink, amount: Decimal | None = None, confirm: bool = True) -> str:
        return self.api.pay(link.ref, amount, confirm)

    def fail(self, payment_ref: str) -> None:
        self.api.fail(payment_ref)

    def charge_back(self, payment_ref: str) -> None:
        self.api.charge_back(payment_ref)

    def expire(self, link: ProviderLink) -> None:
        self.api.expire(link.ref)

    def link_count(self) -> int:
        return self.api.link_count()

    def payer_view(self, link: ProviderLink) -> str:
        return self.api.payer_view(link.ref)
