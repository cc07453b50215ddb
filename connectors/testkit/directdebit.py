"""The Direct Debit contract test kit: subclass ``DirectDebitContract`` and provide the fixtures below.

A payment plan (agent/engine/plans.py) collects each instalment as a collection with a future charge date, and
the Direct Debit engine (agent/engine/directdebit.py) learns every result from ``Provider.events``: this kit is
what proves a ``DirectDebitProvider`` can carry both.

Fixtures a subclass provides:

* ``provider`` - a ``Collects``: the Provider under test (its fake API, or the sandbox), also a
  DirectDebitProvider, in the account's currency.
* ``world`` - a ``DirectDebitWorld``: the payer (authorise a mandate, cancel it) and the provider's back office and
  the banks (submit, confirm, pay out, fail or charge back a collection; report any documented status).

Where providers documentedly differ, the kit reads it from the provider's ``Capabilities``, as the engines do;
it holds no list of providers of its own. A provider that holds a collection until its charge date
(``holds_collections``: GoCardless, the sandbox) is asked for one a month ahead, which waits for submission; one
that charges when a collection is made (Stripe: a PaymentIntent confirmed off-session on a saved card) is asked for
one today, refuses a later date, and has it collected (or declined) at once: for it the world's submit and confirm
are what making the collection did, and a failure is the payer's bank declining that charge (``decline_next``). A
test that cannot apply to a provider skips, naming the capability. Where the kit goes through every documented
status, a provider that declares it never reports one (``mandate_statuses``, ``collection_statuses``) skips it
likewise.

The mandate a payer authorises may have a ref of its own (GoCardless: a mandate ``MD...`` made from the billing
request ``BRQ...``; Stripe: the SetupIntent ``seti_...`` of the setup session ``cs_...``) or keep the setup's (the
sandbox): the world says which, and the kit holds both to the contract's meaning of ``Mandate.ref``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Protocol

import pytest

from connectors.providers.contract import (
    SETTLED_MANDATES,
    Collection,
    CollectionCancelRefused,
    CollectionStatus,
    DirectDebitProvider,
    EventKind,
    LinkNotFound,
    MandatePayer,
    MandateSetup,
    MandateStatus,
    PaymentMethod,
    Provider,
    ProviderError,
    ProviderEvent,
)
from connectors.testkit.provider import drain

__all__ = ["INSTALMENT", "Collects", "DirectDebitContract", "DirectDebitWorld"]

INSTALMENT = Decimal("500.01")  # pence a float would lose: the amount must come back exactly
# A mandate the payer authorised is on its way (pending_submission, submitted: days at GoCardless) or active;
# payments can be created against all three (gocardless_pro PaymentsService.create).
_ON_ITS_WAY = (MandateStatus.PENDING_SUBMISSION, MandateStatus.SUBMITTED, MandateStatus.ACTIVE)
_NOT_AT_THE_BANK = (CollectionStatus.PENDING_CUSTOMER_APPROVAL, CollectionStatus.PENDING_SUBMISSION)


class DirectDebitWorld(Protocol):
    """The payer, the provider's back office and the banks, for one provider under the kit."""

    def authorise(self, setup: MandateSetup) -> str:
        """The payer completes the mandate flow at ``setup.url``; returns the mandate's own ref."""

    def cancel_mandate(self, mandate_ref: str) -> None:
        """The payer cancels the mandate (at their bank or with the provider)."""

    def submit(self, collection_ref: str) -> None:
        """The provider sends the collection to the payer's bank (it can no longer be cancelled); asked only of a
        provider that holds collections, as are confirm and fail."""

    def confirm(self, collection_ref: str) -> None:
        """The payer's bank paid a submitted collection."""

    def pay_out(self, collection_ref: str) -> None:
        """A confirmed collection's money is paid out to the firm."""

    def fail(self, collection_ref: str) -> None:
        """The payer's bank refused a submitted collection (asked only of a provider that holds collections)."""

    def decline_next(self) -> None:
        """The payer's bank will decline the next collection when it is charged (asked only of a provider that
        charges when a collection is made: Capabilities.holds_collections False)."""

    def charge_back(self, collection_ref: str) -> None:
        """The payer disputed a collected collection at their bank, which took the money back."""

    def set_mandate_status(self, mandate_ref: str, status: str) -> None:
        """The provider moves the mandate to ``status`` (any it reports: Capabilities.mandate_statuses),
        announcing it as it would; where the mandate already is there, nothing need happen."""

    def set_collection_status(self, collection_ref: str, status: str) -> None:
        """The provider's record of the collection says ``status`` (any it reports:
        Capabilities.collection_statuses), however it got there."""

    def setup_count(self) -> int:
        """How many mandate setups exist at the provider (to prove a retried setup made one)."""

    def collection_count(self) -> int:
        """How many collections exist at the provider (to prove a retried create made one)."""


