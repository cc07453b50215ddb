"""The local API's request and response shapes. Money is a decimal string in JSON, never a float, both ways."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal, get_type_hints

from fastapi import Path as FastPath
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model

from agent.core.addresses import check_email
from agent.core.errors import DataError, RuleError
from agent.core.model import check_message, parse_amount
from agent.engine.links import Link
from agent.engine.payouts import Breach, PayoutLine, PayoutView, SyncResult
from agent.engine.plan_reminders import PlanReminder
from agent.engine.plans import FREQUENCIES, Instalment, PlanRequest, PlanView
from agent.engine.refunds import Refundable, RefundView


def _money_in(value: Any) -> Decimal:
    """JSON money is a decimal string only (a JSON number is refused, integer or not), by the one amount rule."""
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise ValueError('send money as a decimal string, e.g. "250.00", not a JSON number')
    try:
        return parse_amount(value, None)
    except DataError as exc:
        raise ValueError(str(exc).removeprefix("amount: ")) from None


MoneyIn = Annotated[Decimal, BeforeValidator(_money_in),
                    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?$", "examples": ["250.00"]})]


# A posting id as the state store holds it (a 64-bit integer): anything larger is simply not a posting.
PostingId = Annotated[int, FastPath(ge=1, le=2**63 - 1, description="A posting's id")]


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorOut(Out):
    error: str


class HealthOut(Out):
    status: Literal["ok"] = "ok"
    version: str


class ComponentOut(Out):
    last_ok_at: dt.datetime | None
    last_error_at: dt.datetime | None
    last_error: str | None


class StatusOut(Out):
    version: str
    now: dt.datetime
    last_sync: dt.datetime | None = Field(description="When the last sync of the firm database finished.")
    lag_seconds: float | None = Field(description="Seconds since the last successful sync; null before the first.")
    backlog: dict[str, int] = Field(description="Postings per state.")
    components: dict[str, ComponentOut] = Field(description="Last success and last error per part of the agent.")
    state_store: str | None = Field(None, description="Why the state store cannot be written now (a full disk).")
    client_money: list[str] = Field(default_factory=list, description="Compliance breaches not yet cleared: fees a "
                                    "provider took from a trust account, each with the amount to transfer back.")


class MatterOut(Out):
    key: str
    number: str
    name: str
    status: str
    client_key: str | None
    client_name: str | None = None
    link_sent: bool = Field(False, description="The 'payment link sent' marker: an outstanding link exists.")


class StatementOut(Out):
    key: str
    number: str
    issue_date: dt.date | None
    due_date: dt.date | None
    amount: Decimal
    balance: Decimal
    currency: str


def _default(f: dataclasses.Field[Any]) -> Any:
    description = f.metadata.get("description")
    if f.default_factory is not dataclasses.MISSING:
        return Field(default_factory=f.default_factory, description=description)
    return Field(... if f.default is dataclasses.MISSING else f.default, description=description)


def schema_of(name: str, source: type, **extra: Any) -> type[Out]:
    """The API model of an engine dataclass, made from it (descriptions from its fields' metadata), so the engine's
    record and the API's cannot drift apart; ``extra`` adds or replaces fields as (type, Field)."""
    hints = get_type_hints(source)
    fields: dict[str, Any] = {f.name: (hints[f.name], _default(f)) for f in dataclasses.fields(source)}
    return create_model(name, __base__=Out, **{**fields, **extra})


LinkOut = schema_of("LinkOut", Link, existing=(bool, Field(
    False, description="True when the debt already had this link and no new one was made.")))


def link_out(link: Link) -> Out:
    return LinkOut(**{f.name: getattr(link, f.name) for f in dataclasses.fields(link)})


class DebtOut(Out):
    matter: MatterOut
    currency: str
    oldest_issue_date: dt.date | None = Field(description="The oldest open statement's issue date.")
    statements: int = Field(description="How many open statements the matter has.")
    open_balance: Decimal = Field(description="The firm database's open balance of those statements.")
    left_to_collect: Decimal = Field(description="What is owed (agent.state.owed): the open balance less money "
                                     "on its way and collections that will still take money.")


class DebtsOut(Out):
    total: int = Field(description="Matters that owe, with these filters; the page holds at most `limit` of them.")
    debts: list[DebtOut]


class MatterDetailOut(Out):
    matter: MatterOut
    statements: list[StatementOut]
    open_balance: dict[str, Decimal] = Field(description="Per currency.")
    pending_collections: Decimal = Field(description="Direct Debit collections that will still take money.")
    unposted_payments: Decimal = Field(description="Payments received that the open balance does not show yet.")
    unposted_reversals: Decimal = Field(description="Refunds, failures and charge-backs the open balance does not "
                                        "show yet: owed again.")
    default_amount: Decimal = Field(description="What a new link asks for: what is owed (agent.state.owed), the "
                                    "open balance less pending collections and unposted payments, plus unposted "
                                    "reversals.")
    default_description: str
    currency: str
    payer_name: str | None
    payer_email: str | None
    existing_link: LinkOut | None  # type: ignore[valid-type]  # made at import time from Link
    link_sent: bool


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matter: str = Field(description="Matter number or key.")
    statements: dict[str, MoneyIn] = Field(default_factory=dict, description="Statement number or key -> amount.")
    amount: MoneyIn | None = Field(None, description="Defaults to the open balance after pending money.")
    description: str | None = None
    account: str | None = Field(None, description="Merchant account; the default account when absent.")


def _email_in(value: str) -> str:
    try:
        return check_email(value)
    except RuleError as exc:
        raise ValueError(str(exc).removeprefix("email: ")) from None


EmailIn = Annotated[str, AfterValidator(_email_in)]


class QuickLinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    email: EmailIn | None = Field(None, description="Where to email the link; leave out to copy it and send it "
                                  "yourself.")
    amount: MoneyIn
    invoice: str | None = None
    due_date: dt.date | None = None
    description: str | None = None
    account: str | None = None


class Recreate(BaseModel):
    """Optional changes for the new link of Cancel & Create New; the old link's matter and account otherwise."""

    model_config = ConfigDict(extra="forbid")

    statements: dict[str, MoneyIn] = Field(default_factory=dict)
    amount: MoneyIn | None = None
    description: str | None = None
    account: str | None = None


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = "cancelled by staff"


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["email", "sms"]


class PostingOut(Out):
    id: int
    payment_id: str | None = Field(description="The payment posted or reversed; null for a payout's postings.")
    reference: str
    kind: str
    statement_key: str | None
    matter_key: str | None
    amount: Decimal
    currency: str
    state: str
    attempts: int
    last_error: str | None
    next_attempt_at: dt.datetime | None
    note: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    posted_at: dt.datetime | None
    section: str | None = Field(None, description="The mapping's write-back section: null for payments, else "
                                "trust, fees, deposits or transfers.")
    payout_id: str | None = None
    account: str | None = None
    statement_number: str | None = Field(None, description="The firm's own number for the statement, where known.")
    matter_number: str | None = Field(None, description="The firm's own number for the matter, where known.")


class PaymentOut(Out):
    id: str
    account: str
    provider: str
    payment_ref: str
    link_id: str | None
    amount: Decimal
    currency: str
    status: str
    method: str
    status_at: dt.datetime
    confirmed_at: dt.datetime | None
    created_at: dt.datetime


class PostingDetailOut(Out):
    posting: PostingOut
    payment: PaymentOut | None = Field(description="Null for a payout's fees, deposit or transfer posting.")
    allocations: list[PostingOut] = Field(description="Every posting of the same payment (or payout).")


class RetriedOut(Out):
    retried: int


PayoutLineOut = schema_of("PayoutLineOut", PayoutLine)
PayoutOut = schema_of("PayoutOut", PayoutView, adds_up=(bool, Field(
    description="Whether the items add up to the bank amount to the penny.")),
    items=(list[PayoutLineOut], Field(default_factory=list)))  # type: ignore[valid-type]
BreachOut = schema_of("BreachOut", Breach, message=(str, ...))
PayoutRunOut = schema_of("PayoutRunOut", SyncResult, breaches=(list[BreachOut], Field(  # type: ignore[valid-type]
    default_factory=list, description="Client-money breaches these payouts showed, each with its transfer.")))
RefundOut = schema_of("RefundOut", RefundView)
RefundableOut = schema_of("RefundableOut", Refundable)


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: MoneyIn | None = Field(None, description="Default: all that is left to refund.")
    reason: str = Field(min_length=1, description="Why, for the record.")


InstalmentOut = schema_of("InstalmentOut", Instalment)
PlanReminderOut = schema_of("PlanReminderOut", PlanReminder)
PlanOut = schema_of("PlanOut", PlanView, instalments=(list[InstalmentOut], Field(  # type: ignore[valid-type]
    description="Oldest first; state is scheduled or cancelled, else the collection's money status.")),
    reminders=(list[PlanReminderOut], Field(  # type: ignore[valid-type]
        default_factory=list, description="The emails to the payer, by instalment: before it is collected and "
        "after it failed, each sent at most once (status sent, failed, unknown, skipped or sending); none in a "
        "preview.")))


class PlanIn(BaseModel):
    """A plan's terms: the number of instalments or each instalment's amount (one of them)."""

    model_config = ConfigDict(extra="forbid")

    matter: str = Field(min_length=1, description="The matter's number or key.")
    instalments: int | None = Field(None, ge=2, le=60, description="How many instalments.")
    amount: MoneyIn | None = Field(None, description="Each instalment; the last takes what is left.")
    total: MoneyIn | None = Field(None, description="Default: what the statements owe.")
    frequency: Literal[FREQUENCIES] = "monthly"  # type: ignore[valid-type]
    first: dt.date | None = Field(None, description="The first instalment's date; default: five days from today.")
    statements: list[str] = Field(default_factory=list, description="Numbers or keys; default: all open ones.")
    set_up_mandate: bool = Field(False, description="If the payer has no active Direct Debit mandate, ask them for "
                                 "one with the plan: it waits as awaiting_mandate and setup_url is the page to send "
                                 "them, showing the instalments. Otherwise such a plan is refused (422).")

    def request(self) -> PlanRequest:
        if (self.instalments is None) == (self.amount is None):
            raise RuleError("give instalments or amount: one of them")
        return PlanRequest(self.matter, count=self.instalments, amount=self.amount, total=self.total,
                           frequency=self.frequency, first=self.first, statements=tuple(self.statements),
                           set_up_mandate=self.set_up_mandate)


class AccountSettings(BaseModel):
    """The per-account texts and timings an admin may change from the console."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    default_message: Annotated[str, AfterValidator(check_message)] | None = None
    disclaimer: str | None = None
    reminder_days: list[int] | None = None
    expiry_days: int | None = None


# ------------------------------------------------------------------------------------------- console


class AccountOut(BaseModel):
    name: str
    provider: str
    currency: str
    expiry_days: int
    default: bool
    kind: str = Field("operating", description="operating or trust")
    kind_word: str = Field("operating", description="The firm's word for the kind: office or client in the UK.")


class ManagedPostingOut(PostingOut):
    """A posting with the words a clerk recognises: matter and statement numbers, the payment and its date."""

    matter_number: str | None
    statement_number: str | None
    payment_ref: str | None
    method: str | None
    paid_at: dt.datetime | None
    description: str | None
    link_id: str | None


class ReallocateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    statements: dict[str, MoneyIn] = Field(description="Statement number or key -> amount; must add up exactly.")


class RemoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, description="Why: the payment is handled by hand in the matter system.")


class BulkRow(BaseModel):
    name: str
    email: EmailIn | None = Field(None, description="Where to email the link; leave out to copy it and send it "
                                  "yourself.")
    amount: MoneyIn
    invoice: str | None = None
    invoice_date: dt.date | None = None
    due_date: dt.date | None = None
    message: str | None = None


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str | None = None
    rows: list[BulkRow]
    send: bool = Field(description="True: Send All (create and email); false: Generate Links for Download.")


class LinkRow(LinkOut):  # type: ignore[valid-type,misc]  # made at import time from Link
    matter_number: str | None = None
    closed_at: dt.datetime | None = None


class ChannelOut(BaseModel):
    """Whether the agent can send by this channel, and what an administrator must set first if not."""

    ready: bool
    missing: list[str] = Field(description="Settings still to set in ledgerlink.toml, e.g. '[smtp] from_address'.")


class ConsoleInfoOut(BaseModel):
    """What the console needs before the first screen: who is signed in, how to format, what can be sent."""

    user: str = Field(description="The signed-in person's user name.")
    role: Literal["admin", "clerk"]
    firm_name: str
    locale: str = Field(description="BCP 47 locale for money and dates (firm_locale).")
    time_zone: str = Field(description="IANA time zone for dates and times (firm_timezone).")
    email: ChannelOut
    sms: ChannelOut


class SendOut(BaseModel):
    channel: str
    recipient: str
    sent_at: dt.datetime
    ok: bool
    result: str = Field(description="'ok' or why the send failed.")
    purpose: str = Field(description="link (sent by staff) or reminder:<step>.")


class DeliveryOut(BaseModel):
    """A matter's outstanding link and every send of it, oldest first: what the debt row says happened."""

    matter_number: str
    link_id: str
    created_at: dt.datetime
    sends: list[SendOut]
