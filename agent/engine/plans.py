"""Payment plans: a debt paid in instalments on the payer's Direct Debit mandate.

A plan is made for a matter's open statements (or some of them): a total (default: what is owed), a number of
instalments or an instalment amount, a frequency and a first date. The instalments add up to the total to the
penny, the remainder on the last, and are shown before the plan is made (``preview``).

Each instalment waits as ``scheduled`` until it is ``LEAD_DAYS`` from its date; ``submit_due`` (a service job)
then makes it a Direct Debit collection on that date through the Direct Debit engine, so it is created at the
provider once under its idempotency key, its result arrives on the provider's event feed like any collection's,
and its payment is posted exactly once by the outbox, allocated to the plan's statements oldest first; a failed
or charged-back instalment is reversed there. Before each pass the plan follows the debt: what the statements
still owe (agent.state.owed) caps what is left to collect, so an instalment is reduced or cancelled when the debt
was paid elsewhere or lowered, and a voided debt ends the plan. The instalments still to come count as pending
collections in what is owed, so no link or other collection asks for the same money.

Where the provider charges when a collection is made instead of holding it to a date (a card saved at Stripe:
``Capabilities.holds_collections`` False), an instalment is submitted on its date, not LEAD_DAYS ahead,
with no charge date: the card is charged that day.

Instalments are collected one by one as payments with a charge date, not as a GoCardless instalment schedule:
a schedule's payments are fixed when it is made, and a plan must be able to collect less when the debt shrinks.

A payer without an active mandate gets one only when the clerk asks (``PlanRequest.set_up_mandate``): the plan is
made ``awaiting_mandate`` on the mandate setup the Direct Debit engine starts (or a pending one it hands back),
whose page shows the payer the schedule they agree to where the provider can show it. Its instalments hold the
money as an active plan's do. The job starts the plan once the mandate is active, moving every date later, spacing
kept, if the first would now come with less notice than the provider's lead (LEAD_DAYS where it holds a
collection to its date, none for a card charged at once); it cancels the plan if the setup fails, is cancelled or
expires, as staff can at any time.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from typing import Literal

from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError

from agent.core.errors import NotFound, RuleError, TransientError
from agent.core.model import Actor, Payer, Statement, check_decimals, exponent
from agent.engine.directdebit import DirectDebit, new_id, reserve_collection
from agent.home.settings import Settings
from agent.state import StateStore, audit
from agent.state.mirror import get_matter, get_payer, open_statements, statement_from_row
from agent.state.owed import payer_statements, statements_owed
from agent.state.schema import (
    Row,
    collections,
    firm_statements,
    mandates,
    plan_instalments,
    plan_statements,
    plans,
)
from agent.state.statuses import (
    COLLECTION_CANCELLABLE,
    COLLECTION_LIVE,
    COLLECTION_PAID,
    PLAN_HOLDING,
    InstalmentState,
    PlanState,
    move,
)
from agent.state.store import utcnow
from connectors.providers.contract import (
    SETTLED_MANDATES,
    CollectionCancelRefused,
    MandateStatus,
    PlannedDebit,
    ProviderError,
)

__all__ = ["FREQUENCIES", "LEAD_DAYS", "Instalment", "PlanRequest", "PlanView", "Plans", "instalments"]

log = logging.getLogger("ledgerlink.plans")
Frequency = Literal["weekly", "fortnightly", "monthly"]
FREQUENCIES: tuple[Frequency, ...] = ("weekly", "fortnightly", "monthly")
LEAD_DAYS = 5  # an instalment becomes a collection this many days before its date (GoCardless needs ~3 working)
SETUP_DAYS = 7  # a plan awaiting its mandate lapses when the payer has not set it up in this many days
MAX_INSTALMENTS = 60
SYSTEM = Actor("system", "plans")


def _step(first: dt.date, n: int, frequency: Frequency) -> dt.date:
    """The n-th date (0: the first) of a plan; a monthly plan on the 31st falls on each month's last day."""
    if frequency == "weekly":
        return first + dt.timedelta(weeks=n)
    if frequency == "fortnightly":
        return first + dt.timedelta(weeks=2 * n)
    month = first.month - 1 + n
    year, month = first.year + month // 12, month % 12 + 1
    return dt.date(year, month, min(first.day, calendar.monthrange(year, month)[1]))


