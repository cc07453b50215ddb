"""The provider plugin contract: create, show and cancel single-use payment links; read events from a cursor.

Small on purpose (pluggy-style): the link engine owns every business rule, a provider only talks to its API.
Payments are learnt by polling ``events`` from a stored cursor, so the agent needs no inbound port; webhook
verification is offered for installations that can receive them.

A provider describes itself once, on its class: ``capabilities`` (a ``Capabilities`` value: its payment methods,
longest link life, what its API can and cannot do, which optional contracts it keeps) is read by the engines and
by the contract kits alike, and ``Options`` is the model of an account's provider-specific ``options``.
``connectors.plugins.load`` refuses a class whose declarations are untrue (``Provider.declaration_problems``).
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from agent.core.errors import ConfigurationError
from agent.core.errors import ProviderError as ProviderError  # re-exported: the contract's refusal, in the one tree
from agent.core.model import MerchantAccount
from connectors.plugins import PluginOptions

__all__ = [
    "SETTLED_MANDATES",
    "CancelRefused",
    "Capabilities",
    "Collection",
    "CollectionCancelRefused",
    "CollectionStatus",
    "DirectDebitProvider",
    "EventKind",
    "EventPage",
    "InvalidSignature",
    "LinkNotFound",
    "LinkSpec",
    "LinkStatus",
    "Mandate",
    "MandatePayer",
    "MandateSetup",
    "MandateStatus",
    "PaymentMethod",
    "Payout",
    "PayoutItem",
    "PayoutItemKind",
    "PayoutProvider",
    "PayoutStatus",
    "PlannedDebit",
    "Provider",
    "ProviderEvent",
    "ProviderLink",
    "Refund",
    "RefundRefused",
    "RefundStatus",
    "clip",
    "direct_debit",
    "pays_out",
    "schedule_text",
]


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
    # Direct Debit (DirectDebitProvider): raw_status is then the resource's status in the provider's own words.
    COLLECTION_CANCELLED = "collection_cancelled"  # cancelled or approval denied before any money moved
    MANDATE_CHANGED = "mandate_changed"  # mandate_ref (and link_ref: the setup ref) say which mandate
    # The provider's event could not be read (an undocumented status, a lookup refused): ``error`` says why. The
    # engine parks it, visible and retryable through ``Provider.event``, and reads on.
    UNREADABLE = "unreadable"


class PaymentMethod(StrEnum):
    BANK = "bank"
    CARD = "card"
    DIRECT_DEBIT = "direct_debit"


@dataclass(frozen=True)
class LinkSpec:
    """What the engine asks for. ``idempotency_key`` makes a retried create return the same link.

    The payer-facing fields (description, firm_name, matter_number, invoice_numbers, reference, disclaimer) are
    what the firm's client knows the debt by; none of them holds an internal key. ``link_id`` and ``metadata``
    are for the provider's records and reconciliation, never shown to the payer.
    """

    link_id: str
    amount: Decimal
    currency: str
    description: str
    payer_name: str
    payer_email: str
    expires_at: dt.datetime
    idempotency_key: str
    reference: str = ""  # the invoice numbers (else the matter number) shown to the payer
    metadata: Mapping[str, str] = field(default_factory=dict)
    firm_name: str = ""  # who is paid (settings.service_name)
    matter_number: str = ""  # the matter's number as the firm writes it, never its key
    invoice_numbers: tuple[str, ...] = ()  # the bills the link pays, by number
    disclaimer: str = ""  # the account's disclaimer (MerchantAccount.disclaimer)

    @property
    def paying_for(self) -> str:
        """One line naming what is paid, e.g. "matter M-2026-0010, invoices INV-7, INV-9" ("" for neither)."""
        parts = [f"matter {self.matter_number}"] if self.matter_number else []
        if self.invoice_numbers:
            word = "invoice" if len(self.invoice_numbers) == 1 else "invoices"
            parts.append(f"{word} {', '.join(self.invoice_numbers)}")
        return ", ".join(parts)


def clip(text: str, limit: int) -> str:
    """``text`` cut to a provider's documented length limit, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


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
    mandate_ref: str | None = None  # Direct Debit mandate events only
    error: str | None = None  # UNREADABLE events only


@dataclass(frozen=True)
class EventPage:
    events: list[ProviderEvent]
    cursor: str | None  # store only after the events are stored; pass back to continue
    has_more: bool = False


class LinkNotFound(ProviderError):
    pass


