"""Request intake besides the CLI: a request table in the firm database, and an inbox folder of bulk files.

Both are idempotent through the link engine's existing-link check: a request retried after a crash gets the
link it already has (a matter's outstanding link; a quick link by invoice number), never a second one.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigurationError, DataError, RuleError, TransientError
from agent.core.model import Actor, check_decimals, parse_amount, to_decimal
from agent.core.scrub import scrub
from agent.engine.bulk import BulkProblem, BulkRow, read_bulk
from agent.engine.export import neutralise
from agent.engine.links import LinkEngine, LinkRequest
from agent.state import audit
from connectors.database.contract import Connector
from mappings.format import RequestTable

log = logging.getLogger("ledgerlink.intake")

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")


def _request_amount(value: object, currency: str) -> Decimal | None:
    """A request row's amount: text as a person typed it (agent.core.model.parse_amount), a number column as the
    database holds it; empty asks for what is owed."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return parse_amount(value, currency)
    return check_decimals(to_decimal(value, field="amount"), currency)


def process_request_table(connector: Connector, spec: RequestTable | None, links: LinkEngine, limit: int = 50) -> int:
    """Create links for NEW rows of the mapping's request table and write URL and status back to each row;
    each link is audited as made by the intake "<table> row <key>"."""
    if spec is None:
        return 0
    done = 0
    for req in connector.pending_requests(limit):
        try:
            account = req.get("account") or None
            if account is not None and account not in links.settings.accounts:
                raise DataError(f"account: unknown merchant account {account!r}; configured: "
                                f"{sorted(links.settings.accounts)}")
            actor = Actor("intake", f"{spec.table} row {req['key']}")
            with audit.attempt(links.store, actor, "link.create", "request", str(req["key"]),
                               before={"amount": req.get("amount")}):  # a refused amount is one entry
                amount = _request_amount(req.get("amount"), links.settings.account(account).currency)
            link = links.create(actor, LinkRequest(
                matter=str(req["matter"]), amount=amount, description=req.get("description") or None,
                account=account))
        except (TransientError, ConfigurationError):
            raise  # the row stays NEW and is retried on the next pass, once the outage or the setup is fixed
        except (RuleError, DataError) as exc:
            connector.write_request_result(req["key"], spec.failed_value, {"error": _row_error(str(exc))})
            log.warning("request %s refused: %s", req["key"], exc)
            continue
        except Exception as exc:  # a row nobody foresaw must not block every row behind it, pass after pass
            log.exception("request %s could not be processed", req["key"])
            connector.write_request_result(req["key"], spec.failed_value, {
                "error": _row_error(f"could not be processed ({type(exc).__name__}: {exc}); fix the row and "
                                    f"set its status back to {spec.pending_value} to retry")})
            continue
        connector.write_request_result(req["key"], spec.done_value, {
            "url": link.url, "link_id": link.id, "link_status": link.status, "error": None})
        done += 1
    return done


ROW_ERROR_LENGTH = 500


def _row_error(message: str) -> str:
    """An error for the row's own column: scrubbed of secrets and short enough for a typical varchar column."""
    text = scrub(message)
    return text if len(text) <= ROW_ERROR_LENGTH else text[: ROW_ERROR_LENGTH - 3] + "..."


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")


@dataclass
class _Work:
    """A file part-way through: its rows, how many have links, and its report so far."""

    rows: list[BulkRow]
    done: int = 0
    report: io.StringIO = field(default_factory=io.StringIO)

    def __post_init__(self) -> None:
        self.writer = csv.writer(self.report, lineterminator="\n")


@dataclass
class _Seen:
    size: int
    mtime: float
    since: float


