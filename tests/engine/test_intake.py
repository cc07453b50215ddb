"""Request intake: the firm database's request table, and the inbox folder of bulk files."""

from __future__ import annotations

import csv
import sqlite3
from decimal import Decimal
from pathlib import Path

from tests_support import STAFF

from agent.engine.intake import InboxIntake, process_request_table
from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.runtime import Runtime
from connectors.providers import sandbox


def firm(rt: Runtime) -> sqlite3.Connection:
    return sqlite3.connect(rt.settings.home / "demo-firm.db")


def test_request_table_rows_get_links_written_back(rt: Runtime) -> None:
    with firm(rt) as db:
        db.execute("INSERT INTO pay_requests (matter_no, amount, note) VALUES ('M-2026-0010', '250.00', 'Fees')")
        db.execute("INSERT INTO pay_requests (matter_no) VALUES ('M-2026-0040')")  # payer has no email
        db.execute("INSERT INTO pay_requests (matter_no, status) VALUES ('M-2026-0011', 'DONE-BY-HAND')")
    assert process_request_table(rt.connector, rt.mapping.requests, rt.links) == 1
    with firm(rt) as db:
        rows = db.execute("SELECT matter_no, status, link_url, link_id, link_status, error FROM pay_requests "
                          "ORDER BY id").fetchall()
    ok, refused, untouched = rows
    assert ok[1] == "LINKED" and ok[2].startswith("http://127.0.0.1") and ok[4] == "outstanding" and ok[5] is None
    link = rt.links.get(ok[3])
    assert (link.amount, link.description) == (Decimal("250.00"), "Fees")
    assert refused[1] == "FAILED" and "no email address" in refused[5]
    assert untouched[1] == "DONE-BY-HAND"
    assert process_request_table(rt.connector, rt.mapping.requests, rt.links) == 0  # nothing NEW left


def test_request_retried_after_a_crash_gets_the_same_link(rt: Runtime) -> None:
    """A crash after the link was made but before the row was updated: the retry finds the existing link."""
    with firm(rt) as db:
        db.execute("INSERT INTO pay_requests (matter_no) VALUES ('M-2026-0010')")
    first = rt.links.create(STAFF, LinkRequest(matter="M-2026-0010"))
    assert process_request_table(rt.connector, rt.mapping.requests, rt.links) == 1
    with firm(rt) as db:
        assert db.execute("SELECT link_id FROM pay_requests").fetchone()[0] == first.id
    assert len(rt.links.find()) == 1


BULK = ("Invoice Number,Invoice Date,Due Date,Recipient Name,Recipient Email,Amount,Custom Message\n"
        "Q-100,2026-11-01,2026-12-01,Ada Lovelace,ada@example.com,120.50,Thank you\n"
        "Q-101,01/11/2026,01/12/2026,Alan Turing,alan@example.com,99.99,\n")


def test_inbox_takes_only_complete_files(rt: Runtime) -> None:
    clock = [0.0]
    inbox = InboxIntake(rt.links, rt.settings.home / "inbox", settle=2.0, clock=lambda: clock[0])
    inbox.folder.mkdir()
    (inbox.folder / "batch.csv.part").write_text(BULK)  # still being copied
    (inbox.folder / "batch.csv").write_text(BULK[:60])
    assert inbox.ready() == []  # first sighting
    (inbox.folder / "batch.csv").write_text(BULK)  # still growing
    clock[0] = 3.0
    assert inbox.ready() == []
    clock[0] = 5.5
    moved = inbox.scan()
    assert [p.parent.name for p in moved] == ["done"]
    report = moved[0].with_name(moved[0].name + ".links.csv").read_text().splitlines()
    assert report[0] == "invoice_number,link_id,status,url,existing" and len(report) == 3
    assert {x.invoice_number for x in rt.links.find(["outstanding"])} == {"Q-100", "Q-101"}
    assert (inbox.folder / "batch.csv.part").exists()  # never read


def test_inbox_bad_file_goes_to_failed_with_a_report_and_sends_nothing(rt: Runtime) -> None:
    inbox = InboxIntake(rt.links, rt.settings.home / "inbox", settle=0.0)
    inbox.folder.mkdir()
    (inbox.folder / "bad.txt").write_text(BULK.replace(",", "\t").replace("ada@example.com", "ada-at-example")
                                          .replace("99.99", "-5"))
    inbox.ready()
    moved = inbox.scan()
    assert [p.parent.name for p in moved] == ["failed"]
    errors = moved[0].with_name(moved[0].name + ".errors.txt").read_text()
    assert "row 2" in errors and "row 3" in errors and "nothing was sent" in errors
    assert rt.links.find() == []


