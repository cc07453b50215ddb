"""Smart reminders: follow-up emails for outstanding links on each merchant account's schedule.

Reminders go by email. The schedule counts from when the link was first emailed to the payer by Ledgerlink
(``reminder_days`` after it, e.g. 3, 7 and 14) plus one step ``remind_before_expiry_days`` before expiry. A link
copied out by hand (Generate Link) or only texted was never emailed by us, so it gets no email reminders. Only
outstanding, unexpired links are reminded: payment, cancellation or expiry ends the schedule, and a step due at or
after the link's expiry is dropped.

Delivery is **at most once per step**. The ``reminders`` row of (link, step) - its primary key is unique - is
committed as ``sending`` *before* the email goes out; whoever inserts it owns the step, so a second runner or a
restarted agent finds the row and never sends it again. If the agent dies between that commit and the send, the
step stays ``sending`` and is not retried: a missed reminder costs little (the next step follows), a duplicate
payment demand to a law firm's client is what must not happen. A failure that certainly delivered nothing
(relay refused, connection refused) is marked ``failed`` and retried on later passes while it is still the latest
due step; an ambiguous one (connection lost after the hand-over) is marked ``unknown`` and never retried.

After downtime only the latest due step is sent; earlier due steps that were never sent are recorded as
``skipped`` in the same transaction, so the payer gets one reminder, not a burst.

:class:`Ledger` is that discipline over any table keyed by (what is reminded, step): the links' ``reminders``
here, and the payment plans' ``plan_reminders`` (agent.engine.plan_reminders), so both keep the same promise.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, Connection, Table, func, select, update
from sqlalchemy.exc import IntegrityError

from agent.core.errors import RuleError
from agent.core.model import Actor, MerchantAccount
from agent.engine.sending import Sender, SendRecord
from agent.home.settings import Settings
from agent.state import StateStore
from agent.state.schema import Row, links, reminders, sends
from agent.state.statuses import REMINDER_DONE
from agent.state.store import utcnow
from connectors.providers.contract import LinkStatus

log = logging.getLogger("ledgerlink.reminders")


@dataclass(frozen=True)
class Step:
    name: str  # after:<days> or expiry:<days>; a plan's before or failed
    due_at: dt.datetime


class Outcome(Protocol):
    """What a send reports: whether the relay took it, and for a failure whether nothing can have arrived."""

    @property
    def ok(self) -> bool: ...

    @property
    def definite(self) -> bool: ...


OutcomeT = TypeVar("OutcomeT", bound=Outcome)


class Ledger:
    """At most once per step, over ``table``: its primary key is the columns naming what is reminded (the
    ``subject``: a link; a plan's instalment) plus ``step``, and it has status, due_at and updated_at."""

    def __init__(self, store: StateStore, table: Table) -> None:
        self.store = store
        self.table = table

    def _where(self, subject: Mapping[str, Any], step: str | None = None) -> list[ColumnElement[bool]]:
        where = [self.table.c[name] == value for name, value in subject.items()]
        return where if step is None else [*where, self.table.c.step == step]

    def _known(self, conn: Connection, subject: Mapping[str, Any]) -> dict[str, str]:
        return {r.step: r.status for r in conn.execute(
            select(self.table.c.step, self.table.c.status).where(*self._where(subject)))}

    def claim(self, subject: Mapping[str, Any], due: list[Step], now: dt.datetime,
              still: Callable[[Connection], bool]) -> bool:
        """Take the latest of the ``due`` steps (inserting it as ``sending``) and mark earlier unsent ones skipped,
        atomically; ``still`` says, inside that transaction, whether the subject is still to be reminded."""
        latest = due[-1]
        with self.store.read() as conn:  # most passes find the step taken: no write transaction for them
            if self._known(conn, subject).get(latest.name) in REMINDER_DONE:
                return False
        try:
            with self.store.begin() as conn:
                if not still(conn):
                    return False
                known = self._known(conn, subject)
                if known.get(latest.name) in REMINDER_DONE:
                    return False
                for step in due[:-1]:
                    if step.name not in known:
                        conn.execute(self.table.insert().values(**subject, step=step.name, status="skipped",
                                                                due_at=step.due_at, updated_at=now))
                if latest.name in known:  # a definite failure earlier: take it back only if it still is one
                    return conn.execute(update(self.table).where(
                        *self._where(subject, latest.name), self.table.c.status == "failed"
                    ).values(status="sending", updated_at=now)).rowcount == 1
                conn.execute(self.table.insert().values(**subject, step=latest.name, status="sending",
                                                        due_at=latest.due_at, updated_at=now))
        except IntegrityError:  # another runner took a step of this subject a moment ago; the transaction rolled back
            return False
        return True

    def finish(self, subject: Mapping[str, Any], step: str, status: str, **values: Any) -> None:
        with self.store.begin() as conn:
            conn.execute(update(self.table).where(*self._where(subject, step))
                         .values(status=status, updated_at=utcnow(), **values))

    def deliver(self, subject: Mapping[str, Any], step: str, send: Callable[[], OutcomeT],
                record: Callable[[OutcomeT], Mapping[str, Any]]) -> bool:
        """Send a claimed step and record how it went (``record``: the columns saying so); True when it went.

        Sent, ``failed`` (nothing delivered: retried while still the latest step) or ``unknown`` (never retried);
        a refusal (RuleError: paid since, no address) ends the step as ``skipped``."""
        try:
            outcome = send()
        except RuleError as exc:
            log.info("reminder %s of %s not sent: %s", step, dict(subject), exc)
            self.finish(subject, step, "skipped")
            return False
        except Exception:
            self.finish(subject, step, "failed")  # raised before anything was handed to the relay
            raise
        status = "sent" if outcome.ok else ("failed" if outcome.definite else "unknown")
        self.finish(subject, step, status, **record(outcome))
        return outcome.ok


def schedule(account: MerchantAccount, sent_at: dt.datetime, expires_at: dt.datetime) -> list[Step]:
    """The steps of one link in due order; only those strictly between the first send and the expiry."""
    steps = [Step(f"after:{days}", sent_at + dt.timedelta(days=days)) for days in set(account.reminder_days)]
    if account.remind_before_expiry_days:
        days = account.remind_before_expiry_days
        steps.append(Step(f"expiry:{days}", expires_at - dt.timedelta(days=days)))
    return sorted((s for s in steps if sent_at < s.due_at < expires_at), key=lambda s: (s.due_at, s.name))


def _send_id(record: SendRecord) -> Mapping[str, Any]:
    return {"send_id": record.id}


class Reminders:
    """Smart reminders over the store, sent through the Sender; built by the composition root."""

    def __init__(self, settings: Settings, store: StateStore, sender: Sender) -> None:
        self.settings = settings
        self.store = store
        self.sender = sender
        self.ledger = Ledger(store, reminders)

    def _candidates(self, now: dt.datetime) -> list[Row]:
        first_send = (select(sends.c.link_id, func.min(sends.c.sent_at).label("sent_at"))
                      .where(sends.c.ok.is_(True), sends.c.purpose == "link", sends.c.channel == "email")
                      .group_by(sends.c.link_id).subquery())
        query = (select(links.c.id, links.c.account, links.c.expires_at, first_send.c.sent_at)
                 .join(first_send, first_send.c.link_id == links.c.id)
                 .where(links.c.status == LinkStatus.OUTSTANDING.value, links.c.expires_at > now))
        with self.store.read() as conn:
            return list(conn.execute(query).mappings())

    def _claim(self, link_id: str, due: list[Step], now: dt.datetime) -> bool:
        """Take the latest due step of a link that is still outstanding (Ledger.claim)."""
        def outstanding(conn: Connection) -> bool:
            status = conn.execute(select(links.c.status).where(links.c.id == link_id)).scalar()
            return status == LinkStatus.OUTSTANDING.value

        return self.ledger.claim({"link_id": link_id}, due, now, outstanding)

    def _remind(self, actor: Actor, link_id: str, step: str) -> bool:
        return self.ledger.deliver(
            {"link_id": link_id}, step,
            lambda: self.sender.send(actor, link_id, "email", purpose=f"reminder:{step}"), _send_id)

    def run(self, actor: Actor, now: dt.datetime | None = None) -> int:
        """One pass for the service loop: send each outstanding link's latest due step once; returns emails sent.
        Each send is audited as ``actor``'s (the reminders job)."""
        if not self.settings.smtp.from_address:
            log.debug("smart reminders idle: email is not set up ([smtp] from_address)")
            return 0
        now = now or utcnow()
        sent = 0
        for row in self._candidates(now):
            account = self.settings.accounts.get(row["account"])
            if account is None:
                continue
            due = [s for s in schedule(account, row["sent_at"], row["expires_at"]) if s.due_at <= now]
            if due and self._claim(row["id"], due, now):
                sent += self._remind(actor, row["id"], due[-1].name)
        return sent
