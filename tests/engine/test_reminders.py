"""Smart reminders: the schedule, stopping at payment/cancellation/expiry, never twice (across a restart and
between two runners), and only the latest due step after downtime."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from delivery_support import Mailbox, configure, smtp_server
from sqlalchemy import select
from tests_support import STAFF

from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.engine.reminders import schedule
from agent.home.accounts import set_account
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.state.schema import reminders
from connectors.providers import sandbox

DAY = dt.timedelta(days=1)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Path, Mailbox]]:
    home = tmp_path / "home"
    init_home(home)
    set_account(home / "ledgerlink.toml", "operating",
                {"expiry_days": 30, "reminder_days": [3, 7, 14], "remind_before_expiry_days": 2})
    with smtp_server() as (box, port):
        configure(home, port)
        yield home, box


def runtime(home: Path) -> Runtime:
    rt = Runtime.for_home(home)
    rt.links.retry_initial = 0.01
    return rt


@pytest.fixture
def rt(home: tuple[Path, Mailbox]) -> Iterator[Runtime]:
    r = runtime(home[0])
    yield r
    r.close()


def sent_link(rt: Runtime, invoice: str = "INV-1") -> tuple[str, dt.datetime]:
    link = rt.links.create(STAFF, LinkRequest(amount=Decimal("99.00"), name="Ada", email="ada@example.com",
                                              invoice=invoice))
    record = rt.sender.send(STAFF, link.id, "email")
    assert record.ok
    return link.id, record.sent_at


def steps(rt: Runtime, link_id: str) -> dict[str, str]:
    with rt.store.read() as conn:
        return {r.step: r.status for r in conn.execute(
            select(reminders.c.step, reminders.c.status).where(reminders.c.link_id == link_id))}


def reminder_subjects(box: Mailbox) -> list[str]:
    return [str(m["Subject"]) for m in box.messages if str(m["Subject"]).startswith("Reminder:")]


def test_schedule_from_settings(rt: Runtime) -> None:
    account = rt.settings.account("operating")
    sent = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)
    got = [(s.name, s.due_at - sent) for s in schedule(account, sent, sent + 30 * DAY)]
    assert got == [("after:3", 3 * DAY), ("after:7", 7 * DAY), ("after:14", 14 * DAY), ("expiry:2", 28 * DAY)]
    # steps at or after the expiry are dropped
    assert [s.name for s in schedule(account, sent, sent + 10 * DAY)] == ["after:3", "after:7", "expiry:2"]


def test_each_step_once_on_schedule(rt: Runtime, home: tuple[Path, Mailbox]) -> None:
    link_id, sent = sent_link(rt)
    assert rt.reminders.run(STAFF, sent + 2 * DAY) == 0
    assert rt.reminders.run(STAFF, sent + 3 * DAY + dt.timedelta(minutes=1)) == 1
    assert rt.reminders.run(STAFF, sent + 4 * DAY) == 0  # after:3 was sent; after:7 is not due
    assert rt.reminders.run(STAFF, sent + 7 * DAY + dt.timedelta(minutes=1)) == 1
    assert steps(rt, link_id) == {"after:3": "sent", "after:7": "sent"}
    box = home[1]
    assert reminder_subjects(box) == ["Reminder: payment request from Demo Legal LLP: GBP 99.00"] * 2
    assert "still outstanding" in box.messages[-1].get_content()


def test_never_twice_across_a_restart(home: tuple[Path, Mailbox]) -> None:
    first = runtime(home[0])
    _, sent = sent_link(first)
    assert first.reminders.run(STAFF, sent + 3 * DAY + dt.timedelta(hours=1)) == 1
    first.close()
    second = runtime(home[0])  # the agent restarted: only the state store remembers
    assert second.reminders.run(STAFF, sent + 3 * DAY + dt.timedelta(hours=2)) == 0
    assert len(reminder_subjects(home[1])) == 1
    second.close()


def test_crash_between_claim_and_send_is_at_most_once(home: tuple[Path, Mailbox]) -> None:
    first = runtime(home[0])
    link_id, sent = sent_link(first)
    now = sent + 3 * DAY + dt.timedelta(hours=1)
    due = [s for s in schedule(first.settings.account("operating"), sent, sent + 30 * DAY) if s.due_at <= now]
    assert first.reminders._claim(link_id, due, now)  # the step is taken ... and the agent dies before the email goes
    first.close()
    second = runtime(home[0])
    assert second.reminders.run(STAFF, now) == 0
    assert steps(second, link_id) == {"after:3": "sending"} and reminder_subjects(home[1]) == []
    second.close()


def test_two_runners_send_one_reminder(home: tuple[Path, Mailbox]) -> None:
    setup = runtime(home[0])
    _, sent = sent_link(setup)
    setup.close()
    runners = [runtime(home[0]) for _ in range(2)]
    results: list[int] = []
    barrier = threading.Barrier(2)

    def run(r: Runtime) -> None:
        barrier.wait()
        results.append(r.reminders.run(STAFF, sent + 3 * DAY + dt.timedelta(hours=1)))

    threads = [threading.Thread(target=run, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1] and len(reminder_subjects(home[1])) == 1
    for r in runners:
        r.close()


def test_after_downtime_only_the_latest_due_step(rt: Runtime, home: tuple[Path, Mailbox]) -> None:
    link_id, sent = sent_link(rt)
    assert rt.reminders.run(STAFF, sent + 15 * DAY) == 1  # down since before day 3: one reminder, not three
    assert steps(rt, link_id) == {"after:3": "skipped", "after:7": "skipped", "after:14": "sent"}
    assert rt.reminders.run(STAFF, sent + 16 * DAY) == 0
    assert rt.reminders.run(STAFF, sent + 28 * DAY + dt.timedelta(hours=1)) == 1  # two days before expiry
    assert steps(rt, link_id)["expiry:2"] == "sent"
    assert len(reminder_subjects(home[1])) == 2


def test_stops_at_payment_cancellation_and_expiry(rt: Runtime, home: tuple[Path, Mailbox]) -> None:
    paid, sent = sent_link(rt, "INV-PAID")
    cancelled, _ = sent_link(rt, "INV-CANCEL")
    expiring, _ = sent_link(rt, "INV-EXPIRE")
    paid_ref = rt.links.get(paid).provider_ref
    assert paid_ref is not None
    sandbox.pay(home[0], paid_ref)
    EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
    assert rt.links.get(paid).status == "payment_received"
    rt.links.cancel(STAFF, cancelled)
    assert rt.reminders.run(STAFF, sent + 31 * DAY) == 0  # the third link is past its expiry
    assert rt.reminders.run(STAFF, sent + 3 * DAY + dt.timedelta(hours=1)) == 1  # only the outstanding one
    assert steps(rt, expiring) == {"after:3": "sent"} and steps(rt, paid) == steps(rt, cancelled) == {}


def test_links_never_sent_get_no_reminders(rt: Runtime) -> None:
    link = rt.links.create(STAFF, LinkRequest(amount=Decimal("5.00"), name="Bo", email="bo@example.com", invoice="G-1"))
    assert rt.reminders.run(STAFF, link.created_at + 10 * DAY) == 0


def test_a_refused_reminder_is_retried_an_accepted_one_is_not(rt: Runtime, home: tuple[Path, Mailbox]) -> None:
    link_id, sent = sent_link(rt)
    home[1].refuse = True
    now = sent + 3 * DAY + dt.timedelta(hours=1)
    assert rt.reminders.run(STAFF, now) == 0
    assert steps(rt, link_id) == {"after:3": "failed"}  # the relay said no: nothing reached the payer
    home[1].refuse = False
    assert rt.reminders.run(STAFF, now + dt.timedelta(hours=1)) == 1
    assert rt.reminders.run(STAFF, now + dt.timedelta(hours=2)) == 0
    assert steps(rt, link_id) == {"after:3": "sent"}