class CancelRefused(ProviderError):
    """The provider would not cancel (already paid, already closed); ``link`` holds its current state."""

    def __init__(self, message: str, link: ProviderLink | None = None) -> None:
        super().__init__(message)
        self.link = link


class InvalidSignature(ProviderError):
    pass


class MandateStatus(StrEnum):
    """GoCardless's documented mandate statuses, kept exactly: the sandbox speaks the same vocabulary."""

    PENDING_CUSTOMER_APPROVAL = "pending_customer_approval"
    PENDING_SUBMISSION = "pending_submission"
    SUBMITTED = "submitted"
    ACTIVE = "active"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    CONSUMED = "consumed"
    BLOCKED = "blocked"
    SUSPENDED_BY_PAYER = "suspended_by_payer"


# A mandate in one of these can collect no more, and no setup in one can be finished: it is over.
SETTLED_MANDATES = frozenset({MandateStatus.FAILED, MandateStatus.CANCELLED, MandateStatus.EXPIRED,
                              MandateStatus.CONSUMED, MandateStatus.BLOCKED})


@dataclass(frozen=True)
class Capabilities:
    """What one provider can do, declared once on its class and read by the engines and the kits alike.

    Each flag that says a provider cannot do something carries the reason in a comment where it is declared.
    """

    methods: tuple[PaymentMethod, ...]  # how a payer can pay a link there
    max_expiry: dt.timedelta  # the longest a link may live there; the link engine never asks for longer
    # Links ---------------------------------------------------------------------------------------------------
    stable_url: bool = True  # get_link and a repeated create give the original URL
    # The provider itself closes a link whose time ran out (else the link engine expires it by its own clock)
    reports_expiry: bool = True
    cancelled_status: LinkStatus = LinkStatus.CANCELLED  # what get_link says after cancel_link
    cancel_event: EventKind | None = EventKind.LINK_CANCELLED  # what events() reports for it, if anything
    shows_firm_name: bool = True  # the payer is shown LinkSpec.firm_name (not only a dashboard-wide name)
    shows_disclaimer: bool = True  # the payer is shown LinkSpec.disclaimer
    webhooks: bool = False  # verify_webhook reads signed deliveries
    # Optional contracts (each true exactly when the class keeps it) ------------------------------------------
    direct_debit: bool = False  # a DirectDebitProvider: mandates and collections against them
    payouts: bool = False  # a PayoutProvider: payouts, their items and refunds
    # Direct Debit: True, the provider holds a collection until its charge date and it can be cancelled until it
    # goes to the bank (GoCardless pending_submission; the sandbox). False: it charges when the collection is
    # created (Stripe: a PaymentIntent confirmed off-session on a saved card), so create_collection refuses a
    # future charge_date, the plan engine submits an instalment on its date, and no statement is collected
    # automatically.
    holds_collections: bool = True
    stable_setup_url: bool = True  # a retried setup_mandate gives the original URL
    # What get_mandate says by the setup ref before the payer finished
    pre_approval_status: MandateStatus = MandateStatus.PENDING_CUSTOMER_APPROVAL
    # Direct Debit words. MandateStatus and CollectionStatus are GoCardless's documented statuses, kept exactly (the
    # sandbox speaks them too); a provider with fewer words of its own maps them onto these. True: the provider's
    # words are these, so Mandate.raw_status is the mandate's MandateStatus value. False: raw_status keeps the
    # provider's own word (Stripe: a SetupIntent's status); events carry the mapped value all the same.
    speaks_contract_statuses: bool = True
    # The MandateStatus values get_mandate and events can give a mandate once the payer authorised it (None: every
    # one). Non-empty, with one a mandate can be collected on (pending_submission, submitted or active).
    mandate_statuses: frozenset[MandateStatus] | None = None
    # The CollectionStatus values get_collection and events can give a collection (None: every one). Non-empty,
    # with confirmed among them.
    collection_statuses: frozenset[CollectionStatus] | None = None


