"""Direct Debit: mandates, automatic collection on the due date, the payer's manual amount (Pay Now).

Rules (direct-debit-payment-scenarios.txt; each has a test in tests/engine/test_directdebit.py):
* a statement issued to a payer with an active mandate is collected on its due date: the lesser of what the
  statement owes (the current invoice) and the payable amount. Payable = brought forward + current invoice, where
  brought forward is the payer's other open statements (credits negative) less what collections already on their
  way will take from them, so one credit is never spent twice. Nothing is collected when payable <= 0;
* a collection is created at the provider as soon as the scheduler finds the statement (on sync), with
  charge_date = the due date. The provider holds it (GoCardless: pending_submission) until it submits it to the
  bank a few working days before that date, and until then it can be cancelled: a statement changed before its due
  date is re-computed by cancel + re-create; once submitted it stands;
* statements already due when first seen are not collected automatically: they are brought-forward balances;
* before the due date the payer may choose another amount (Pay Now, ``request_manual``), which replaces the
  automatic collection; on or after the due date, and when the payer is in credit, it is refused;
* results arrive through the provider's event cursor (agent.engine.payments calls ``apply_event``): confirmed becomes a
  posting allocated to the collection's statement, failed or charged back after that is reversed.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from agent.core.errors import DataError, NotFound, RuleError, TransientError
from agent.core.model import Actor, Statement, check_decimals, to_decimal
from agent.core.retry import call
from agent.home.settings import Settings
from agent.state import StateStore, audit
from agent.state.mirror import get_matter, get_payer, get_statement
from agent.state.owed import payer_statements, statements_owed
from agent.state.schema import Row, collections, firm_statements, mandates, payments, plan_statements, plans
from agent.state.statuses import (
    COLLECTION_CANCELLABLE,
    COLLECTION_CREATING,
    COLLECTION_LIVE,
    COLLECTION_PENDING,
    COLLECTION_REFUSED,
    PLAN_HOLDING,
    CollectionState,
    move,
)
from agent.state.store import utcnow
from connectors.providers.contract import (
    SETTLED_MANDATES,
    CollectionCancelRefused,
    DirectDebitProvider,
    EventKind,
    MandatePayer,
    MandateStatus,
    PlannedDebit,
    Provider,
    ProviderError,
    ProviderEvent,
    direct_debit,
)

log = logging.getLogger("ledgerlink.directdebit")

RANK = {COLLECTION_CREATING: 0, COLLECTION_REFUSED: 0, "pending_customer_approval": 1, "pending_submission": 2,
        "submitted": 3, "confirmed": 4, "paid_out": 5, "cancelled": 6, "customer_approval_denied": 6, "failed": 6,
        "charged_back": 7}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass(frozen=True)
class MandateView:
    id: str
    account: str
    payer_key: str
    status: str
    raw_status: str
    setup_ref: str
    provider_ref: str | None
    url: str | None
    created_at: dt.datetime
    existing: bool = False

    @classmethod
    def from_row(cls, row: Row, existing: bool = False) -> MandateView:
        return cls(**{n: row[n] for n in cls.__dataclass_fields__ if n != "existing"}, existing=existing)


@dataclass(frozen=True)
class CollectionView:
    id: str
    kind: str
    status: str
    amount: Decimal
    currency: str
    charge_date: dt.date | None
    statement_key: str
    matter_key: str
    payer_key: str
    account: str
    provider_ref: str | None
    current: bool
    note: str | None
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: Row) -> CollectionView:
        names = cls.__dataclass_fields__.keys() - {"current"}
        return cls(**{n: row[n] for n in names}, current=row["current_key"] is not None)


@dataclass(frozen=True)
class Payable:
    """The scenario figures for one statement: brought forward + current invoice = payable; auto = what to take."""

    statement: Statement
    brought_forward: Decimal
    invoice: Decimal
    payable: Decimal
    auto: Decimal


@dataclass
class ScheduleResult:
    created: list[str] = field(default_factory=list)
    recomputed: list[str] = field(default_factory=list)  # old collection ids cancelled for a new amount
    kept: list[str] = field(default_factory=list)  # should change but the provider no longer allows it




# ------------------------------------------------------------------------------------------- mandates


class DirectDebit:
    """The Direct Debit engine: its state store, settings and providers are handed in by the composition root."""

    def __init__(self, settings: Settings, store: StateStore, providers: Callable[[str | None], Provider], *,
                 retry_initial: float = 0.5, today: Callable[[], dt.date] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.providers = providers
        self.retry_initial = retry_initial
        self._today = today or (lambda: dt.datetime.now(settings.zone).date())

    def _provider(self, account: str) -> DirectDebitProvider:
        provider = self.providers(account)
        if not provider.capabilities.direct_debit:
            raise RuleError(f"account {account!r} uses {provider.name}, which offers no Direct Debit")
        return direct_debit(provider)

    def holds_collections(self, account: str) -> bool:
        """Whether the account's provider holds a collection until its charge date (contract.Capabilities):
        only then are statements collected automatically, or by Pay Now; a card saved for a plan (Stripe) is
        charged when the collection is made, so it is used for the plan's instalments on their dates alone."""
        return self.providers(account).capabilities.holds_collections

    def setup_mandate(self, actor: Actor, payer_key: str, account: str | None = None, *,
                      schedule: tuple[PlannedDebit, ...] = (), plan_id: str | None = None) -> MandateView:
        """Send the payer the provider's mandate flow; a payer with a mandate that is not over gets it back.
        ``schedule``: the payment plan it is for, shown where the provider can (a flow handed back keeps what it
        showed), and ``plan_id`` that plan, whose end ends a new setup too (``cancel_mandate``). Audited as
        mandate.setup on the payer (an existing mandate handed back changes nothing and is not)."""
        with audit.attempt(self.store, actor, "mandate.setup", "payer", payer_key) as act:
            return self._setup_mandate(payer_key, account, schedule, plan_id, act)

    def _setup_mandate(self, payer_key: str, account: str | None, schedule: tuple[PlannedDebit, ...],
                       plan_id: str | None, act: audit.Attempt) -> MandateView:
        acct = self.settings.account(account)
        with self.store.read() as conn:
            payer = get_payer(conn, payer_key)
            if payer is None or payer.deleted:
                raise DataError(f"unknown payer {payer_key!r} (has a sync run?)")
            existing = conn.execute(select(mandates).where(
                mandates.c.payer_key == payer.key, mandates.c.account == acct.name,
                mandates.c.status.not_in([s.value for s in SETTLED_MANDATES])).order_by(mandates.c.created_at.desc())
            ).mappings().first()
        if existing is not None:
            act.unchanged()
            return MandateView.from_row(existing, existing=True)
        if not payer.email:
            raise RuleError(f"payer {payer.name!r} has no email address; the mandate flow is sent by email")
        mandate_id = new_id("mdt")
        provider = self._provider(acct.name)
        setup = call(provider.setup_mandate,
                     MandatePayer(payer.key, payer.name, payer.email, f"dd-{mandate_id}", schedule),
                     initial=self.retry_initial)
        state = call(provider.get_mandate, setup.ref, initial=self.retry_initial)
        now = utcnow()
        with self.store.begin() as conn:
            conn.execute(mandates.insert().values(
                id=mandate_id, account=acct.name, provider=acct.provider, payer_key=payer.key, setup_ref=setup.ref,
                provider_ref=state.ref if state.ref != setup.ref else None, url=setup.url,
                status=state.status.value, raw_status=state.raw_status, idempotency_key=f"dd-{mandate_id}",
                created_at=now, updated_at=now, plan_id=plan_id))
            row = conn.execute(select(mandates).where(mandates.c.id == mandate_id)).mappings().one()
            act.record(conn, after={"mandate": mandate_id, "account": acct.name, "status": row["status"]})
            return MandateView.from_row(row)

    def cancel_mandate(self, actor: Actor, mandate_id: str, reason: str = "cancelled by staff") -> MandateView:
        """End the mandate at the provider, or its setup if the payer has not finished it: the provider cancels
        its collections not yet at the bank, and their events close them here as when the payer cancels. Audited
        as mandate.cancel, a refusal too."""
        with audit.attempt(self.store, actor, "mandate.cancel", "mandate", mandate_id) as act:
            with self.store.read() as conn:
                row = conn.execute(select(mandates).where(mandates.c.id == mandate_id)).mappings().first()
            if row is None:
                raise NotFound(f"no mandate {mandate_id!r}: 'ledgerlink mandates list' shows the mandates there are")
            if row["status"] in {s.value for s in SETTLED_MANDATES}:
                raise RuleError(f"mandate {mandate_id} is {row['status']}; nothing to cancel")
            state = call(self._provider(row["account"]).cancel_mandate, row["provider_ref"] or row["setup_ref"],
                         initial=self.retry_initial)
            with self.store.begin() as conn:
                conn.execute(update(mandates).where(mandates.c.id == mandate_id).values(
                    status=state.status.value, raw_status=state.raw_status, updated_at=utcnow(),
                    provider_ref=state.ref if state.ref != row["setup_ref"] else row["provider_ref"]))
                act.record(conn, before={"status": row["status"]}, after={"status": state.status.value,
                                                                          "reason": reason})
                return MandateView.from_row(conn.execute(select(mandates).where(
                    mandates.c.id == mandate_id)).mappings().one())

    def list_mandates(self, payer_key: str | None = None) -> list[MandateView]:
        query = select(mandates).order_by(mandates.c.created_at.desc())
        if payer_key:
            query = query.where(mandates.c.payer_key == payer_key)
        with self.store.read() as conn:
            return [MandateView.from_row(r) for r in conn.execute(query).mappings()]

    def refresh_mandates(self) -> int:
        """Ask the provider for mandates not yet settled (events do this too; this catches a missed setup)."""
        with self.store.read() as conn:
            rows = conn.execute(select(mandates).where(
                mandates.c.status.not_in([s.value for s in SETTLED_MANDATES]))).mappings().all()
        changed = 0
        for row in rows:
            state = call(self._provider(row["account"]).get_mandate, row["provider_ref"] or row["setup_ref"],
                         initial=self.retry_initial)
            if (state.status.value, state.raw_status) != (row["status"], row["raw_status"]):
                with self.store.begin() as conn:
                    conn.execute(update(mandates).where(mandates.c.id == row["id"]).values(
                        status=state.status.value, raw_status=state.raw_status, updated_at=utcnow(),
                        provider_ref=state.ref if state.ref != row["setup_ref"] else row["provider_ref"]))
                changed += 1
        return changed


    # ------------------------------------------------------------------------------------------- events

    def _create(self, mandate: Row, st: Statement, amount: Decimal, kind: str,
                charge_date: dt.date | None, note: str | None = None, act: audit.Attempt | None = None) -> str | None:
        """Reserve the statement's current collection, then create it at the provider. None: someone else has it."""
        if not self.holds_collections(mandate["account"]):
            raise RuleError(f"account {mandate['account']!r} charges a saved card when a collection is made and "
                            "cannot hold one until a due date; its cards pay payment-plan instalments only, never "
                            "a statement collected automatically or by Pay Now")
        try:
            with self.store.begin() as conn:
                collection_id = reserve_collection(conn, mandate, st, amount, kind, charge_date, note=note)
                if act is not None:
                    act.target("collection", collection_id)
                    act.record(conn, after={"statement": st.key, "amount": amount, "currency": st.currency,
                                            "kind": kind, "note": note})
        except IntegrityError:
            return None
        self.submit(collection_id)
        return collection_id

    def submit(self, collection_id: str) -> None:
        """Create (or, after a crash, find again under the same key) the reserved collection at the provider."""
        with self.store.read() as conn:
            row = conn.execute(select(collections).where(collections.c.id == collection_id)).mappings().one()
            mandate = conn.execute(select(mandates).where(mandates.c.id == row["mandate_id"])).mappings().one()
            st = get_statement(conn, row["statement_key"])
        description = f"{self.settings.service_name} {st.number if st else row['statement_key']}"
        provider = self._provider(row["account"])
        try:
            made = call(provider.create_collection, mandate["provider_ref"] or mandate["setup_ref"], row["amount"],
                        row["currency"], row["charge_date"], description, row["idempotency_key"],
                        initial=self.retry_initial)
        except TransientError:
            raise
        except ProviderError as exc:
            with self.store.begin() as conn:
                move(conn, collections, COLLECTION_REFUSED, collections.c.id == collection_id,
                     from_=(COLLECTION_CREATING,), note=f"the provider refused it: {exc}", updated_at=utcnow())
            log.warning("collection %s refused by the provider: %s", collection_id, exc)
            return
        with self.store.begin() as conn:
            move(conn, collections, CollectionState(made.status), collections.c.id == collection_id,
                 from_=(COLLECTION_CREATING,), provider_ref=made.ref, charge_date=made.charge_date,
                 updated_at=utcnow())

    def _cancel_at_provider(self, row: Row) -> None:
        """CollectionCancelRefused when it went to the bank meanwhile; the row is then brought up to date."""
        if row["status"] in (COLLECTION_CREATING, COLLECTION_REFUSED) and row["provider_ref"] is None:
            if row["status"] == COLLECTION_CREATING:
                self.submit(row["id"])
                with self.store.read() as conn:
                    row = conn.execute(select(collections).where(collections.c.id == row["id"])).mappings().one()
            if row["provider_ref"] is None:
                return
        try:
            call(self._provider(row["account"]).cancel_collection, row["provider_ref"], initial=self.retry_initial)
        except CollectionCancelRefused as exc:
            if exc.collection is not None and RANK[exc.collection.status.value] > RANK.get(row["status"], 0):
                with self.store.begin() as conn:
                    move(conn, collections, CollectionState(exc.collection.status), collections.c.id == row["id"],
                         updated_at=utcnow())
            raise

    def _close(self, collection_id: str, note: str, *, keep_current: bool = False,
               act: audit.Attempt | None = None) -> None:
        values: dict[str, Any] = {"note": note, "updated_at": utcnow()}
        if not keep_current:
            values["current_key"] = None
        with self.store.begin() as conn:
            before = conn.execute(select(collections.c.status, collections.c.amount)
                                  .where(collections.c.id == collection_id)).mappings().one()
            move(conn, collections, CollectionState.CANCELLED, collections.c.id == collection_id, **values)
            if act is not None:
                act.record(conn, before=dict(before), after={"status": CollectionState.CANCELLED, "note": note})

    def schedule_collections(self, today: dt.date | None = None) -> ScheduleResult:
        """The sync job: every payer with an active mandate gets its statements' automatic collections (re)planned."""
        today = today or self._today()
        result = ScheduleResult()
        with self.store.read() as conn:
            active = conn.execute(select(mandates).where(mandates.c.status == MandateStatus.ACTIVE.value)
                                  .order_by(mandates.c.created_at)).mappings().all()
            stuck = conn.execute(select(collections.c.id).where(
                collections.c.status == COLLECTION_CREATING)).scalars().all()
        for collection_id in stuck:  # cut off by a crash: finish under the same idempotency key
            self.submit(collection_id)
        held = [m for m in active if self.holds_collections(m["account"])]  # a saved card is for its plan alone
        for mandate in {m["payer_key"]: m for m in held}.values():  # the newest active mandate per payer
            self._schedule_payer(mandate, today, result)
        return result

    def _schedule_payer(self, mandate: Row, today: dt.date, result: ScheduleResult) -> None:
        with self.store.read() as conn:
            planned = plan(conn, mandate["payer_key"], today)
            open_keys = {p.statement.key for p, _ in planned} | {st.key for st, _ in _payer_statements(
                conn, mandate["payer_key"])}
            gone = [r for k, r in _currents(conn, mandate["payer_key"]).items()
                    if k not in open_keys and _recomputable(r, None, today)]
            in_plans = set(conn.execute(select(plan_statements.c.statement_key).join(
                plans, plans.c.id == plan_statements.c.plan_id).where(plans.c.status.in_(PLAN_HOLDING))).scalars())
        for row in gone:  # statement paid elsewhere, void or deleted: nothing left to collect
            self._recompute(mandate, row, None, Decimal(0), result)
        for payable, current in planned:
            if payable.statement.key in in_plans:  # a payment plan collects it, instalment by instalment
                continue
            if current is None:
                if payable.auto > 0:
                    made = self._create(mandate, payable.statement, payable.auto, "auto", payable.statement.due_date)
                    if made:
                        result.created.append(made)
            elif current["amount"] != payable.auto:
                self._recompute(mandate, current, payable.statement, payable.auto, result)

    def _recompute(self, mandate: Row, row: Row, st: Statement | None,
                   amount: Decimal, result: ScheduleResult) -> None:
        try:
            self._cancel_at_provider(row)
        except CollectionCancelRefused as exc:
            log.warning("collection %s should now be %s but stands: %s", row["id"], amount, exc)
            result.kept.append(row["id"])
            return
        self._close(row["id"], f"recomputed to {amount} before the due date")
        result.recomputed.append(row["id"])
        if st is not None and amount > 0:
            made = self._create(mandate, st, amount, "auto", st.due_date, note=f"replaces {row['id']}")
            if made:
                result.created.append(made)

    def request_manual(self, actor: Actor, statement: str, amount: Decimal,
                       today: dt.date | None = None) -> CollectionView:
        """Pay Now: the payer's own amount replaces the statement's automatic collection, before the due date only.
        Audited as collection.request when the collection is reserved (a refusal: on the statement)."""
        with audit.attempt(self.store, actor, "collection.request", "statement", statement,
                           before={"amount": amount}) as act:
            return self._request_manual(statement, amount, today or self._today(), act)

    def _request_manual(self, statement: str, amount: Decimal, today: dt.date, act: audit.Attempt) -> CollectionView:
        with self.store.read() as conn:
            st = _find_statement(conn, statement)
            mandate = _active_mandate(conn, get_matter(conn, st.matter_key).payer_key)
            if mandate is None:
                raise RuleError(f"statement {st.number}: the payer has no active Direct Debit mandate")
            if not self.holds_collections(mandate["account"]):
                raise RuleError(f"statement {st.number}: the payer's saved card at account {mandate['account']!r} "
                                "is for a payment plan's instalments only; send a payment link instead")
            if st.due_date is not None and today >= st.due_date:
                raise RuleError(f"statement {st.number} was due on {st.due_date}: a manual Direct Debit must be "
                                "requested before the due date. Send a payment link instead")
            figures = payable_for(conn, st)
            current = conn.execute(select(collections).where(collections.c.current_key == st.key)).mappings().first()
        if figures.payable <= 0:
            raise RuleError(f"statement {st.number}: the payer is in credit (payable {figures.payable} {st.currency}); "
                            "there is nothing to collect")
        amount = to_decimal(amount, field="amount")
        try:
            amount = check_decimals(amount, st.currency)
        except DataError as exc:
            raise RuleError(str(exc)) from None
        if not Decimal(0) < amount <= figures.payable:
            raise RuleError(f"the amount must be more than zero and at most the payable {figures.payable} "
                            f"{st.currency}, not {amount}")
        if current is not None:
            try:
                self._cancel_at_provider(current)
            except CollectionCancelRefused as exc:
                raise RuleError(f"statement {st.number}: collection {current['id']} has gone to the bank and can no "
                                f"longer be replaced ({exc})") from None
            self._close(current["id"], "replaced by the payer's manual Direct Debit")
        made = self._create(mandate, st, amount, "manual", None,
                            note=f"Pay Now; replaces {current['id']}" if current is not None else "Pay Now", act=act)
        if made is None:
            raise RuleError(f"statement {st.number} got another collection at the same moment; try again")
        return self.get_collection(made)

    def cancel_collection(self, actor: Actor, collection_id: str) -> CollectionView:
        """Staff cancel, while the provider allows it. The statement keeps this (cancelled) collection, so the scheduler
        does not collect it again by itself. Audited as collection.cancel, a refusal too."""
        with audit.attempt(self.store, actor, "collection.cancel", "collection", collection_id) as act:
            return self._cancel_collection(collection_id, act)

    def _cancel_collection(self, collection_id: str, act: audit.Attempt) -> CollectionView:
        row = self._get(collection_id)
        if row["status"] not in (*COLLECTION_LIVE, COLLECTION_REFUSED):
            raise RuleError(f"collection {collection_id} is {row['status']}; nothing to cancel")
        try:
            self._cancel_at_provider(row)
        except CollectionCancelRefused as exc:
            raise RuleError(f"the provider would not cancel collection {collection_id}: {exc}") from None
        self._close(collection_id, "cancelled by staff", keep_current=True, act=act)
        return self.get_collection(collection_id)

    def _get(self, collection_id: str) -> Row:
        with self.store.read() as conn:
            row = conn.execute(select(collections).where(collections.c.id == collection_id)).mappings().first()
        if row is None:
            raise DataError(f"unknown collection {collection_id!r}")
        return row

    def get_collection(self, collection_id: str) -> CollectionView:
        return CollectionView.from_row(self._get(collection_id))

    def list_collections(self, matter: str | None = None, pending: bool = False) -> list[CollectionView]:
        """Newest first; ``pending`` keeps those at the provider and not yet paid (the Pay-Now link default's input)."""
        query = select(collections).order_by(collections.c.created_at.desc())
        if pending:
            query = query.where(collections.c.status.in_(COLLECTION_PENDING))
        with self.store.read() as conn:
            if matter:
                query = query.where(collections.c.matter_key == get_matter(conn, matter).key)
            return [CollectionView.from_row(r) for r in conn.execute(query).mappings()]


