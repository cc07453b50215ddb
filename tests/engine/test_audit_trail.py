"""Every link action on the audit trail: create, cancel, Cancel & Create New, email, text, bulk send, the account
settings and Direct Debit's manual request each write exactly one entry with the right person and object, also
when the action fails (the provider refusing a cancel, a rule refusing a link). Jobs and intake files act under
their own names. The export carries the trail's columns."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from delivery_support import Gateway, Mailbox, mail_home, mail_runtime

from agent.core.errors import RuleError
from agent.core.model import Actor
from agent.engine.configuration import change_account
from agent.engine.export import AUDIT_COLUMNS
from agent.engine.intake import InboxIntake
from agent.engine.links import LinkRequest
from agent.runtime import Runtime
from agent.state import audit
from connectors.providers import sandbox

MATTER = "M-2026-0010"  # payer with an email
NO_EMAIL = "M-2026-0040"
ALICE, BOB = Actor("user", "alice"), Actor("user", "bob")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Path, Mailbox, Gateway]]:
    with mail_home(tmp_path / "home") as found:
        yield found


@pytest.fixture
def rt(servers: tuple[Path, Mailbox, Gateway]) -> Iterator[Runtime]:
    with mail_runtime(servers[0]) as runtime:
        yield runtime


def trail(rt: Runtime, since: int = 0) -> list[tuple[str, str, str, str]]:
    """(who, action, object, outcome) of every entry after ``since``; the chain must be intact throughout."""
    assert audit.check(rt.store, rt.audit_seal, rt.checkpoint_file).intact
    with rt.store.read() as conn:
        return [(e.actor, e.action, e.object, e.outcome) for e in audit.entries(conn) if e.seq > since]


def newest(rt: Runtime) -> audit.Entry:
    with rt.store.read() as conn:
        return audit.entries(conn, limit=1)[0]


def test_create_cancel_and_a_refused_create_each_write_one_entry(rt: Runtime) -> None:
    link = rt.links.create(ALICE, LinkRequest(matter=MATTER))
    assert trail(rt) == [("user:alice", "link.create", f"link:{link.id}", "ok")]
    assert newest(rt).after["amount"] == "2088.05" and newest(rt).after["status"] == "outstanding"
    again = rt.links.create(BOB, LinkRequest(matter=MATTER))  # the existing link back: nothing changed
    assert again.existing and len(trail(rt)) == 1
    rt.links.cancel(BOB, link.id)
    assert trail(rt, 1) == [("user:bob", "link.cancel", f"link:{link.id}", "ok")]
    cancelled = newest(rt)
    assert (cancelled.before["status"], cancelled.after["status"]) == ("outstanding", "cancelled")
    with pytest.raises(RuleError, match="no email address"):
        rt.links.create(ALICE, LinkRequest(matter=NO_EMAIL))
    assert trail(rt, 2) == [("user:alice", "link.create", f"matter:{NO_EMAIL}", "failed")]
    assert "no email address" in (newest(rt).error or "")


def test_a_cancel_the_provider_refuses_writes_one_failed_entry(rt: Runtime) -> None:
    link = rt.links.create(ALICE, LinkRequest(matter=MATTER))
    assert link.provider_ref is not None
    sandbox.pay(rt.settings.home, link.provider_ref)  # paid at the provider before the cancel reaches it
    with pytest.raises(RuleError, match="was paid before it could be cancelled"):
        rt.links.cancel(BOB, link.id)
    assert trail(rt, 1) == [("user:bob", "link.cancel", f"link:{link.id}", "failed")]
    assert "paid before it could be cancelled" in (newest(rt).error or "")


def test_cancel_and_create_new_writes_the_old_links_cancel_and_the_new_links_recreate(rt: Runtime) -> None:
    old = rt.links.create(ALICE, LinkRequest(matter=MATTER))
    new = rt.links.recreate(BOB, old.id, LinkRequest(amount=Decimal("100.00")))
    assert trail(rt, 1) == [("user:bob", "link.cancel", f"link:{old.id}", "ok"),
                            ("user:bob", "link.recreate", f"link:{new.id}", "ok")]
    made = newest(rt)
    assert made.before == {"replaces": old.id} and made.after["replaces"] == old.id
    assert made.after["amount"] == "100.00"
    paid = rt.links.create(ALICE, LinkRequest(amount=Decimal("5.00"), name="Ada", email="ada@example.com"))
    assert paid.provider_ref is not None
    sandbox.pay(rt.settings.home, paid.provider_ref)
    with pytest.raises(RuleError):
        rt.links.recreate(BOB, paid.id)
    assert trail(rt, 4) == [("user:bob", "link.recreate", f"link:{paid.id}", "failed")]  # one entry, not two


def test_email_and_text_each_write_one_entry_also_when_delivery_fails(
        rt: Runtime, servers: tuple[Path, Mailbox, Gateway]) -> None:
    link = rt.links.create(ALICE, LinkRequest(matter=MATTER))
    rt.sender.send(BOB, link.id, "email")
    rt.sender.send(ALICE, link.id, "sms", to="+44 7700 900123")
    servers[1].refuse = True
    failed = rt.sender.send(BOB, link.id, "email")
    assert not failed.ok
    rt.links.cancel(ALICE, link.id)
    with pytest.raises(RuleError, match="only outstanding links are sent"):
        rt.sender.send(BOB, link.id, "email")
    assert trail(rt, 1)[:3] == [("user:bob", "link.email", f"link:{link.id}", "ok"),
                                ("user:alice", "link.sms", f"link:{link.id}", "ok"),
                                ("user:bob", "link.email", f"link:{link.id}", "failed")]
    assert trail(rt, 5) == [("user:bob", "link.email", f"link:{link.id}", "failed")]  # refused: not outstanding
    with rt.store.read() as conn:
        sent = audit.history(conn, "link", link.id)
    assert sent[1].after["recipient"] == link.payer_email
    assert sent[2].after["recipient"] == "+447700900123"
    assert "550" in (sent[3].error or "")


def test_bulk_send_writes_one_entry_for_the_run_and_one_per_link(rt: Runtime) -> None:
    requests = [(f"row {i}", LinkRequest(amount=Decimal("10.00"), name=f"P{i}", email=f"p{i}@example.com",
                                         invoice=f"B-{i}")) for i in (2, 3)]
    requests.append(("row 4", LinkRequest(amount=Decimal("-1"), name="X", email="x@example.com", invoice="B-4")))
    results = rt.sender.send_all(ALICE, requests, source="march.csv")
    assert [r.sent for r in results] == [True, True, False]
    actions = [(a, o.split(":")[0], out) for _, a, o, out in trail(rt)]
    assert actions.count(("bulk.send", "bulk", "partial")) == 1
    assert actions.count(("link.create", "link", "ok")) == 2 and actions.count(("link.email", "link", "ok")) == 2
    assert actions.count(("link.create", "invoice", "failed")) == 1
    run = newest(rt)
    assert (run.actor, run.object, len(run.after["sent"]), list(run.after["not_sent"])) == (
        "user:alice", "bulk:march.csv", 2, ["row 4"])


def test_account_changes_write_one_entry_with_only_what_changed(rt: Runtime) -> None:
    config = rt.settings.config_path
    change_account(rt.store, config, ALICE, "operating", {"expiry_days": 10, "disclaimer": "New footer"})
    entry = newest(rt)
    assert (entry.actor, entry.action, entry.object, entry.outcome) == (
        "user:alice", "account.change", "account:operating", "ok")
    assert entry.after == {"expiry_days": 10, "disclaimer": "New footer"}
    assert set(entry.before) <= {"expiry_days", "disclaimer"}
    with pytest.raises(RuleError):
        change_account(rt.store, config, BOB, "operating", {"expiry_days": -3})
    assert trail(rt, entry.seq) == [("user:bob", "account.change", "account:operating", "failed")]


def test_intake_files_and_jobs_act_under_their_own_names(rt: Runtime, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with (inbox / "april.csv").open("w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows([
            ["Invoice Number", "Invoice Date", "Due Date", "Recipient Name", "Recipient Email", "Amount",
             "Custom Message"], ["A-1", "2026-04-01", "2026-04-30", "Ada", "ada@example.com", "12.00", ""]])
    intake = InboxIntake(rt.links, inbox, settle=0.0)
    intake.scan()
    intake.scan()
    assert [(who, action) for who, action, _, _ in trail(rt)] == [("intake:april.csv", "link.create")]
    link = rt.links.create(ALICE, LinkRequest(matter=MATTER))
    assert rt.links.review_outstanding(Actor("job", "review")) == []  # nothing stale: nothing written
    rt.links.cancel(Actor("job", "review"), link.id, reason="statement voided")
    assert trail(rt, 2) == [("job:review", "link.cancel", f"link:{link.id}", "ok")]


def test_a_manual_direct_debit_refused_by_the_rules_writes_one_entry(rt: Runtime) -> None:
    with pytest.raises(RuleError):
        rt.directdebit.request_manual(BOB, "INV-1001", Decimal("10.00"))
    assert trail(rt) == [("user:bob", "collection.request", "statement:INV-1001", "failed")]


def test_the_export_has_the_trails_columns(rt: Runtime, tmp_path: Path) -> None:
    link = rt.links.create(ALICE, LinkRequest(matter=MATTER))
    rt.links.cancel(BOB, link.id)
    out = tmp_path / "audit.csv"
    assert rt.exporter.audit(out, actor="bob") == 1
    with out.open(encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [c.header for c in AUDIT_COLUMNS.values()] == [
        "Entry", "When", "Who", "Action", "Object", "Outcome", "Error", "Before", "After", "Hash"]
    assert rows[1][2:6] == ["user:bob", "link.cancel", f"link:{link.id}", "ok"]
    assert '"status":"cancelled"' in rows[1][8] and len(rows[1][9]) == 64
    assert rt.exporter.audit(tmp_path / "audit.xlsx") == 2
