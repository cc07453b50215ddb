"""Payment-plan reminders (issue 27): the payer is emailed before each instalment and after a failed one.

Before: ``plan_reminder_days`` (default 3) before an instalment's charge date the payer is told its amount, its
date and its matter, and that it is taken by Direct Debit under their mandate. Only an instalment that will be
collected is reminded: its plan active, and the instalment still scheduled on an active mandate or its collection
live at the provider. The figures are read when the email is written, so an instalment lowered to follow the debt
is reminded at its lowered amount. Up to the day before the charge date only: on the day it is news, not notice.

After a failure: when an instalment's collection fails, is not approved or is charged back, the payer is told once,
with what is still owed under the plan and what happens next - what agent.engine.plans does: a missed instalment is
never collected again by the plan (the plan follows the debt down, never up), the remaining instalments are still
collected on their dates, and the missed money stays owed on the matter's statements for the firm to collect some
other way. A cancelled plan sends neither: staff have taken the debt back.

An instalment's two steps, ``before`` then ``failed``, go through agent.engine.reminders.Ledger, as a link's do: at
most once each, a definite failure retried while it is still the latest step, and after downtime only the latest
(a failure learnt late makes the unsent ``before`` skipped). Each email is audited as plan.email on the plan.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select

from agent.core.model import Actor, Money
from agent.engine.reminders import Ledger, Step
from agent.engine.sending import Delivery, Notice, Sender
from agent.home.settings import Settings
from agent.state import StateStore
from agent.state.mirror import get_matter, get_payer
from agent.state.schema import Row, collections, mandates, plan_instalments, plan_reminders, plans
from agent.state.statuses import COLLECTION_LIVE, CollectionState, InstalmentState, PlanState
from agent.state.store import utcnow
from connectors.providers.contract import MandateStatus

__all__ = ["BEFORE", "FAILED", "MISSED", "PlanReminder", "PlanReminders"]

log = logging.getLogger("ledgerlink.reminders")

BEFORE, FAILED = "before", "failed"
MISSED = (CollectionState.FAILED, CollectionState.CUSTOMER_APPROVAL_DENIED, CollectionState.CHARGED_BACK)


@dataclass(frozen=True)
class PlanReminder:
    """One step of one instalment, as ``plans show`` and the API list them."""

    seq: int
    step: str  # before or failed
    status: str  # sending, sent, failed, unknown or skipped
    due_at: dt.datetime
    recipient: str | None
    sent_at: dt.datetime | None
    result: str | None


def _rows(conn: Connection, *where: ColumnElement[bool]) -> list[Row]:
    """The instalments that may have a step to send: coming in an active plan, or missed in a plan not cancelled."""
    coming = and_(plans.c.status == PlanState.ACTIVE.value,
                  or_(plan_instalments.c.state == InstalmentState.SCHEDULED.value,
                      collections.c.status.in_(COLLECTION_LIVE)))
    missed = and_(plans.c.status != PlanState.CANCELLED.value, collections.c.status.in_(MISSED))
    query = (select(plan_instalments.c.plan_id, plan_instalments.c.seq, plan_instalments.c.state,
                    plan_instalments.c.due_on, plans.c.status.label("plan_status"), mandates.c.status.label("mandate"),
                    collections.c.status.label("money"), collections.c.charge_date,
                    collections.c.updated_at.label("money_at"))
             .join(plans, plans.c.id == plan_instalments.c.plan_id)
             .join(mandates, mandates.c.id == plans.c.mandate_id)
             .outerjoin(collections, collections.c.id == plan_instalments.c.collection_id)
             .where(or_(coming, missed), *where)
             .order_by(plans.c.created_at, plan_instalments.c.seq))
    return list(conn.execute(query).mappings())


def _coming(row: Row) -> bool:
    """Whether the instalment will be collected: the plan active, and a live collection or one still to be made."""
    if row["plan_status"] != PlanState.ACTIVE.value:
        return False
    if row["money"] is not None:
        return bool(row["money"] in COLLECTION_LIVE)
    return bool(row["state"] == InstalmentState.SCHEDULED.value and row["mandate"] == MandateStatus.ACTIVE.value)


def _charge_date(row: Row) -> dt.date:
    """The day the money is taken: the provider's charge date once submitted (a working day), else the plan's."""
    date: dt.date = row["charge_date"] or row["due_on"]
    return date


def _money(amount: Decimal, currency: str) -> str:
    return str(Money(amount=amount, currency=currency))


def _day(date: dt.date) -> str:
    return f"{date:%d %B %Y}"


@dataclass(frozen=True)
class _Facts:
    """What one email says, read when it is written."""

    seq: int
    amount: Decimal
    charge_date: dt.date
    money: str | None  # the collection's status
    currency: str
    payer_name: str | None
    email: str | None
    matter: str  # number and name
    disclaimer: str
    coming: list[tuple[int, dt.date, Decimal]]  # the other instalments that will be collected, by date
    missed: list[tuple[int, Decimal]]  # the instalments missed so far, this one included if it was


def _letter(facts: _Facts, paragraphs: list[list[str]]) -> str:
    lines = [f"Dear {facts.payer_name}," if facts.payer_name else "Hello,", ""]
    for paragraph in paragraphs:
        lines += [*paragraph, ""]
    if facts.disclaimer:
        lines += ["-- ", facts.disclaimer]
    return "\n".join(lines).rstrip() + "\n"


def _table(rows: list[tuple[str, str]]) -> list[str]:
    """Label: value lines, the values lined up as in a link's email."""
    width = max(len(label) for label, _ in rows) + 3
    return [f"{label + ':':<{width}}{value}" for label, value in rows]