def instalments(total: Decimal, currency: str, *, count: int | None = None, amount: Decimal | None = None,
                frequency: Frequency = "monthly", first: dt.date) -> list[tuple[dt.date, Decimal]]:
    """The instalments of a plan: equal amounts in whole minor units, the remainder on the last, adding up to
    ``total`` to the penny. Give the number of instalments or the instalment amount."""
    if (count is None) == (amount is None):
        raise RuleError("give the number of instalments or the instalment amount, not both")
    quantum = Decimal(1).scaleb(-exponent(currency))
    total = check_decimals(total, currency)
    if total <= 0:
        raise RuleError(f"a plan's total must be above 0 {currency}")
    if amount is not None:
        amount = check_decimals(amount, currency)
        if not 0 < amount < total:
            raise RuleError(f"the instalment amount must be above 0 and less than the total, {total} {currency} "
                            "(a plan has at least 2 instalments)")
        count = int((total / amount).to_integral_value(rounding=ROUND_CEILING))  # the last takes what is left
        each = amount
    else:
        assert count is not None
        if not 2 <= count <= MAX_INSTALMENTS:
            raise RuleError(f"a plan has 2 to {MAX_INSTALMENTS} instalments, not {count}")
        each = (total / count).quantize(quantum, rounding=ROUND_DOWN)
        if each <= 0:
            raise RuleError(f"{total} {currency} cannot be split into {count} instalments of at least {quantum}")
    if count > MAX_INSTALMENTS:
        raise RuleError(f"{total} {currency} in instalments of {amount} would take {count}; at most "
                        f"{MAX_INSTALMENTS}")
    amounts = [each] * (count - 1) + [total - each * (count - 1)]
    return [(_step(first, n, frequency), a) for n, a in enumerate(amounts)]


@dataclass(frozen=True)
class PlanRequest:
    matter: str
    count: int | None = None
    amount: Decimal | None = None  # each instalment
    total: Decimal | None = None  # default: what is owed
    frequency: Frequency = "monthly"
    first: dt.date | None = None  # default: LEAD_DAYS from today
    statements: tuple[str, ...] = ()  # numbers or keys; default: the matter's open statements
    # a payer without an active office mandate: set one up for the plan (else refused, so no clerk is surprised)
    set_up_mandate: bool = False


@dataclass(frozen=True)
class Instalment:
    seq: int
    due_on: dt.date
    amount: Decimal
    state: str  # scheduled or cancelled, else the collection's status once submitted
    collection_id: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class PlanView:
    id: str | None  # None for a preview
    matter_key: str
    matter_number: str
    payer_name: str | None
    account: str
    currency: str
    total: Decimal
    frequency: str
    status: str
    statements: tuple[str, ...]  # numbers
    instalments: tuple[Instalment, ...]
    owed: Decimal  # a preview: what the statements owe; a plan: what they still owe less its instalments in progress
    note: str | None = None
    needs_mandate: bool = False  # awaiting the payer's mandate (a preview: making it sets one up)
    setup_url: str | None = None  # while awaiting: the page where the payer sees the schedule and authorises it

    @property
    def paid(self) -> int:
        """How many instalments were paid (confirmed, or paid out since)."""
        return sum(1 for i in self.instalments if i.state in COLLECTION_PAID)


@dataclass(frozen=True)
class _Checked:
    matter_key: str
    matter_number: str
    payer_key: str
    payer_name: str | None
    mandate: Row | None  # None: the plan sets one up, on ``account``
    account: str
    statements: list[Statement]
    owed: Decimal
    total: Decimal
    schedule: list[tuple[dt.date, Decimal]]


def _chosen(open_: list[Statement], asked: tuple[str, ...], number: str) -> list[Statement]:
    """The statements a plan is for: those asked for by number or key, else all the matter's open ones."""
    chosen = [s for s in open_ if s.number in asked or s.key in asked] if asked else open_
    missing = set(asked) - {s.number for s in chosen} - {s.key for s in chosen}
    if missing:
        raise RuleError(f"not an open statement of matter {number}: {', '.join(sorted(missing))}")
    if not chosen:
        raise RuleError(f"matter {number} has no open statements to pay in instalments")
    return chosen


class _Taken(Exception):
    """Another process submitted the instalment first."""