class Collects(Provider, DirectDebitProvider):
    """A provider under the kit: a Provider (for its event cursor) that is also a DirectDebitProvider."""


def _payer() -> MandatePayer:
    key = uuid.uuid4().hex
    return MandatePayer(key=key[:8], name="Ada Direct", email="ada@example.com", idempotency_key=f"mandate-{key}")


def _instalment_date(days: int = 30) -> dt.date:
    """A plan's instalment date about ``days`` ahead, on a weekday: a scheme collects on working days only, and a
    provider may move a weekend date to the next one, which the kit would take for a changed date."""
    day = dt.date.today() + dt.timedelta(days=days)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def _mandate(provider: Collects, world: DirectDebitWorld) -> str:
    """A mandate the payer authorised; its ref."""
    return world.authorise(provider.setup_mandate(_payer()))


def _charges_at_once(provider: Collects) -> bool:
    """The provider charges a collection when it is made, and cannot hold one until a date."""
    return not provider.capabilities.holds_collections


def _due(provider: Collects) -> dt.date:
    """The date a plan's engine asks for an instalment: a month ahead where the provider holds it to that date;
    the instalment's own day, today, where it charges at once (agent/engine/plans.py submits it on its date)."""
    return dt.date.today() if _charges_at_once(provider) else _instalment_date()


def _collect(provider: Collects, mandate_ref: str, key: str | None = None,
             charge_date: dt.date | None = None) -> Collection:
    """An instalment of a plan against ``mandate_ref``, under ``key`` (a new one by default)."""
    return provider.create_collection(mandate_ref, INSTALMENT, provider.account.currency,
                                      charge_date or _due(provider), "Instalment 2 of 6, matter M-2026-0900",
                                      key or f"collect-{uuid.uuid4().hex}")


def _through(provider: Collects, world: DirectDebitWorld, mandate_ref: str, steps: tuple[str, ...]) -> Collection:
    """A collection made and taken through the world's ``steps``. Where the provider charges at once, submit and
    confirm are what making it did, and fail is its bank declining that charge, arranged before it is made."""
    at_once = _charges_at_once(provider)
    if at_once and "fail" in steps:
        world.decline_next()
    made = _collect(provider, mandate_ref)
    for step in steps:
        if not (at_once and step in ("submit", "confirm", "fail")):
            getattr(world, step)(made.ref)
    return made


def _reports_collection(provider: Collects, status: CollectionStatus) -> bool:
    said = provider.capabilities.collection_statuses
    return said is None or status in said


def _skip_unreported(provider: Collects, status: MandateStatus | CollectionStatus) -> None:
    """Skip a status the provider declares it never reports; the reason names the declaration."""
    said: frozenset[MandateStatus] | frozenset[CollectionStatus] | None
    if isinstance(status, MandateStatus):
        said, flag, what = provider.capabilities.mandate_statuses, "mandate_statuses", "an authorised mandate"
    else:
        said, flag, what = provider.capabilities.collection_statuses, "collection_statuses", "a collection"
    if said is not None and status not in said:
        pytest.skip(f"{provider.name} never reports {what} {status.value} (Capabilities.{flag})")


def _of(events: list[ProviderEvent], collection_ref: str) -> list[ProviderEvent]:
    return [e for e in events if e.payment_ref == collection_ref]


def _changes(events: list[ProviderEvent]) -> list[ProviderEvent]:
    return [e for e in events if e.kind is EventKind.MANDATE_CHANGED]