def _supersedes(conn: Connection, account: str, event: ProviderEvent, current: str) -> bool:
    """Whether the event's status replaces the collection's: the later by the provider's time wins.

    A retried collection goes failed -> pending_submission (resubmission_requested) -> submitted -> confirmed
    (gocardless_pro PaymentsService.retry), so no ladder is right in every order. The time of the status we
    hold is the payment's (agent.engine.payments keeps it, and runs after this); the ladder breaks ties and
    decides while no time is known.
    """
    new = RANK.get(event.raw_status)
    if new is None:
        return False
    held_at = conn.execute(select(payments.c.status_at).where(
        payments.c.account == account, payments.c.payment_ref == event.payment_ref)).scalar()
    if held_at is None or current in (COLLECTION_CREATING, COLLECTION_REFUSED):
        return new > RANK[current]
    return (event.occurred_at, new) > (held_at, RANK[current])


def apply_event(conn: Connection, account: str, event: ProviderEvent) -> bool:
    """Follow a Direct Debit event (inside agent.engine.payments' transaction). True: nothing more to do with it."""
    if event.kind is EventKind.MANDATE_CHANGED:
        refs = [r for r in (event.mandate_ref, event.link_ref) if r]
        try:
            status = MandateStatus(event.raw_status)
        except ValueError:
            log.warning("mandate event %s has an unknown status %r", event.event_id, event.raw_status)
            return True
        conn.execute(update(mandates).where(
            mandates.c.account == account,
            mandates.c.provider_ref.in_(refs) | mandates.c.setup_ref.in_(refs),
        ).values(provider_ref=event.mandate_ref, status=status.value, raw_status=event.raw_status,
                 updated_at=utcnow()))
        return True
    row = conn.execute(select(collections.c.id, collections.c.status).where(
        collections.c.account == account, collections.c.provider_ref == event.payment_ref)).first()
    if row is not None and _supersedes(conn, account, event, row.status):
        move(conn, collections, CollectionState(event.raw_status), collections.c.id == row.id, updated_at=utcnow())
    return event.kind is EventKind.COLLECTION_CANCELLED