@dataclass
class InboxIntake:
    """Bulk files (CSV/TXT) dropped into ``folder``; taken only once complete, moved to done/ or failed/.

    The convention (README): write ``name.part`` and rename it to ``name.csv`` when it is complete; ``.part``,
    ``.tmp`` and the like are never read. For a writer that does not follow it, a file is taken only once its size
    and mtime have not changed for ``settle`` seconds, long enough for a writer that pauses between rows.
    """

    links: LinkEngine
    folder: Path
    settle: float = 15.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[Path, _Seen] = field(default_factory=dict)
    slice_rows: int = 200  # links made per scan: the service loop's other jobs run between slices
    _refused: set[Path] = field(default_factory=set)
    _work: dict[Path, _Work] = field(default_factory=dict)  # files part-way through, in the order they started

    def ready(self) -> list[Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        now = self.clock()
        ready = []
        present = set()
        for path in sorted(self.folder.iterdir()):
            if path.is_symlink() or not path.is_file():
                self._refuse_once(path)  # a link could point at any file the agent may read; read only our own
                continue
            if path.name.startswith(".") or path.name.endswith(IGNORED_SUFFIXES):
                continue
            if path.suffix.lower() not in (".csv", ".txt"):
                continue
            present.add(path)
            st = path.stat()
            seen = self._seen.get(path)
            if seen is None or (seen.size, seen.mtime) != (st.st_size, st.st_mtime):
                self._seen[path] = _Seen(st.st_size, st.st_mtime, now)
            elif now - seen.since >= self.settle:
                ready.append(path)
        self._seen = {p: s for p, s in self._seen.items() if p in present}
        return ready

    def _refuse_once(self, path: Path) -> None:
        if path.name in ("done", "failed") or path in self._refused:
            return
        self._refused.add(path)
        log.warning("inbox: %s is not a regular file (a link, a folder or a device) and is not read; drop files "
                    "themselves into %s", path.name, self.folder)

    def scan(self) -> list[Path]:
        """One slice of work (at most ``slice_rows`` links), so a big file never holds up payments and postings:
        the file in progress goes on, then the next complete ones. Returns where each finished file was moved."""
        finished: list[Path] = []
        budget = self.slice_rows
        for path in [*self._work, *(p for p in self.ready() if p not in self._work)]:
            if budget <= 0:
                break
            moved, used = self._advance(path, budget)
            budget -= max(used, 1)
            if moved is not None:
                finished.append(moved)
        return finished

    def _advance(self, path: Path, budget: int) -> tuple[Path | None, int]:
        """Make up to ``budget`` more links for ``path``; the file is moved (and returned) once every row is done."""
        work = self._work.get(path)
        if work is None:
            bulk = read_bulk(path)
            if not bulk.ok:
                return self._refuse(path, bulk.problems), 0
            work = self._work[path] = _Work(bulk.rows)
            work.writer.writerow(["invoice_number", "link_id", "status", "url", "existing"])
        rows = work.rows[work.done:work.done + budget]
        for row in rows:
            self._link(path, row, work.writer)
        work.done += len(rows)
        if work.done < len(work.rows):
            log.info("inbox file %s: %d of %d rows", path.name, work.done, len(work.rows))
            return None, len(rows)
        del self._work[path]
        target = self._move(path, "done", _stamp())
        target.with_name(target.name + ".links.csv").write_text(work.report.getvalue(), encoding="utf-8", newline="")
        log.info("inbox file %s: %d link(s)", path.name, len(work.rows))
        return target, len(rows)

    def _link(self, path: Path, row: BulkRow, writer: Any) -> None:
        try:
            link = self.links.create(Actor("intake", path.name), row.to_request(None))
        except (RuleError, DataError) as exc:  # this row only (a paid invoice, say): the others still get links
            writer.writerow([neutralise(row.invoice), "", "refused", "", neutralise(str(exc))])
            log.warning("inbox file %s, invoice %s refused: %s", path.name, row.invoice, exc)
            return
        writer.writerow([neutralise(row.invoice), link.id, link.status, link.url, str(link.existing).lower()])

    def _refuse(self, path: Path, problems: list[BulkProblem]) -> Path:
        target = self._move(path, "failed", _stamp())
        report = [f"{path.name}: {len(problems)} problem(s); nothing was sent. Fix the file and drop it into the "
                  "inbox again."]
        report += [f"row {p.row}, {p.field}: {p.message} (value {p.value!r})" for p in problems]
        target.with_name(target.name + ".errors.txt").write_text("\n".join(report) + "\n", encoding="utf-8")
        with self.links.store.begin() as conn:  # nothing was made: one entry says why
            first = problems[0]
            audit.record(conn, Actor("intake", path.name), "intake.refuse", "file", path.name,
                         after={"problems": len(problems)}, outcome="failed",
                         error=f"row {first.row}, {first.field}: {first.message}")
        log.warning("inbox file %s refused with %d problem(s)", path.name, len(problems))
        return target

    def _move(self, path: Path, where: str, stamp: str) -> Path:
        folder = self.folder / where
        folder.mkdir(exist_ok=True)
        target = folder / f"{stamp}-{path.name}"
        shutil.move(path, target)
        self._seen.pop(path, None)
        return target