class DirectDebitContract:
    """Behaviour every DirectDebitProvider owes the Direct Debit and payment-plan engines."""

    # What the provider cannot do (a stable setup URL, what a mandate reads as before the payer finished, whether
    # it holds collections until a date) is read from its Provider.capabilities, as the engines read it.

    # --- mandates ---------------------------------------------------------------------------------------------

    def test_setup_gives_a_url_and_a_retry_gives_the_same_setup(
        self, provider: Collects, world: DirectDebitWorld
    ) -> None:
        payer = _payer()
        setup = provider.setup_mandate(payer)
        assert setup.ref
        assert setup.url.startswith(("http://", "https://"))
        again = provider.setup_mandate(payer)
        assert again.ref == setup.ref
        if provider.capabilities.stable_setup_url:
            assert again.url == setup.url
        assert world.setup_count() == 1
        other = provider.setup_mandate(_payer())
        assert other.ref != setup.ref
        assert world.setup_count() == 2

    def test_mandate_awaits_the_payer_then_is_read_by_its_own_ref(
        self, provider: Collects, world: DirectDebitWorld
    ) -> None:
        """Before the payer finishes, the setup ref stands for the mandate; after, get_mandate by either ref gives
        the mandate's own ref, which is what collections are made against."""
        setup = provider.setup_mandate(_payer())
        waiting = provider.get_mandate(setup.ref)
        assert (waiting.ref, waiting.status) == (setup.ref, provider.capabilities.pre_approval_status)
        assert waiting.raw_status
        mandate_ref = world.authorise(setup)
        got = provider.get_mandate(setup.ref)
        assert got.ref == mandate_ref
        assert got.status in _ON_ITS_WAY
        if provider.capabilities.speaks_contract_statuses:
            assert got.raw_status == got.status.value  # a mandate's own status, in the provider's (same) words
        else:
            assert got.raw_status  # its own word for it
        assert provider.get_mandate(mandate_ref) == got

    def test_authorised_mandate_is_announced_naming_its_setup(
        self, provider: Collects, world: DirectDebitWorld
    ) -> None:
        """The engine learns a mandate from its events: each names the mandate (mandate_ref), and one ties it to
        the setup the engine asked for (the setup ref in link_ref, or the mandate keeps the setup's ref)."""
        setup = provider.setup_mandate(_payer())
        mandate_ref = world.authorise(setup)
        events, _ = drain(provider, None)
        changed = _changes(events)
        assert changed, "the authorised mandate was not announced"
        for event in changed:
            assert event.mandate_ref == mandate_ref
            assert event.link_ref in (None, setup.ref)
            assert event.method is PaymentMethod.DIRECT_DEBIT
            assert (event.payment_ref, event.amount) == (None, None)
        assert any(setup.ref in (e.link_ref, e.mandate_ref) for e in changed), "no event ties the mandate to its setup"
        assert changed[-1].raw_status == provider.get_mandate(mandate_ref).status.value

    @pytest.mark.parametrize("by", ["payer", "firm"])
    def test_mandate_cancelled_is_announced_and_cancels_what_is_not_submitted(
        self, provider: Collects, world: DirectDebitWorld, by: str
    ) -> None:
        """The engine does not cancel a cancelled mandate's collections itself: the provider does, and says so on
        the cursor (GoCardless: a cancelled mandate takes "all associated cancellable payments" with it,
        gocardless_pro MandatesService.cancel). One already at the bank stands: where the provider charges at
        once, every collection is (collected when made), and none waits to be cancelled. The same whether the
        payer cancelled it or the firm did (``cancel_mandate``, by the mandate's ref)."""
        mandate_ref = _mandate(provider, world)
        waiting = None if _charges_at_once(provider) else _collect(provider, mandate_ref)
        sent = _through(provider, world, mandate_ref, ("submit",))
        stands = CollectionStatus.CONFIRMED if _charges_at_once(provider) else CollectionStatus.SUBMITTED
        _, cursor = drain(provider, None)
        if by == "payer":
            world.cancel_mandate(mandate_ref)
        else:
            ended = provider.cancel_mandate(mandate_ref)
            assert (ended.ref, ended.status) == (mandate_ref, MandateStatus.CANCELLED)
            assert provider.cancel_mandate(mandate_ref) == provider.get_mandate(mandate_ref)  # over: as it is
        events, _ = drain(provider, cursor)
        changed = _changes(events)
        assert changed and all(e.mandate_ref == mandate_ref for e in changed)
        assert changed[-1].raw_status == MandateStatus.CANCELLED.value
        assert provider.get_mandate(mandate_ref).status is MandateStatus.CANCELLED
        if waiting is not None:
            assert [(e.kind, e.raw_status) for e in _of(events, waiting.ref)] == [
                (EventKind.COLLECTION_CANCELLED, CollectionStatus.CANCELLED.value)]
            assert provider.get_collection(waiting.ref).status is CollectionStatus.CANCELLED
        assert _of(events, sent.ref) == []
        assert provider.get_collection(sent.ref).status is stands
        with pytest.raises(ProviderError):  # mandate_is_inactive (gocardless_pro PaymentsService.create)
            _collect(provider, mandate_ref)

    def test_firm_cancels_a_setup_the_payer_has_not_finished(
        self, provider: Collects, world: DirectDebitWorld
    ) -> None:
        """A payment plan cancelled before its payer set up the mandate ends the setup, by its ref: it is over at
        once (cancelled, or expired where the provider can only expire a setup), a second cancel returns it as it
        is, and a retried setup under the same key gives that ended setup back, not a new one to finish."""
        payer = _payer()
        setup = provider.setup_mandate(payer)
        ended = provider.cancel_mandate(setup.ref)
        assert ended.ref == setup.ref
        assert ended.status in SETTLED_MANDATES
        assert provider.get_mandate(setup.ref) == ended
        assert provider.cancel_mandate(setup.ref) == ended
        assert provider.setup_mandate(payer).ref == setup.ref
        assert provider.get_mandate(setup.ref).status in SETTLED_MANDATES
        assert world.setup_count() == 1

    # --- collections ------------------------------------------------------------------------------------------

    def test_instalment_keeps_its_charge_date_amount_and_currency(
        self, provider: Collects, world: DirectDebitWorld
    ) -> None:
        """A month ahead where the provider holds it to its date (it waits, not yet at the bank); today where it
        charges at once (collected when made)."""
        mandate_ref = _mandate(provider, world)
        day = _due(provider)
        made = _collect(provider, mandate_ref, charge_date=day)
        assert made.ref
        assert made.charge_date == day
        assert made.amount == INSTALMENT and isinstance(made.amount, Decimal)
        assert made.currency == provider.account.currency
        assert made.status in ((CollectionStatus.CONFIRMED,) if _charges_at_once(provider) else _NOT_AT_THE_BANK)
        assert provider.get_collection(made.ref) == made

    def test_a_provider_that_charges_at_once_refuses_a_later_date_and_takes_none(
        self, provider: Collects, world: DirectDebitWorld
    ) -> None:
        """It cannot hold a collection until a date: asked for a later one it refuses, and makes nothing (the plan
        engine asks on the instalment's day instead); asked for none, it charges now."""
        if not _charges_at_once(provider):
            pytest.skip(f"{provider.name} holds a collection until its charge date (Capabilities.holds_collections):"
                        " a later date is kept (test_instalment_keeps_its_charge_date_amount_and_currency)")
        mandate_ref = _mandate(provider, world)
        with pytest.raises(ProviderError) as refused:
            _collect(provider, mandate_ref, charge_date=_instalment_date())
        assert not isinstance(refused.value, LinkNotFound)
        assert world.collection_count() == 0
        made = provider.create_collection(mandate_ref, INSTALMENT, provider.account.currency, None,
                                          "Instalment 2 of 6, matter M-2026-0900", f"collect-{uuid.uuid4().hex}")
        assert made.status is CollectionStatus.CONFIRMED
        assert made.charge_date in (dt.date.today(), dt.datetime.now(dt.UTC).date())
        assert world.collection_count() == 1

    def test_create_collection_is_idempotent_under_its_key(
        self, provider: Collects, world: DirectDebitWorld
    ) -> None:
        """A create retried after a timeout must not collect the instalment twice; another key is another one."""
        mandate_ref = _mandate(provider, world)
        first = _collect(provider, mandate_ref, key="instalment-2")
        again = _collect(provider, mandate_ref, key="instalment-2")
        assert again == first
        assert world.collection_count() == 1
        other = _collect(provider, mandate_ref, key="instalment-3")
        assert other.ref != first.ref
        assert world.collection_count() == 2
        assert provider.get_collection(first.ref) == first and provider.get_collection(other.ref) == other

    def test_cancel_before_submission_cancels_and_is_announced(
        self, provider: Collects, world: DirectDebitWorld
    ) -> None:
        """A cancel retried because its answer was lost gives the cancelled collection, not a refusal."""
        if _charges_at_once(provider):
            pytest.skip(f"{provider.name} charges a collection when it is made (Capabilities.holds_collections): "
                        "it is never before submission; its cancel is refused, as test_cancel_after_it_went_to_the_"
                        "bank_is_refused_with_its_state[confirmed] shows")
        made = _collect(provider, _mandate(provider, world))
        cancelled = provider.cancel_collection(made.ref)
        assert (cancelled.ref, cancelled.status) == (made.ref, CollectionStatus.CANCELLED)
        assert (cancelled.amount, cancelled.charge_date) == (made.amount, made.charge_date)
        assert provider.get_collection(made.ref).status is CollectionStatus.CANCELLED
        assert provider.cancel_collection(made.ref).status is CollectionStatus.CANCELLED
        events, _ = drain(provider, None)
        assert [(e.kind, e.raw_status) for e in _of(events, made.ref)][-1] == (
            EventKind.COLLECTION_CANCELLED, CollectionStatus.CANCELLED.value)

    @pytest.mark.parametrize("steps", [("submit",), ("submit", "confirm")], ids=["submitted", "confirmed"])
    def test_cancel_after_it_went_to_the_bank_is_refused_with_its_state(
        self, provider: Collects, world: DirectDebitWorld, steps: tuple[str, ...]
    ) -> None:
        """Where the provider charges at once, a collection is at the bank and collected once made: confirmed is
        its state from the start, and it has no submitted stage."""
        if _charges_at_once(provider) and steps[-1] == "submit":
            pytest.skip(f"{provider.name} charges a collection when it is made (Capabilities.holds_collections): "
                        "it has no submitted stage")
        made = _through(provider, world, _mandate(provider, world), steps)
        now = CollectionStatus.SUBMITTED if steps[-1] == "submit" else CollectionStatus.CONFIRMED
        with pytest.raises(CollectionCancelRefused) as refused:
            provider.cancel_collection(made.ref)
        assert refused.value.collection is not None
        assert (refused.value.collection.ref, refused.value.collection.status) == (made.ref, now)
        assert provider.get_collection(made.ref).status is now

    @pytest.mark.parametrize(("steps", "results"), [
        (("submit", "confirm"), [(EventKind.PAYMENT_CONFIRMED, "confirmed")]),
        (("submit", "fail"), [(EventKind.PAYMENT_FAILED, "failed")]),
        (("submit", "confirm", "pay_out", "charge_back"), [
            (EventKind.PAYMENT_CONFIRMED, "confirmed"), (EventKind.PAYMENT_CONFIRMED, "paid_out"),
            (EventKind.PAYMENT_CHARGED_BACK, "charged_back")]),
    ], ids=["confirmed", "failed", "charged_back"])
    def test_results_arrive_on_the_cursor_once(
        self, provider: Collects, world: DirectDebitWorld, steps: tuple[str, ...],
        results: list[tuple[EventKind, str]],
    ) -> None:
        """Each status change of a collection is one event after the cursor, in order: method direct_debit,
        payment_ref the collection, raw_status its new status; read on from the cursor returned, none comes
        again (the engine would post a payment twice).

        A provider that holds a collection announces it waiting (pending_submission), then at the bank
        (submitted). One that charges at once has no such stage: its first word is the charge's result, confirmed
        or failed (Stripe: an off-session card PaymentIntent answers succeeded, or a 402 decline leaving it
        requires_payment_method, and "cards ... don't go into the processing status", docs.stripe.com/payments/
        paymentintents/lifecycle; the adapter follows payment_intent.succeeded / .payment_failed, not .created).
        A status the provider declares it never reports (Capabilities.collection_statuses: Stripe's paid_out, a
        Payout carrying the balance instead) is not expected."""
        mandate_ref = _mandate(provider, world)
        _, cursor = drain(provider, None)
        made = _through(provider, world, mandate_ref, steps)
        events, cursor = drain(provider, cursor)
        mine = _of(events, made.ref)
        waited = [] if _charges_at_once(provider) else [
            (EventKind.PAYMENT_PENDING, "pending_submission"), (EventKind.PAYMENT_PENDING, "submitted")]
        assert [(e.kind, e.raw_status) for e in mine] == [
            (kind, status) for kind, status in [*waited, *results]
            if _reports_collection(provider, CollectionStatus(status))]
        for event in mine:
            assert event.method is PaymentMethod.DIRECT_DEBIT
            assert (event.amount, event.currency) == (INSTALMENT, provider.account.currency)
            assert event.mandate_ref == mandate_ref
        assert [e.occurred_at for e in mine] == sorted(e.occurred_at for e in mine)
        assert provider.get_collection(made.ref).status.value == results[-1][1]
        rest, _ = drain(provider, cursor)
        assert not {e.event_id for e in rest} & {e.event_id for e in events}
        assert _of(rest, made.ref) == []

    # --- refs the provider does not know ----------------------------------------------------------------------

    @pytest.mark.parametrize("ref", ["MD0000NOSUCH", "BRQ0000NOSUCH", "nosuchmandate"])
    def test_unknown_mandate_is_not_found(self, provider: Collects, ref: str) -> None:
        """LinkNotFound, the contract's one not-found refusal, so "no such ref" is never taken for "refused"."""
        with pytest.raises(LinkNotFound):
            provider.get_mandate(ref)

    @pytest.mark.parametrize("ref", ["PM0000NOSUCH", "nosuchcollection"])
    def test_unknown_collection_is_not_found(self, provider: Collects, ref: str) -> None:
        with pytest.raises(LinkNotFound):
            provider.get_collection(ref)
        with pytest.raises(LinkNotFound):
            provider.cancel_collection(ref)

    # --- every documented status ------------------------------------------------------------------------------

    @pytest.mark.parametrize("status", list(MandateStatus), ids=str)
    def test_every_mandate_status_reads_back_and_is_announced_exactly(
        self, provider: Collects, world: DirectDebitWorld, status: MandateStatus
    ) -> None:
        """MandateStatus is the provider's documented vocabulary kept exactly: none is folded into another.

        A status is announced after the cursor when the mandate moved to it; the one authorisation left it in
        (a provider whose mandate cannot be moved back there: Stripe's active) was announced by the
        authorisation, so it is looked for from before it."""
        _skip_unreported(provider, status)
        setup = provider.setup_mandate(_payer())
        _, before = drain(provider, None)
        mandate_ref = world.authorise(setup)
        authorised = provider.get_mandate(mandate_ref).status
        _, cursor = drain(provider, before)
        world.set_mandate_status(mandate_ref, status.value)
        for ref in (mandate_ref, setup.ref):
            got = provider.get_mandate(ref)
            assert (got.ref, got.status) == (mandate_ref, status)
            if provider.capabilities.speaks_contract_statuses:
                assert got.raw_status == status.value
            else:
                assert got.raw_status  # the provider's own word for it
        changed = _changes(drain(provider, before if status is authorised else cursor)[0])
        assert changed and all(e.mandate_ref == mandate_ref for e in changed)
        assert changed[-1].raw_status == status.value

    @pytest.mark.parametrize("status", list(CollectionStatus), ids=str)
    def test_every_collection_status_reads_back_exactly(
        self, provider: Collects, world: DirectDebitWorld, status: CollectionStatus
    ) -> None:
        _skip_unreported(provider, status)
        made = _collect(provider, _mandate(provider, world))
        world.set_collection_status(made.ref, status.value)
        got = provider.get_collection(made.ref)
        assert got.status is status
        assert (got.ref, got.amount, got.currency, got.charge_date) == (
            made.ref, made.amount, made.currency, made.charge_date)