# ------------------------------------------------------------------------------------------- amounts


def reserve_collection(conn: Connection, mandate: Row, st: Statement, amount: Decimal, kind: str,
                       charge_date: dt.date | None, *, note: str | None = None, current: bool = True) -> str:
    """Insert a collection as ``creating`` in the caller's transaction; ``DirectDebit.submit`` then makes it at the
    provider under its idempotency key. ``current``: it is the statement's one collection (the unique index refuses
    a second); a plan's instalment is not, since a plan's own figures keep it from collecting twice."""
    collection_id = new_id("col")
    now = utcnow()
    conn.execute(collections.insert().values(
        id=collection_id, account=mandate["account"], provider=mandate["provider"], mandate_id=mandate["id"],
        payer_key=mandate["payer_key"], matter_key=st.matter_key, statement_key=st.key, kind=kind, amount=amount,
        currency=st.currency, charge_date=charge_date, status=COLLECTION_CREATING,
        current_key=st.key if current else None, note=note, idempotency_key=f"dd-{collection_id}",
        created_at=now, updated_at=now))
    return collection_id


def _payer_statements(conn: Connection, payer_key: str | None, fallback: Statement | None = None
                      ) -> list[tuple[Statement, Decimal]]:
    """The payer's open statements, oldest first, each with what it still owes before collections (what is owed,
    agent.state.owed: a payment taken by link but not yet in the books is not collected again)."""
    owed = payer_statements(conn, payer_key) if payer_key else statements_owed(conn, [fallback] if fallback else [])
    return [(o.statement, o.figures.before_collections) for o in owed]


