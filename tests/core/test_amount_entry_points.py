"""One amount rule for every entry point (agent.core.model.parse_amount): the same text gets the same answer from
the bulk file, the inbox, the request table, the API and the command line, in a GBP account.

Typed amounts (bulk, inbox, request table) may carry the account's own symbol; JSON money and command-line
arguments are plain decimal strings, so a symbol there is refused too. A refusal is a row problem, a 422 or exit 2.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from tests_support import STAFF, bearer, demo_runtime

from agent.api.app import serve_api
from agent.cli.main import main
from agent.core.errors import DataError
from agent.core.model import parse_amount
from agent.engine.bulk import read_bulk
from agent.engine.intake import process_request_table
from agent.runtime import Runtime
from agent.state.schema import audit_log

# (typed text, the amount it means or None when refused, accepted with a symbol only where a person typed it)
CASES = [
    ("250", Decimal("250.00")),
    ("1,050.00", Decimal("1050.00")),
    ("1 050.00", Decimal("1050.00")),
    ("£250.00", Decimal("250.00")),
    ("GBP 250.00", Decimal("250.00")),
    ("$250.00", None),
    ("€99.00", None),
    ("10 50", None),
    ("1 2 3.4 5", None),
    ("10,50", None),
    ("1e3", None),
    ("-5", None),
    ("0.00", None),
    ("1.005", None),
]
SYMBOL = ("£", "GBP")
IDS = [c[0] for c in CASES]


def plain(text: str, expected: Decimal | None) -> Decimal | None:
    """What a plain-decimal entry point (JSON, CLI) answers: the typed answer, but no symbol at all."""
    return None if text.startswith(SYMBOL) else expected


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with demo_runtime(tmp_path_factory.mktemp("amounts") / "home") as runtime:
        yield runtime


@pytest.mark.parametrize(("text", "expected"), CASES, ids=IDS)
def test_the_parser(text: str, expected: Decimal | None) -> None:
    if expected is None:
        with pytest.raises(DataError):
            parse_amount(text, "GBP")
    else:
        assert parse_amount(text, "GBP") == expected


@pytest.mark.parametrize(("text", "expected"), CASES, ids=IDS)
def test_a_bulk_file_and_the_inbox(text: str, expected: Decimal | None, tmp_path: Path) -> None:
    """The inbox reads its files with read_bulk, so a refused amount there is the same row problem."""
    path = tmp_path / "upload.csv"
    path.write_text("Invoice Number,Invoice Date,Due Date,Recipient Name,Recipient Email,Amount,Custom Message\n"
                    f'Q-1,2026-11-01,2026-12-01,Ada Lovelace,ada@example.com,"{text}",\n', encoding="utf-8")
    bulk = read_bulk(path, currency="GBP")
    if expected is None:
        assert [(p.row, p.field) for p in bulk.problems] == [(2, "Amount")]
    else:
        assert bulk.ok and bulk.rows[0].amount == expected


@pytest.mark.parametrize(("text", "expected"), CASES, ids=IDS)
def test_the_request_table(rt: Runtime, text: str, expected: Decimal | None) -> None:
    with sqlite3.connect(rt.settings.home / "demo-firm.db") as db:
        key = db.execute("INSERT INTO pay_requests (matter_no, amount) VALUES ('M-2026-0011', ?)", (text,)).lastrowid
    process_request_table(rt.connector, rt.mapping.requests, rt.links)
    with sqlite3.connect(rt.settings.home / "demo-firm.db") as db:
        status, link_id, error = db.execute("SELECT status, link_id, error FROM pay_requests WHERE id = ?",
                                            (key,)).fetchone()
    if expected is None:
        assert status == "FAILED" and "amount" in error
        with rt.store.read() as conn:
            entries = conn.execute(audit_log.select().where(audit_log.c.object_kind == "request",
                                                            audit_log.c.object_id == str(key))).all()
        assert len(entries) == 1  # the refusal is one audit entry
    else:
        assert status == "LINKED" and rt.links.get(link_id).amount == expected
        rt.links.cancel(STAFF, link_id)  # so the next case makes a link anew


@pytest.fixture(scope="module")
def api(rt: Runtime) -> Iterator[httpx.Client]:
    server = serve_api(rt, "127.0.0.1", 0)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {bearer(rt.store)}"},
                      timeout=10) as client:
        yield client
    server.stop()


@pytest.mark.parametrize(("text", "expected"), CASES, ids=IDS)
def test_the_api(api: httpx.Client, text: str, expected: Decimal | None) -> None:
    answer = api.post("/links/quick", json={"name": "Ada", "email": "ada@example.com", "amount": text})
    want = plain(text, expected)
    if want is None:
        assert answer.status_code == 422, answer.text
    else:
        assert answer.status_code == 201 and Decimal(answer.json()["amount"]) == want
        assert api.post(f"/links/{answer.json()['id']}/cancel").status_code == 200


def test_the_api_takes_no_json_number(api: httpx.Client) -> None:
    for number in (1000, 10.5):
        answer = api.post("/links/quick", json={"name": "Ada", "email": "ada@example.com", "amount": number})
        assert answer.status_code == 422 and "decimal string" in answer.text


@pytest.mark.parametrize(("text", "expected"), CASES, ids=IDS)
def test_the_command_line(rt: Runtime, text: str, expected: Decimal | None) -> None:
    try:
        code = main(["--home", str(rt.settings.home), "links", "quick", "--name", "Ada", "--email",
                     "ada@example.com", f"--amount={text}"])
    except SystemExit as exc:  # argparse refused the argument itself
        code = int(exc.code or 0)
    assert code == (2 if plain(text, expected) is None else 0)