class Provider(ABC):
    """One merchant account at one provider. Raise agent.core.errors.TransientError for 429/5xx/timeouts."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    Options: ClassVar[type[PluginOptions]] = PluginOptions  # an account's ``options``; none by default

    def __init__(self, account: MerchantAccount, credentials: str | None, *, home: str | None = None) -> None:
        self.account = account
        self.credentials = credentials
        self.home = home
        self.options = self.options_of(account)

    @classmethod
    def options_of(cls, account: MerchantAccount) -> PluginOptions:
        """The account's ``options`` as this provider's model; a ConfigurationError naming a bad key."""
        return cls.Options.parse(account.options, f"accounts.{account.name}.options", f"the {cls.name} provider")

    @classmethod
    def declaration_problems(cls) -> list[str]:
        """What is untrue in the class's declarations (plugins.load refuses the plugin for any); not overridden."""
        caps = getattr(cls, "capabilities", None)
        if not isinstance(caps, Capabilities):
            return [f"{cls.__name__}.capabilities is not a connectors.providers.contract.Capabilities"]
        problems = []
        if not isinstance(getattr(cls, "name", None), str):
            problems.append(f"{cls.__name__}.name is not set")
        if not caps.methods:
            problems.append(f"{cls.__name__}.capabilities.methods names no payment method")
        if caps.max_expiry <= dt.timedelta(0):
            problems.append(f"{cls.__name__}.capabilities.max_expiry is not positive")
        if not (isinstance(cls.Options, type) and issubclass(cls.Options, PluginOptions)):
            problems.append(f"{cls.__name__}.Options is not a connectors.plugins.PluginOptions")
        kept = {"direct_debit": issubclass(cls, DirectDebitProvider), "payouts": issubclass(cls, PayoutProvider),
                "webhooks": cls.verify_webhook is not Provider.verify_webhook}
        contracts = {"direct_debit": "DirectDebitProvider", "payouts": "PayoutProvider",
                     "webhooks": "verify_webhook"}
        for flag, keeps in kept.items():
            if getattr(caps, flag) != keeps:
                said = "declares" if getattr(caps, flag) else "does not declare"
                does = "does not implement" if not keeps else "implements"
                problems.append(f"{cls.__name__}.capabilities {said} {flag} but {does} {contracts[flag]}")
        problems.extend(_vocabulary_problems(cls.__name__, caps))
        return problems

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
        """Events after ``cursor`` (None: from the beginning), oldest first.

        One event that cannot be mapped must not stop the feed: return it as EventKind.UNREADABLE instead.
        """

    @abstractmethod
    def event(self, event_id: str) -> ProviderEvent | None:
        """Read one event again (to retry a parked one); None when it is one the agent does not follow."""

    @abstractmethod
    def snapshot(self, since: dt.datetime) -> list[ProviderEvent]:
        """The current state of every payment and link created since ``since``, as events (for reconciliation).

        List generously before ``since`` (a payment made just before it may have been stored by the agent after
        it): the reconciliation reports any payment of ours created since ``since`` that the snapshot lacks.

        Event ids are ``reconcile:<ref>:<state>``, so a state already reconciled is not applied twice; the
        reconciliation compares these with the payments the agent holds.
        """

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
        """Parse a webhook delivery after checking its signature; InvalidSignature otherwise."""
        raise ProviderError(f"{self.name} does not take webhooks")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sockets or servers."""


# --- Direct Debit: an optional second contract, for providers that hold mandates --------------------------------


class CollectionStatus(StrEnum):
    """GoCardless's documented payment statuses, kept exactly."""

    PENDING_CUSTOMER_APPROVAL = "pending_customer_approval"
    PENDING_SUBMISSION = "pending_submission"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    PAID_OUT = "paid_out"
    CANCELLED = "cancelled"
    CUSTOMER_APPROVAL_DENIED = "customer_approval_denied"
    FAILED = "failed"
    CHARGED_BACK = "charged_back"


@dataclass(frozen=True)
class PlannedDebit:
    """One debit of the payment plan a mandate is set up for: what the payer agrees to on the provider's page."""

    due_on: dt.date
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class MandatePayer:
    """Who is asked for a mandate; ``idempotency_key`` makes a retried setup return the same request.
    ``schedule``: the plan the mandate is for, oldest first (empty: a mandate alone), for the provider to show
    where its API lets it (``schedule_text``), or to leave out where it does not."""

    key: str
    name: str
    email: str
    idempotency_key: str
    schedule: tuple[PlannedDebit, ...] = ()


