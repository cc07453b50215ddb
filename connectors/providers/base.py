"""The provider plugin contract: create, show and cancel single-use payment links; read events from a cursor.

Small on purpose (pluggy-style): the link engine owns every business rule, a provider only talks to its API.
Payments are learnt by polling ``events`` from a stored cursor, so the agent needs no inbound port; webhook
verification is offered for installations that can receive them.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from agent.errors import LedgerlinkError
from agent.model import MerchantAccount


class LinkStatus(StrEnum):
    """Sent Pages statuses (send-for-payment guide) plus failed where a provider reports it."""

    OUTSTANDING = "outstanding"
    PAYMENT_RECEIVED = "payment_received"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


class EventKind(StrEnum):
    PAYMENT_PENDING = "payment_pending"  # created / submitted / fulfilling: never postable
    PAYMENT_CONFIRMED = "payment_confirmed"  # the only postable state
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_CHARGED_BACK = "payment_charged_back"
    LINK_EXPIRED = "link_expired"
    LINK_CANCELLED = "link_cancelled"


class PaymentMethod(StrEnum):
    BANK = "bank"
    CARD = "card"
    DIRECT_DEBIT = "direct_debit"


@dataclass(frozen=True)
class LinkSpec:
    """What the engine asks for. ``idempotency_key`` makes a retried create return the same link."""

    link_id: str
    amount: Decimal
    currency: str
    description: str
    payer_name: str
    payer_email: str
    expires_at: dt.datetime
    idempotency_key: str
    reference: str = ""  # invoice or matter number shown to the payer
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderLink:
    ref: str  # the provider's id (billing request, checkout session, sandbox link)
    url: str
    status: LinkStatus
    expires_at: dt.datetime | None = None
    amount_paid: Decimal | None = None


@dataclass(frozen=True)
class ProviderEvent:
    event_id: str
    kind: EventKind
    occurred_at: dt.datetime
    link_ref: str | None
    payment_ref: str | None
    amount: Decimal | None
    currency: str | None
    method: PaymentMethod = PaymentMethod.BANK
    raw_status: str = ""


@dataclass(frozen=True)
class EventPage:
    events: list[ProviderEvent]
    cursor: str | None  # store only after the events are stored; pass back to continue
    has_more: bool = False


class ProviderError(LedgerlinkError):
    """The provider refused the request for good (validation error, unknown link): do not retry."""


class LinkNotFound(ProviderError):
    pass


class CancelRefused(ProviderError):
    """The provider would not cancel (already paid, already closed); ``link`` holds its current state."""

    def __init__(self, message: str, link: ProviderLink | None = None) -> None:
        super().__init__(message)
        self.link = link


class InvalidSignature(ProviderError):
    pass


class Provider(ABC):
    """One merchant account at one provider. Raise agent.errors.TransientError for 429/5xx/timeouts."""

    name: ClassVar[str]
    max_expiry: ClassVar[dt.timedelta]
    methods: ClassVar[tuple[PaymentMethod, ...]]

    def __init__(self, account: MerchantAccount, credentials: str | None, *, home: str | None = None) -> None:
        self.account = account
        self.credentials = credentials
        self.home = home

    @abstractmethod
    def create_link(self, spec: LinkSpec) -> ProviderLink:
        """Create a single-use link; retried with the same idempotency key it must return the same link."""

    @abstractmethod
    def get_link(self, ref: str) -> ProviderLink: ...

    @abstractmethod
    def cancel_link(self, ref: str) -> ProviderLink:
        """Cancel (or expire) the link; CancelRefused when it was paid or closed meanwhile."""

    @abstractmethod
    def events(self, cursor: str | None, limit: int = 100) -> EventPage:
        """Events after ``cursor`` (None: from the beginning), oldest first."""

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
        """Parse a webhook delivery after checking its signature; InvalidSignature otherwise."""
        raise ProviderError(f"{self.name} does not take webhooks")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sockets or servers."""