def _instalments(seqs: list[int]) -> str:
    return f"instalment{'s' if len(seqs) > 1 else ''} {', '.join(map(str, seqs))}"


def _still_to_come(coming: list[tuple[int, dt.date, Decimal]], currency: str) -> str:
    total = sum((a for _, _, a in coming), Decimal(0))
    count = f"{len(coming)} instalment{'s' if len(coming) > 1 else ''}"
    return f"{_money(total, currency)} in {count}, the next on {_day(coming[0][1])}"


def _before_text(facts: _Facts, service: str) -> tuple[str, str]:
    """Subject and body of the email before an instalment is collected."""
    amount, day = _money(facts.amount, facts.currency), _day(facts.charge_date)
    subject = f"Payment plan with {service}: {amount} by Direct Debit on {day}"
    later = [c for c in facts.coming if c[0] > facts.seq]
    after = (f"After it, {_still_to_come(later, facts.currency)}, is still to be collected under the plan." if later
             else "It is the last instalment of the plan.")
    body = _letter(facts, [
        [f"Instalment {facts.seq} of your payment plan for matter {facts.matter} will be collected by Direct Debit "
         f"from your bank account, under the Direct Debit mandate you gave us, on {day}."],
        _table([("Amount", amount), ("Date", day), ("Matter", facts.matter), ("Instalment", str(facts.seq))]),
        [after, "There is nothing you need to do. If anything here is wrong, please contact us before that date."],
    ])
    return subject, body


_WHAT_HAPPENED = {
    CollectionState.CUSTOMER_APPROVAL_DENIED.value: "was not collected: the payment was not approved",
    CollectionState.CHARGED_BACK.value: "was collected and then returned to you by your bank (charged back)",
}


def _failed_text(facts: _Facts, service: str) -> tuple[str, str]:
    """Subject and body of the email after an instalment failed: the figures, and what the plan does next."""
    amount, day = _money(facts.amount, facts.currency), _day(facts.charge_date)
    returned = facts.money == CollectionState.CHARGED_BACK
    subject = f"Payment plan with {service}: the Direct Debit of {amount} was {'returned' if returned else 'missed'}"
    happened = _WHAT_HAPPENED.get(facts.money or "", "was not collected: your bank reported that the payment failed")
    missed = sum((a for _, a in facts.missed), Decimal(0))
    coming = sum((a for _, _, a in facts.coming), Decimal(0))
    figures = [("Missed", f"{_money(missed, facts.currency)} ({_instalments([n for n, _ in facts.missed])})"),
               ("Still to be collected", _still_to_come(facts.coming, facts.currency) if facts.coming else "nothing"),
               ("Still owed under the plan", _money(missed + coming, facts.currency))]
    next_ = (["The remaining instalments are still collected by Direct Debit on their dates."] if facts.coming
             else ["That was the last instalment of the plan: nothing more is collected under it."])
    body = _letter(facts, [
        [f"Instalment {facts.seq} of your payment plan for matter {facts.matter}, {amount} by Direct Debit on {day}, "
         f"{happened}."],
        _table(figures),
        ["What happens next: a missed instalment is not collected again by Direct Debit under the plan. The "
         f"{_money(missed, facts.currency)} missed is still owed on matter {facts.matter}; please contact us to pay "
         "it another way.", *next_],
    ])
    return subject, body


_TEXTS: dict[str, Callable[[_Facts, str], tuple[str, str]]] = {BEFORE: _before_text, FAILED: _failed_text}


def _delivered(delivery: Delivery) -> Mapping[str, Any]:
    return {"recipient": delivery.recipient, "sent_at": delivery.sent_at, "result": delivery.result,
            "message_id": delivery.message_id}