def schedule_text(schedule: tuple[PlannedDebit, ...]) -> str:
    """A plan in one line, for a provider's page that takes a sentence, not a table: its total, how many debits,
    from when to when and how much each (a plan's are equal but the last, else each is listed)."""
    currency = schedule[0].currency
    total = sum((d.amount for d in schedule), Decimal(0))
    *most, last = [d.amount for d in schedule]
    if len(set(most)) == 1:
        each = f"{currency} {most[0]} each" + ("" if last == most[0] else f", the last {currency} {last}")
    else:
        each = "; ".join(f"{d.due_on} {currency} {d.amount}" for d in schedule)
    return (f"Payment plan: {len(schedule)} payments, {currency} {total} in all, {schedule[0].due_on} to "
            f"{schedule[-1].due_on} ({each})")


@dataclass(frozen=True)
class MandateSetup:
    ref: str  # the setup's id (billing request); get_mandate takes it until the mandate itself exists
    url: str  # where the payer authorises the mandate


@dataclass(frozen=True)
class Mandate:
    ref: str  # the mandate's id once it exists, else the setup ref
    status: MandateStatus
    raw_status: str  # the provider's word (a billing request status while the payer has not finished)


@dataclass(frozen=True)
class Collection:
    ref: str
    status: CollectionStatus
    amount: Decimal
    currency: str
    charge_date: dt.date | None


class CollectionCancelRefused(ProviderError):
    """The collection went to the bank (or closed) and can no longer be cancelled; ``collection`` is its state."""

    def __init__(self, message: str, collection: Collection | None = None) -> None:
        super().__init__(message)
        self.collection = collection


class DirectDebitProvider(ABC):
    """Mixed into a Provider that can hold mandates and collect against them.

    Collection results arrive through ``Provider.events`` (the same cursor as link payments) with
    method=direct_debit (it names this contract, a collection against a mandate, not the rail: a Stripe
    collection is a card charge), payment_ref the collection ref and raw_status the collection's new status as a
    CollectionStatus value (a mandate's: a MandateStatus value), which the engine reads. GoCardless's words are
    these; the sandbox shares them; Stripe's are mapped onto them (connectors/providers/stripe.py).
    """

    # Whether it holds a collection until its charge date: Capabilities.holds_collections.

    @abstractmethod
    def setup_mandate(self, payer: MandatePayer) -> MandateSetup:
        """Ask the payer for a mandate; retried with the same idempotency key it returns the same setup."""

    @abstractmethod
    def get_mandate(self, ref: str) -> Mandate:
        """By mandate ref or setup ref."""

    @abstractmethod
    def create_collection(
        self,
        mandate_ref: str,
        amount: Decimal,
        currency: str,
        charge_date: dt.date | None,
        description: str,
        idempotency_key: str,
    ) -> Collection:
        """Collect on ``charge_date`` (None: the earliest the scheme allows); idempotent under the key."""

    @abstractmethod
    def get_collection(self, ref: str) -> Collection: ...

    @abstractmethod
    def cancel_collection(self, ref: str) -> Collection:
        """Cancel before submission to the bank; CollectionCancelRefused once the provider no longer allows it."""

    @abstractmethod
    def cancel_mandate(self, ref: str) -> Mandate:
        """The firm ends a mandate, by its ref or its setup's: a setup the payer has not finished can no longer be
        finished, and a mandate takes its collections not yet at the bank with it, as when the payer cancels it.
        A mandate already over (SETTLED_MANDATES) is returned as it is; the result is read back after the cancel."""


# --- Money after the payment: payouts, their contents and refunds (an optional third contract) ------------------


class PayoutStatus(StrEnum):
    """A payout's state, normalised: GoCardless pending/paid/bounced; Stripe pending/in_transit/paid/failed/canceled."""

    PENDING = "pending"  # announced, not yet in the bank (GoCardless pending; Stripe pending or in_transit)
    PAID = "paid"  # credited to the firm's bank account
    FAILED = "failed"  # returned to the provider (GoCardless bounced; Stripe failed or canceled)


class PayoutItemKind(StrEnum):
    """What one line of a payout is; its amount is signed: what it adds to (or takes from) the bank credit."""

    PAYMENT = "payment"  # a payment's gross amount (positive)
    FEE = "fee"  # the provider's or an app's fee, and tax on fees (negative)
    REFUND = "refund"  # money returned to a payer (negative)
    CHARGEBACK = "chargeback"  # a payer's bank took it back (negative)
    ADJUSTMENT = "adjustment"  # anything else: a reversed chargeback or refund, a correction (either sign)