def _currents(conn: Connection, payer_key: str) -> dict[str, Row]:
    rows = conn.execute(select(collections).where(
        collections.c.payer_key == payer_key, collections.c.current_key.is_not(None))).mappings()
    return {r["statement_key"]: r for r in rows}


def _recomputable(row: Row, st: Statement | None, today: dt.date) -> bool:
    due = st.due_date if st else row["charge_date"]
    return row["kind"] == "auto" and row["status"] in COLLECTION_CANCELLABLE and due is not None and due > today


def plan(conn: Connection, payer_key: str, today: dt.date) -> list[tuple[Payable, Row | None]]:
    """What each statement of the payer should have collected automatically, with its current collection.

    Only statements that are not yet due (or whose automatic collection may still change) are planned; the rest,
    and collections that can no longer change, are fixed and counted as already on their way.
    """
    statements = _payer_statements(conn, payer_key)
    currents = _currents(conn, payer_key)
    total = sum((owes for _, owes in statements), Decimal(0))
    by_key = {st.key: st for st, _ in statements}
    fixed = sum((r["amount"] for k, r in currents.items()
                 if r["status"] in COLLECTION_LIVE and not _recomputable(r, by_key.get(k), today)), Decimal(0))
    todo = [(st, owes, currents.get(st.key)) for st, owes in statements
            if (st.key in currents and _recomputable(currents[st.key], st, today))
            or (st.key not in currents and st.due_date is not None and st.due_date > today)]
    # Statements still to plan count as collected in full until their turn, so a credit is used once, by the
    # oldest invoice, and a newer invoice never lowers an older one's collection.
    on_the_way = fixed + sum((max(owes, Decimal(0)) for _, owes, _ in todo), Decimal(0))
    out: list[tuple[Payable, Row | None]] = []
    for st, owes, row in todo:
        on_the_way -= max(owes, Decimal(0))
        brought_forward = total - owes - on_the_way
        payable = brought_forward + owes
        auto = max(Decimal(0), min(owes, payable))
        on_the_way += auto
        out.append((Payable(st, brought_forward, owes, payable, auto), row))
    return out