class PlanReminders:
    """Emails about payment-plan instalments, sent through the Sender; built by the composition root."""

    def __init__(self, settings: Settings, store: StateStore, sender: Sender, *,
                 today: Callable[[], dt.date] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.sender = sender
        self.ledger = Ledger(store, plan_reminders)
        self._today = today or (lambda: dt.datetime.now(settings.zone).date())

    def _due(self, row: Row, today: dt.date) -> list[Step]:
        """The instalment's steps due by ``today`` in order, when the last of them is still worth sending."""
        steps = []
        days = self.settings.plan_reminder_days
        charge = _charge_date(row)
        if days and charge - dt.timedelta(days=days) <= today:
            start = dt.datetime.combine(charge - dt.timedelta(days=days), dt.time(), self.settings.zone)
            steps.append(Step(BEFORE, start.astimezone(dt.UTC)))
        if row["money"] in MISSED:
            steps.append(Step(FAILED, row["money_at"]))
        if steps and steps[-1].name == BEFORE and not (_coming(row) and today < charge):
            return []
        return steps

    def _still(self, plan_id: str, seq: int, step: str, today: dt.date, conn: Connection) -> bool:
        rows = _rows(conn, plan_instalments.c.plan_id == plan_id, plan_instalments.c.seq == seq)
        return bool(rows) and [s.name for s in self._due(rows[0], today)][-1:] == [step]

    def run(self, actor: Actor, today: dt.date | None = None) -> int:
        """One pass for the service loop: each instalment's latest due step once; returns the emails sent. Each
        email is audited as ``actor``'s (the plan-reminders job)."""
        if not self.settings.smtp.from_address:
            log.debug("plan reminders idle: email is not set up ([smtp] from_address)")
            return 0
        today = today or self._today()
        now = utcnow()
        with self.store.read() as conn:
            rows = _rows(conn)
        sent = 0
        for row in rows:
            due = self._due(row, today)
            plan_id, seq = row["plan_id"], row["seq"]
            subject = {"plan_id": plan_id, "seq": seq}
            if due and self.ledger.claim(subject, due, now, partial(self._still, plan_id, seq, due[-1].name, today)):
                step = due[-1].name
                sent += self.ledger.deliver(subject, step, partial(self._send, actor, plan_id, seq, step), _delivered)
        return sent

    def _send(self, actor: Actor, plan_id: str, seq: int, step: str) -> Delivery:
        facts = self._facts(plan_id, seq)
        subject, body = _TEXTS[step](facts, self.settings.service_name)
        return self.sender.notify(
            actor, "plan", plan_id, Notice(facts.email, facts.payer_name, subject, body), purpose=f"reminder:{step}",
            details={"instalment": seq, "amount": facts.amount, "charge_date": facts.charge_date.isoformat()})

    def _facts(self, plan_id: str, seq: int) -> _Facts:
        with self.store.read() as conn:
            plan = conn.execute(select(plans).where(plans.c.id == plan_id)).mappings().one()
            rows = conn.execute(select(
                plan_instalments, plans.c.status.label("plan_status"), mandates.c.status.label("mandate"),
                collections.c.status.label("money"), collections.c.charge_date, collections.c.amount.label("taken"))
                .join(plans, plans.c.id == plan_instalments.c.plan_id)
                .join(mandates, mandates.c.id == plans.c.mandate_id)
                .outerjoin(collections, collections.c.id == plan_instalments.c.collection_id)
                .where(plan_instalments.c.plan_id == plan_id).order_by(plan_instalments.c.seq)).mappings().all()
            payer = get_payer(conn, plan["payer_key"])
            matter = get_matter(conn, plan["matter_key"])
        this = next(r for r in rows if r["seq"] == seq)
        account = self.settings.accounts.get(plan["account"])
        return _Facts(
            seq=seq, amount=this["taken"] if this["taken"] is not None else this["amount"],
            charge_date=_charge_date(this), money=this["money"], currency=plan["currency"],
            payer_name=payer.name if payer else None,
            email=payer.email if payer is not None and not payer.deleted else None,
            matter=f"{matter.number} ({matter.name})" if matter.name else matter.number,
            disclaimer=account.disclaimer if account else "",
            coming=sorted(((r["seq"], _charge_date(r), r["taken"] if r["taken"] is not None else r["amount"])
                           for r in rows if r["seq"] != seq and _coming(r)), key=lambda c: (c[1], c[0])),
            missed=[(r["seq"], r["taken"]) for r in rows if r["money"] in MISSED])

    def history(self, plan_id: str) -> list[PlanReminder]:
        """The plan's reminder steps, by instalment, each ``before`` ahead of its ``failed``."""
        with self.store.read() as conn:
            rows = conn.execute(select(plan_reminders).where(plan_reminders.c.plan_id == plan_id)).mappings().all()
        ordered = sorted(rows, key=lambda r: (r["seq"], r["step"] != BEFORE))
        return [PlanReminder(r["seq"], r["step"], r["status"], r["due_at"], r["recipient"], r["sent_at"],
                             r["result"]) for r in ordered]