@dataclass(frozen=True)
class Payout:
    ref: str  # the provider's payout id
    amount: Decimal  # what reaches (or reached) the firm's bank account
    currency: str
    status: PayoutStatus
    created_at: dt.datetime
    arrival_date: dt.date | None = None  # when the bank is credited, where the provider says
    bank_reference: str = ""  # what the firm's bank statement shows for it
    raw_status: str = ""  # the provider's own word


@dataclass(frozen=True)
class PayoutItem:
    kind: PayoutItemKind
    amount: Decimal  # signed, in the payout's currency
    payment_ref: str | None  # the payment it concerns (None for an item about no one payment)
    # The provider's id of the line (a balance transaction, a payout item's own id); a refund's line: the refund's
    # id (Refund.ref), so the payouts engine shows which refund a payout carries.
    ref: str = ""
    raw_type: str = ""  # the provider's own word (payout item type, balance transaction type)


class RefundStatus(StrEnum):
    """GoCardless created/pending_submission/submitted/paid/cancelled/bounced/funds_returned and Stripe
    pending/requires_action/succeeded/failed/canceled, normalised."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Refund:
    ref: str
    payment_ref: str
    amount: Decimal
    currency: str
    status: RefundStatus
    created_at: dt.datetime
    raw_status: str = ""


class RefundRefused(ProviderError):
    """The provider would not refund (more than is left, a payment not yet settled, refunds switched off)."""


class PayoutProvider(ABC):
    """Mixed into a Provider whose money reaches the firm's bank in payouts, and that can refund a payment.

    Fees are read from a payout's items (GoCardless ``payout_items``; Stripe ``balance_transactions?payout=``), so a
    payment's fee is known when the payout that carries it is read.
    """

    @abstractmethod
    def payouts(self, since: dt.datetime) -> list[Payout]:
        """Every payout created at or after ``since``, oldest first, all pages read."""

    @abstractmethod
    def payout_items(self, payout_ref: str) -> list[PayoutItem]:
        """What one payout contains, all pages read; the amounts add up to the payout's amount."""

    @abstractmethod
    def refund(self, payment_ref: str, amount: Decimal, currency: str, reason: str,
               idempotency_key: str) -> Refund:
        """Refund part or all of a payment; retried with the same key it returns the same refund."""


def _vocabulary_problems(owner: str, caps: Capabilities) -> list[str]:
    """What is untrue in a provider's declared Direct Debit statuses (Capabilities.mandate_statuses and
    collection_statuses): each, where declared, a non-empty set of the contract's values a Direct Debit provider can
    collect by."""
    problems = []
    declared: tuple[tuple[str, frozenset[MandateStatus] | frozenset[CollectionStatus] | None, type[StrEnum],
                          frozenset[StrEnum]], ...] = (
        ("mandate_statuses", caps.mandate_statuses, MandateStatus,
         frozenset({MandateStatus.PENDING_SUBMISSION, MandateStatus.SUBMITTED, MandateStatus.ACTIVE})),
        ("collection_statuses", caps.collection_statuses, CollectionStatus, frozenset({CollectionStatus.CONFIRMED})))
    for flag, said, vocabulary, needed in declared:
        if said is None:
            continue
        name = f"{owner}.capabilities.{flag}"
        if not caps.direct_debit:
            problems.append(f"{name} is declared but it does not declare direct_debit")
        if not isinstance(said, frozenset) or not all(isinstance(s, vocabulary) for s in said):
            problems.append(f"{name} is not a frozenset of {vocabulary.__name__}")
        elif not said:
            problems.append(f"{name} names no status")
        elif not said & needed:
            problems.append(f"{name} names none of {', '.join(sorted(needed))}: nothing could be collected")
    return problems


def direct_debit(provider: Provider) -> DirectDebitProvider:
    """``provider`` as the Direct Debit contract, which its capabilities declare (checked against its class at
    load); a ConfigurationError naming the account otherwise."""
    if provider.capabilities.direct_debit and isinstance(provider, DirectDebitProvider):
        return provider
    raise ConfigurationError(f"account {provider.account.name!r} is at {provider.name}, which holds no Direct "
                             "Debit mandates")


def pays_out(provider: Provider) -> PayoutProvider:
    """``provider`` as the payouts-and-refunds contract, which its capabilities declare; a ConfigurationError
    naming the account otherwise."""
    if provider.capabilities.payouts and isinstance(provider, PayoutProvider):
        return provider
    raise ConfigurationError(f"account {provider.account.name!r} is at {provider.name}, which reports no payouts "
                             "or refunds")