class Plans:
    """The payment-plan engine; the Direct Debit engine makes and cancels its collections."""

    def __init__(self, settings: Settings, store: StateStore, directdebit: DirectDebit, *,
                 today: Callable[[], dt.date] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.directdebit = directdebit
        self._today = today or (lambda: dt.datetime.now(settings.zone).date())

    # ------------------------------------------------------------------------------------------- making one

    def _check(self, conn: Connection, request: PlanRequest, today: dt.date) -> _Checked:
        matter = get_matter(conn, request.matter)
        if matter.status != "open":
            raise RuleError(f"matter {matter.number} is closed; a plan is only for an open matter")
        held = conn.execute(select(plans.c.id, plans.c.status).where(plans.c.active_key == matter.key)).first()
        if held is not None:
            which = "an active plan" if held.status == PlanState.ACTIVE else "a plan awaiting its mandate"
            raise RuleError(f"matter {matter.number} already has {which}, {held.id}; cancel it first "
                            f"('ledgerlink plans cancel {held.id}')")
        payer, mandate, account = self._payer(conn, matter.payer_key, matter.number, request.set_up_mandate)
        chosen = _chosen(open_statements(conn, matter.key), request.statements, matter.number)
        credit = sum((o.figures.before_collections for o in payer_statements(conn, payer.key)), Decimal(0))
        if credit <= 0:
            raise RuleError(f"{payer.name} owes nothing overall ({credit} {chosen[0].currency}): a payer in credit "
                            "is never collected from (Direct Debit scenario 3)")
        owed = sum((o.figures.amount for o in statements_owed(conn, chosen)), Decimal(0))
        total = owed if request.total is None else check_decimals(request.total, chosen[0].currency)
        if owed <= 0:
            raise RuleError(f"the statements of matter {matter.number} owe nothing once money on its way is counted")
        if total > owed:
            raise RuleError(f"a plan of {total} {chosen[0].currency} is more than the {owed} the statements owe")
        first = request.first or today + dt.timedelta(days=LEAD_DAYS)
        if first < today:
            raise RuleError(f"the first instalment's date {first} is in the past")
        schedule = instalments(total, chosen[0].currency, count=request.count, amount=request.amount,
                               frequency=request.frequency, first=first)
        return _Checked(matter.key, matter.number, payer.key, payer.name, mandate, account, chosen, owed, total,
                        schedule)

    def _payer(self, conn: Connection, payer_key: str | None, number: str,
               set_up: bool) -> tuple[Payer, Row | None, str]:
        """The matter's payer, with an email and an active mandate on an office account, and that account; with
        ``set_up`` and no such mandate, no mandate and the office account one is set up on."""
        payer = get_payer(conn, payer_key)
        if payer is None:
            raise RuleError(f"matter {number} has no payer to collect from")
        if not payer.email:
            raise RuleError(f"{payer.name} has no email address saved; the payer is told of each instalment by "
                            "email, so add one in the matter system first")
        active = conn.execute(select(mandates).where(
            mandates.c.payer_key == payer.key, mandates.c.status == MandateStatus.ACTIVE.value)
            .order_by(mandates.c.created_at.desc())).mappings().all()
        office = [m for m in active if self._kind(m["account"]) != "trust"]
        if office:
            return payer, office[0], office[0]["account"]
        if set_up:
            return payer, None, self._setup_account(conn, payer)
        if not active:
            raise RuleError(f"{payer.name} has no active Direct Debit mandate; make the plan with its mandate setup "
                            "(--set-up-mandate: the payer gets one page to see the instalments and authorise the "
                            f"Direct Debit), or set one up first ('ledgerlink mandates setup --payer {payer.key}') and "
                            "wait for the payer to finish it")
        raise RuleError(f"{payer.name}'s mandate is on account {active[0]['account']!r}, which holds client "
                        "money and never pays an office bill; a plan collects office bills, so set up a mandate "
                        "on an operating account (--set-up-mandate does, with the plan)")

    def _setup_account(self, conn: Connection, payer: Payer) -> str:
        """Where a plan's mandate is set up: the account of the payer's newest office mandate still being set up
        (handed back by the Direct Debit engine), else the default account, never one holding client money."""
        pending = conn.execute(select(mandates.c.account).where(
            mandates.c.payer_key == payer.key, mandates.c.status.not_in([s.value for s in SETTLED_MANDATES]))
            .order_by(mandates.c.created_at.desc())).scalars().all()
        office = [a for a in pending if self._kind(a) != "trust"]
        if office:
            return str(office[0])
        default = self.settings.account(None)
        if default.kind == "trust":
            raise RuleError(f"the default account {default.name!r} holds client money and a plan collects office "
                            f"bills; set up {payer.name}'s mandate on an operating account first ('ledgerlink mandates "
                            f"setup --payer {payer.key} --account NAME')")
        return default.name

    def _kind(self, account: str) -> str | None:
        known = self.settings.accounts.get(account)
        return None if known is None else known.kind

    def preview(self, request: PlanRequest) -> PlanView:
        """What ``create`` would make, changing nothing."""
        with self.store.read() as conn:
            c = self._check(conn, request, self._today())
        return PlanView(None, c.matter_key, c.matter_number, c.payer_name, c.account,
                        c.statements[0].currency, c.total, request.frequency, "preview",
                        tuple(s.number for s in c.statements),
                        tuple(Instalment(n, d, a, InstalmentState.SCHEDULED) for n, (d, a) in
                              enumerate(c.schedule, start=1)), c.owed, needs_mandate=c.mandate is None)

    def create(self, actor: Actor, request: PlanRequest) -> PlanView:
        """Make the plan (audited as plan.create); the matter's automatic collections it replaces are cancelled
        first, and instalments already within LEAD_DAYS are submitted at once. Without an active mandate (and
        asked to) the payer's mandate setup is started first, showing the schedule, and the plan awaits it: its
        view's ``setup_url`` is the page to send the payer."""
        today = self._today()
        with self.store.read() as conn:
            checked = self._check(conn, request, today)
        with audit.attempt(self.store, actor, "plan.create", "matter", checked.matter_key) as act:
            plan_id = new_id("plan")
            if checked.mandate is not None:
                mandate_id, status = checked.mandate["id"], PlanState.ACTIVE
            else:
                mandate_id, status = self._set_up_mandate(actor, checked, plan_id), PlanState.AWAITING_MANDATE
            self._replace_collections(checked)
            now = utcnow()
            try:
                with self.store.begin() as conn:
                    conn.execute(plans.insert().values(
                        id=plan_id, account=checked.account, mandate_id=mandate_id,
                        payer_key=checked.payer_key, matter_key=checked.matter_key,
                        currency=checked.statements[0].currency, total=checked.total, frequency=request.frequency,
                        status=status.value, active_key=checked.matter_key, created_at=now, updated_at=now))
                    conn.execute(plan_statements.insert(), [{"plan_id": plan_id, "statement_key": s.key}
                                                            for s in checked.statements])
                    conn.execute(plan_instalments.insert(), [
                        {"plan_id": plan_id, "seq": n, "amount": a, "due_on": d,
                         "state": InstalmentState.SCHEDULED.value} for n, (d, a) in enumerate(checked.schedule, 1)])
                    act.target("plan", plan_id)
                    act.record(conn, after={"matter": checked.matter_number, "total": checked.total,
                                            "frequency": request.frequency, "status": status.value,
                                            "mandate": mandate_id, "instalments": [
                                                [d.isoformat(), a] for d, a in checked.schedule]})
            except IntegrityError:
                self._end_setup(SYSTEM, mandate_id, plan_id, "the plan it was for was refused: another was made")
                raise RuleError(f"matter {checked.matter_number} already has an active plan; cancel it first "
                                "('ledgerlink plans cancel ID')") from None
        self.submit_due(today)  # a mandate handed back active meanwhile starts the plan at once
        return self.get(plan_id)

    def _set_up_mandate(self, actor: Actor, checked: _Checked, plan_id: str) -> str:
        """The payer's mandate setup for this plan, through the Direct Debit engine (audited there as
        mandate.setup; a pending one is handed back, and is not the plan's to end): its id."""
        currency = checked.statements[0].currency
        mandate = self.directdebit.setup_mandate(actor, checked.payer_key, checked.account, schedule=tuple(
            PlannedDebit(d, a, currency) for d, a in checked.schedule), plan_id=plan_id)
        return mandate.id

    def _end_setup(self, actor: Actor, mandate_id: str, plan_id: str, reason: str) -> str | None:
        """End the mandate setup started for this plan before the plan began: unfinished, so the payer cannot
        authorise a plan that is no more; finished, so a mandate given for this plan's dates alone is not used to
        collect the whole debt automatically. A setup handed back (started for something else) is left alone.
        Returns why it could not be ended, if it could not (the plan ends anyway; the audit trail says so)."""
        with self.store.begin() as conn:
            row = conn.execute(select(mandates.c.plan_id, mandates.c.status).where(
                mandates.c.id == mandate_id)).mappings().one()
            if row["plan_id"] != plan_id or row["status"] in {s.value for s in SETTLED_MANDATES}:
                return None
            heir = conn.execute(select(plans.c.id).where(
                plans.c.mandate_id == mandate_id, plans.c.id != plan_id, plans.c.status.in_(PLAN_HOLDING))
                .order_by(plans.c.created_at)).scalar()
            if heir is not None:  # the payer's plan on another matter waits on the same setup: it is now its
                conn.execute(update(mandates).where(mandates.c.id == mandate_id).values(plan_id=heir))
                return None
        try:
            self.directdebit.cancel_mandate(actor, mandate_id, reason)
        except (ProviderError, RuleError, TransientError) as exc:
            log.warning("plan %s: its mandate setup %s was not ended: %s", plan_id, mandate_id, exc)
            return f"{mandate_id} ({exc})"
        return None

    def _replace_collections(self, checked: _Checked) -> None:
        """The statements' own automatic or manual collections give way to the plan, or the plan is refused."""
        keys = [s.key for s in checked.statements]
        with self.store.read() as conn:
            live = conn.execute(select(collections).where(
                collections.c.statement_key.in_(keys), collections.c.kind != "plan",
                collections.c.status.in_(COLLECTION_LIVE))).mappings().all()
        for row in live:
            if row["status"] not in COLLECTION_CANCELLABLE and row["provider_ref"] is not None:
                raise RuleError(f"collection {row['id']} of {row['amount']} is already with the bank; wait for it "
                                "before making a plan")
        for row in live:
            self.directdebit.cancel_collection(SYSTEM, row["id"])

    # ------------------------------------------------------------------------------------------- the job

    def submit_due(self, today: dt.date | None = None) -> int:
        """Start or cancel each plan awaiting its mandate as the mandate goes, follow each plan's debt and submit
        the instalments now within LEAD_DAYS; returns how many collections were made. Safe to run at any time, in
        any number of processes."""
        today = today or self._today()
        with self.store.read() as conn:
            holding = conn.execute(select(plans.c.id).where(plans.c.status.in_(PLAN_HOLDING))
                                   .order_by(plans.c.created_at)).scalars().all()
        made = 0
        for plan_id in holding:
            self._follow_mandate(plan_id, today)
            self._follow_the_debt(plan_id)
            made += self._submit_plan(plan_id, today)
            self._end_if_done(plan_id)
        return made

    def _lead(self, account: str) -> int:
        """Days before its date an instalment is asked of the provider: LEAD_DAYS where it holds a collection to
        its date, none where a card is charged when asked."""
        return LEAD_DAYS if self.directdebit.holds_collections(account) else 0

    def _follow_mandate(self, plan_id: str, today: dt.date) -> None:
        """A plan awaiting its mandate starts once the mandate is active, and is cancelled once it never can be:
        the setup failed or ended, or the payer has not finished it in SETUP_DAYS (GoCardless's setup page
        lapses after 7 days while its billing request stays pending; the plan would hold the debt for ever)."""
        with self.store.read() as conn:
            row = conn.execute(select(plans.c.status, plans.c.account, plans.c.created_at,
                                      mandates.c.status.label("mandate")).join(
                mandates, mandates.c.id == plans.c.mandate_id).where(plans.c.id == plan_id)).mappings().one()
        if row["status"] != PlanState.AWAITING_MANDATE.value:
            return
        made_on = row["created_at"].astimezone(self.settings.zone).date()
        if row["mandate"] == MandateStatus.PENDING_CUSTOMER_APPROVAL.value and today >= made_on + dt.timedelta(
                days=SETUP_DAYS):
            self.cancel(SYSTEM, plan_id, f"the payer did not set up the Direct Debit within {SETUP_DAYS} days "
                                         f"(asked on {made_on}): nothing was collected")
        elif row["mandate"] == MandateStatus.ACTIVE.value:
            self._start(plan_id, today + dt.timedelta(days=self._lead(row["account"])), today)
        elif row["mandate"] in {s.value for s in SETTLED_MANDATES}:
            reason = f"the payer's Direct Debit setup is {row['mandate']}: nothing was collected"
            with self.store.begin() as conn:
                if move(conn, plans, PlanState.CANCELLED, plans.c.id == plan_id,
                        from_=(PlanState.AWAITING_MANDATE,), active_key=None, note=reason, updated_at=utcnow()):
                    cancelled = move(conn, plan_instalments, InstalmentState.CANCELLED,
                                     plan_instalments.c.plan_id == plan_id, note=reason)
                    audit.record(conn, SYSTEM, "plan.cancel", "plan", plan_id, before={"status": row["status"]},
                                 after={"status": "cancelled", "reason": reason, "instalments_cancelled": cancelled})

    def _start(self, plan_id: str, earliest: dt.date, today: dt.date) -> None:
        """Activate the plan (audited as plan.start); if its first instalment is before ``earliest``, every date
        moves so that the first falls on it, the frequency's spacing kept: never collected early or short of
        notice."""
        with self.store.begin() as conn:
            if not move(conn, plans, PlanState.ACTIVE, plans.c.id == plan_id, from_=(PlanState.AWAITING_MANDATE,),
                        updated_at=utcnow()):
                return  # another process started it
            frequency = conn.execute(select(plans.c.frequency).where(plans.c.id == plan_id)).scalar_one()
            scheduled = conn.execute(select(plan_instalments).where(
                plan_instalments.c.plan_id == plan_id, plan_instalments.c.state == InstalmentState.SCHEDULED.value)
                .order_by(plan_instalments.c.seq)).mappings().all()
            moved = []
            if scheduled and scheduled[0]["due_on"] < earliest:
                for n, row in enumerate(scheduled):
                    due = _step(earliest, n, frequency)
                    conn.execute(update(plan_instalments).where(
                        plan_instalments.c.plan_id == plan_id, plan_instalments.c.seq == row["seq"]).values(
                        due_on=due, note=f"moved from {row['due_on']}: the Direct Debit was set up on {today}"))
                    moved.append([row["seq"], row["due_on"].isoformat(), due.isoformat()])
            audit.record(conn, SYSTEM, "plan.start", "plan", plan_id, before={"status": "awaiting_mandate"},
                         after={"status": "active", "moved": moved})

    def _left_to_collect(self, conn: Connection, plan_id: str) -> Decimal:
        """What the plan's statements still owe before this plan's own instalments, less its live collections."""
        keys = list(conn.execute(select(plan_statements.c.statement_key)
                                 .where(plan_statements.c.plan_id == plan_id)).scalars())
        rows = conn.execute(select(firm_statements).where(firm_statements.c.key.in_(keys))).mappings().all()
        usable = [r for r in rows if r["status"] == "open" and not r["deleted"]]
        owes = sum((max(o.figures.before_collections, Decimal(0)) for o in
                    statements_owed(conn, map(statement_from_row, usable))), Decimal(0))
        live = sum(conn.execute(select(collections.c.amount).join(
            plan_instalments, plan_instalments.c.collection_id == collections.c.id).where(
            plan_instalments.c.plan_id == plan_id, collections.c.status.in_(COLLECTION_LIVE))).scalars(), Decimal(0))
        return owes - live

    def _follow_the_debt(self, plan_id: str) -> None:
        """Never collect more than is owed: trim the scheduled instalments from the last back to what is left."""
        with self.store.begin() as conn:
            left = self._left_to_collect(conn, plan_id)
            scheduled = conn.execute(select(plan_instalments).where(
                plan_instalments.c.plan_id == plan_id, plan_instalments.c.state == InstalmentState.SCHEDULED.value)
                .order_by(plan_instalments.c.seq)).mappings().all()
            planned = sum((r["amount"] for r in scheduled), Decimal(0))
            excess = planned - max(left, Decimal(0))
            changes = []
            for row in reversed(scheduled):
                if excess <= 0:
                    break
                cut = min(excess, row["amount"])
                excess -= cut
                if cut == row["amount"]:
                    move(conn, plan_instalments, InstalmentState.CANCELLED, plan_instalments.c.plan_id == plan_id,
                         plan_instalments.c.seq == row["seq"],
                         note="not needed: the debt was paid or lowered elsewhere")
                else:
                    conn.execute(update(plan_instalments).where(
                        plan_instalments.c.plan_id == plan_id, plan_instalments.c.seq == row["seq"]).values(
                        amount=row["amount"] - cut, note=f"reduced by {cut}: the debt was lowered"))
                changes.append({"seq": row["seq"], "was": row["amount"], "now": row["amount"] - cut})
            if changes:
                audit.record(conn, SYSTEM, "plan.follow_debt", "plan", plan_id, before={"left": left},
                             after={"instalments": changes})

    def _submit_plan(self, plan_id: str, today: dt.date) -> int:
        made = 0
        while True:
            try:
                collection_id = self._reserve_next(plan_id, today)
            except _Taken:  # another process submitted it meanwhile: its transaction made the collection
                continue
            if collection_id is None:
                return made
            self.directdebit.submit(collection_id)  # at the provider, once, under the collection's key
            made += 1

    def _reserve_next(self, plan_id: str, today: dt.date) -> str | None:
        """The next instalment due within LEAD_DAYS and its collection, in one transaction: a crash leaves both
        or neither, and DirectDebit.submit finishes a collection left 'creating'."""
        with self.store.read() as conn:
            account = conn.execute(select(plans.c.account).where(plans.c.id == plan_id)).scalar_one()
        lead = self._lead(account)
        held = lead > 0
        with self.store.begin() as conn:
            plan = conn.execute(select(plans).where(plans.c.id == plan_id)).mappings().one()
            due = conn.execute(select(plan_instalments).where(
                plan_instalments.c.plan_id == plan_id,
                plan_instalments.c.state == InstalmentState.SCHEDULED.value,
                plan_instalments.c.due_on <= today + dt.timedelta(days=lead))
                .order_by(plan_instalments.c.seq).limit(1)).mappings().first()
            if due is None or plan["status"] != PlanState.ACTIVE.value:
                return None
            mandate = conn.execute(select(mandates).where(mandates.c.id == plan["mandate_id"])).mappings().one()
            statement = self._first_owing(conn, plan_id)
            charge = max(due["due_on"], today)
            collection_id = reserve_collection(conn, mandate, statement, due["amount"], "plan",
                                               charge if held else None,
                                               note=f"plan {plan_id}, instalment {due['seq']}", current=False)
            moved = move(conn, plan_instalments, InstalmentState.SUBMITTED, plan_instalments.c.plan_id == plan_id,
                         plan_instalments.c.seq == due["seq"], from_=(InstalmentState.SCHEDULED,),
                         collection_id=collection_id)
            if moved != 1:
                raise _Taken  # rolls back this transaction's collection
            audit.record(conn, SYSTEM, "plan.instalment", "plan", plan_id,
                         after={"seq": due["seq"], "amount": due["amount"], "charge_date": charge.isoformat(),
                                "collection": collection_id})
        return collection_id

    @staticmethod
    def _first_owing(conn: Connection, plan_id: str) -> Statement:
        """The statement a collection is filed under (its payment is allocated over all the plan's)."""
        rows = conn.execute(select(firm_statements).join(
            plan_statements, plan_statements.c.statement_key == firm_statements.c.key)
            .where(plan_statements.c.plan_id == plan_id)
            .order_by(firm_statements.c.issue_date, firm_statements.c.number)).mappings().all()
        statements = [statement_from_row(r) for r in rows]
        return next((s for s in statements if s.balance > 0 and s.status == "open"), statements[0])

    def _end_if_done(self, plan_id: str) -> None:
        with self.store.begin() as conn:
            waiting = conn.execute(select(func.count()).select_from(plan_instalments).where(
                plan_instalments.c.plan_id == plan_id,
                plan_instalments.c.state == InstalmentState.SCHEDULED.value)).scalar_one()
            live = conn.execute(select(func.count()).select_from(collections).join(
                plan_instalments, plan_instalments.c.collection_id == collections.c.id).where(
                plan_instalments.c.plan_id == plan_id, collections.c.status.in_(COLLECTION_LIVE))).scalar_one()
            if waiting == 0 and live == 0 and move(conn, plans, PlanState.ENDED, plans.c.id == plan_id,
                                                    active_key=None, updated_at=utcnow()):
                audit.record(conn, SYSTEM, "plan.end", "plan", plan_id, after={"status": "ended"})

    # ------------------------------------------------------------------------------------------- staff

    def cancel(self, actor: Actor, plan_id: str, reason: str = "cancelled by staff") -> PlanView:
        """Cancel what is still to come: scheduled instalments, and submitted ones the bank has not taken yet. A
        plan awaiting its mandate ends the setup started for it too (``_end_setup``), so the payer cannot go on
        to authorise a plan that is no more."""
        with audit.attempt(self.store, actor, "plan.cancel", "plan", plan_id) as act:
            plan = self._row(plan_id)
            if plan["status"] not in PLAN_HOLDING:
                raise RuleError(f"plan {plan_id} is {plan['status']}; only an active plan or one awaiting its "
                                "mandate can be cancelled")
            setup_kept = None
            if plan["status"] == PlanState.AWAITING_MANDATE.value:
                setup_kept = self._end_setup(actor, plan["mandate_id"], plan_id, f"plan {plan_id}: {reason}")
            with self.store.read() as conn:
                live = conn.execute(select(collections.c.id).join(
                    plan_instalments, plan_instalments.c.collection_id == collections.c.id).where(
                    plan_instalments.c.plan_id == plan_id, collections.c.status.in_(COLLECTION_LIVE))).scalars().all()
            kept = []
            for collection_id in live:
                try:
                    self.directdebit.cancel_collection(actor, collection_id)
                except (CollectionCancelRefused, RuleError) as exc:
                    kept.append(f"{collection_id} ({exc})")
            with self.store.begin() as conn:
                cancelled = move(conn, plan_instalments, InstalmentState.CANCELLED,
                                 plan_instalments.c.plan_id == plan_id, note=reason)
                move(conn, plans, PlanState.CANCELLED, plans.c.id == plan_id, active_key=None, note=reason,
                     updated_at=utcnow())
                act.record(conn, before={"status": plan["status"]}, after={
                    "status": "cancelled", "reason": reason, "instalments_cancelled": cancelled,
                    "collections_already_with_the_bank": kept,
                    **({"mandate_setup_not_ended": setup_kept} if setup_kept else {})})
        return self.get(plan_id)

    def _row(self, plan_id: str) -> Row:
        with self.store.read() as conn:
            row = conn.execute(select(plans).where(plans.c.id == plan_id)).mappings().first()
        if row is None:
            raise NotFound(f"no plan {plan_id!r}: 'ledgerlink plans list' shows the plans there are")
        return row

    def get(self, plan_id: str) -> PlanView:
        plan = self._row(plan_id)
        with self.store.read() as conn:
            matter = get_matter(conn, plan["matter_key"])
            payer = get_payer(conn, plan["payer_key"])
            rows = conn.execute(select(plan_instalments, collections.c.status.label("money")).outerjoin(
                collections, collections.c.id == plan_instalments.c.collection_id).where(
                plan_instalments.c.plan_id == plan_id).order_by(plan_instalments.c.seq)).mappings().all()
            numbers = tuple(conn.execute(select(firm_statements.c.number).join(
                plan_statements, plan_statements.c.statement_key == firm_statements.c.key).where(
                plan_statements.c.plan_id == plan_id).order_by(firm_statements.c.issue_date)).scalars())
            left = self._left_to_collect(conn, plan_id)
            url = conn.execute(select(mandates.c.url).where(mandates.c.id == plan["mandate_id"])).scalar()
        awaiting = plan["status"] == PlanState.AWAITING_MANDATE.value
        return PlanView(plan["id"], plan["matter_key"], matter.number, payer.name if payer else None,
                        plan["account"], plan["currency"], plan["total"], plan["frequency"], plan["status"], numbers,
                        tuple(Instalment(r["seq"], r["due_on"], r["amount"], r["money"] or r["state"],
                                         r["collection_id"], r["note"]) for r in rows), left, plan["note"],
                        needs_mandate=awaiting, setup_url=url if awaiting else None)

    def list(self, matter: str | None = None) -> list[PlanView]:
        with self.store.read() as conn:
            query = select(plans.c.id).order_by(plans.c.created_at.desc())
            if matter is not None:
                query = query.where(plans.c.matter_key == get_matter(conn, matter).key)
            ids = list(conn.execute(query).scalars())
        return [self.get(i) for i in ids]
