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
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from agent.core.errors import RuleError
from agent.core.model import Actor, MerchantAccount
from agent.engine.sending import Sender
from agent.home.settings import Settings
from agent.state import StateStore
from agent.state.schema import Row, links, reminders, sends
from agent.state.statuses import REMINDER_DONE
from agent.state.store import utcnow
from connectors.providers.contract import LinkStatus

log = logging.getLogger("ledgerlink.reminders")


@dataclass(frozen=True)
class Step:
    name: str  # after:<days> or expiry:<days>
    due_at: dt.datetime


def schedule(account: MerchantAccount, sent_at: dt.datetime, expires_at: dt.datetime) -> list[Step]:
    """The steps of one link in due order; only those strictly between the first send and the expiry."""
    steps = [Step(f"after:{days}", sent_at + dt.timedelta(days=days)) for days in set(account.reminder_days)]
    if account.remind_before_expiry_days:
        days = account.remind_before_expiry_days
        steps.append(Step(f"expiry:{days}", expires_at - dt.timedelta(days=days)))
    return sorted((s for s in steps if sent_at < s.due_at < expires_at), key=lambda s: (s.due_at, s.name))


class Reminders:
    """Smart reminders over the store, sent through the Sender; built by the composition root."""

    def __init__(self, settings: Settings, store: StateStore, sender: Sender) -> None:
        self.settings = settings
        self.store = store
        self.sender = sender

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
        """Take the latest due step (inserting it as ``sending``) and mark earlier unsent ones skipped, atomically."""
        latest = due[-1]
        try:
            with self.store.begin() as conn:
                status = conn.execute(select(links.c.status).where(links.c.id == link_id)).scalar()
                if status != LinkStatus.OUTSTANDING.value:
                    return False
                known = {r.step: r.status for r in conn.execute(
                    select(reminders.c.step, reminders.c.status).where(reminders.c.link_id == link_id))}
                if known.get(latest.name) in REMINDER_DONE:
                    return False
                for step in due[:-1]:
                    if step.name not in known:
                        conn.execute(reminders.insert().values(link_id=link_id, step=step.name, status="skipped",
                                                               due_at=step.due_at, updated_at=now))
                if latest.name in known:  # a definite failure earlier: take it back only if it still is one
                    return conn.execute(update(reminders).where(
                        reminders.c.link_id == link_id, reminders.c.step == latest.name, reminders.c.status == "failed"
                    ).values(status="sending", updated_at=now)).rowcount == 1
                conn.execute(reminders.insert().values(link_id=link_id, step=latest.name, status="sending",
                                                       due_at=latest.due_at, updated_at=now))
        except IntegrityError:  # another runner took a step of this link a moment ago; the transaction rolled back
            return False
        return True

    def _finish(self, link_id: str, step: str, status: str, send_id: int | None) -> None:
        with self.store.begin() as conn:
            conn.execute(update(reminders).where(reminders.c.link_id == link_id, reminders.c.step == step)
                         .values(status=status, send_id=send_id, updated_at=utcnow()))

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
            if not due or not self._claim(row["id"], due, now):
                continue
            step = due[-1].name
            try:
                record = self.sender.send(actor, row["id"], "email", purpose=f"reminder:{step}")
            except RuleError as exc:  # paid or cancelled since we looked: the schedule has ended
                log.info("reminder %s for link %s not sent: %s", step, row["id"], exc)
                self._finish(row["id"], step, "skipped", None)
                continue
            except Exception:
                self._finish(row["id"], step, "failed", None)  # raised before anything was handed to the relay
                raise
            status = "sent" if record.ok else ("failed" if record.definite else "unknown")
            self._finish(row["id"], step, status, record.id)
            sent += 1 if record.ok else 0
        return sent