def payable_for(conn: Connection, statement: Statement) -> Payable:
    """The figures for a manual request: everything but this statement's own collection is on its way."""
    payer_key = get_matter(conn, statement.matter_key).payer_key
    statements = _payer_statements(conn, payer_key, fallback=statement)
    currents = _currents(conn, payer_key) if payer_key else {}
    others = sum((owes for st, owes in statements if st.key != statement.key), Decimal(0))
    invoice = next((owes for st, owes in statements if st.key == statement.key), None)
    if invoice is None:  # not among the payer's open statements (quarantined, say): its own figure
        invoice = statements_owed(conn, [statement])[0].figures.before_collections
    on_the_way = sum((r["amount"] for k, r in currents.items()
                      if k != statement.key and r["status"] in COLLECTION_LIVE), Decimal(0))
    payable = others - on_the_way + invoice
    return Payable(statement, others - on_the_way, invoice, payable, max(Decimal(0), min(invoice, payable)))


def _active_mandate(conn: Connection, payer_key: str | None) -> Row | None:
    if payer_key is None:
        return None
    return conn.execute(select(mandates).where(
        mandates.c.payer_key == payer_key, mandates.c.status == MandateStatus.ACTIVE.value)
        .order_by(mandates.c.created_at.desc())).mappings().first()


# ------------------------------------------------------------------------------------------- collecting



def _find_statement(conn: Connection, ref: str) -> Statement:
    st = get_statement(conn, ref)
    if st is None:
        key = conn.execute(select(firm_statements.c.key).where(firm_statements.c.number == ref)).scalar()
        st = get_statement(conn, key) if key else None
    if st is None or st.deleted:
        raise DataError(f"unknown statement {ref!r}: no statement with that number or key (has a sync run?)")
    return st