def test_a_file_dropped_again_after_its_link_was_paid_makes_no_new_link(rt: Runtime) -> None:
    """Issue 14 item 14: the Instant Bank Pay rules hold on every intake path: reuse, or refuse a paid debt."""
    inbox = InboxIntake(rt.links, rt.settings.home / "inbox", settle=0.0)
    inbox.folder.mkdir()
    (inbox.folder / "batch.csv").write_text(BULK)
    inbox.ready()
    inbox.scan()
    first = {x.invoice_number: x for x in rt.links.find(["outstanding"])}
    assert first["Q-100"].provider_ref is not None
    sandbox.pay(rt.settings.home, first["Q-100"].provider_ref)
    EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
    (inbox.folder / "again.csv").write_text(BULK)
    inbox.ready()
    (moved,) = inbox.scan()
    report = list(csv.reader(moved.with_name(moved.name + ".links.csv").open()))
    refused = next(r for r in report if r[0] == "Q-100")
    assert refused[2] == "refused" and "was paid" in refused[4]
    reused = next(r for r in report if r[0] == "Q-101")
    assert reused[1] == first["Q-101"].id and reused[4] == "true"  # the outstanding link comes back
    assert len(rt.links.find()) == 2  # nothing new was made


def test_the_inbox_never_follows_a_link(rt: Runtime, tmp_path: Path) -> None:
    """Issue 14 item 13: a symlink (to a private file, here) is not read, reported on, or moved."""
    inbox = InboxIntake(rt.links, rt.settings.home / "inbox", settle=0.0)
    inbox.folder.mkdir()
    private = tmp_path / "private.csv"
    private.write_text("SECRET-FIRST-LINE\n" + BULK)
    private.chmod(0o600)
    (inbox.folder / "linked.csv").symlink_to(private)
    (inbox.folder / "folder.csv").mkdir()
    inbox.ready()
    assert inbox.scan() == []
    assert (inbox.folder / "linked.csv").is_symlink() and rt.links.find() == []
    reports = [p.read_text() for pattern in ("*.txt", "*.links.csv") for p in inbox.folder.rglob(pattern)]
    assert not any("SECRET-FIRST-LINE" in text for text in reports)


def test_a_big_file_is_taken_in_slices_so_the_other_jobs_run_between(rt: Runtime) -> None:
    """Issue 14 item 15: each scan makes at most slice_rows links; the file is moved when its last row is done."""
    inbox = InboxIntake(rt.links, rt.settings.home / "inbox", settle=0.0, slice_rows=2)
    inbox.folder.mkdir()
    rows = [f"Q-{200 + i},2026-11-01,2026-12-01,Payer {i},p{i}@example.com,{10 + i}.00,\n" for i in range(5)]
    (inbox.folder / "big.csv").write_text(BULK.splitlines(keepends=True)[0] + "".join(rows))
    inbox.ready()
    made = []
    for _ in range(3):
        finished = inbox.scan()
        made.append(len(rt.links.find()))
    assert made == [2, 4, 5] and [p.parent.name for p in finished] == ["done"]
    report = list(csv.reader(finished[0].with_name(finished[0].name + ".links.csv").open()))
    assert [r[0] for r in report[1:]] == [f"Q-{200 + i}" for i in range(5)]
    assert not (inbox.folder / "big.csv").exists()


def test_a_writer_that_pauses_between_rows_is_waited_for(rt: Runtime) -> None:
    """Issue 14 item 12: a file written in place and paused for seconds is not read half-written (by default the
    inbox waits 15 s of no change); the .part-then-rename convention needs no wait at all."""
    clock = [0.0]
    inbox = InboxIntake(rt.links, rt.settings.home / "inbox", clock=lambda: clock[0])
    inbox.folder.mkdir()
    half = BULK.replace("120.50", "1")[: BULK.index("Ada")]  # the writer stopped mid-row
    (inbox.folder / "slow.csv").write_text(half)
    inbox.ready()
    clock[0] = 10.0  # paused for ten seconds
    assert inbox.scan() == [] and rt.links.find() == []
    (inbox.folder / "slow.csv").write_text(BULK)  # ... and finished
    clock[0] = 20.0
    assert inbox.scan() == []
    clock[0] = 36.0
    (moved,) = inbox.scan()
    assert moved.parent.name == "done"
    assert sorted(x.amount for x in rt.links.find()) == [Decimal("99.99"), Decimal("120.50")]
