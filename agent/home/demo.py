"""The demo firm: a small matter-management database in SQLite, generated on first run.

It is shaped like a real firm's schema on purpose (its own names, amounts in pence, a receipts table the
postings write into, triggers that bump updated_at) so the demo exercises the same mapping path as a firm. The
client ledger, office expenses, bank deposits and transfer requests take the client-money postings, and
ledgerlink_audit a copy of each signed audit checkpoint.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from importlib import resources
from pathlib import Path

from agent.home.settings import CONFIG_NAME

SCHEMA = """
CREATE TABLE clients (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')));
CREATE TABLE payers (
    id INTEGER PRIMARY KEY, client_id INTEGER REFERENCES clients(id), name TEXT NOT NULL, email TEXT, phone TEXT,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')));
CREATE TABLE matters (
    id INTEGER PRIMARY KEY, matter_no TEXT NOT NULL UNIQUE, title TEXT NOT NULL,
    client_id INTEGER REFERENCES clients(id), payer_id INTEGER REFERENCES payers(id),
    state TEXT NOT NULL DEFAULT 'A',
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')));
CREATE TABLE bills (
    id INTEGER PRIMARY KEY, bill_no TEXT NOT NULL UNIQUE, matter_id INTEGER NOT NULL REFERENCES matters(id),
    issued_on TEXT NOT NULL, due_on TEXT, total_pence INTEGER NOT NULL, balance_pence INTEGER NOT NULL,
    currency TEXT NOT NULL DEFAULT 'GBP', state TEXT NOT NULL DEFAULT 'OPEN',
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')));
CREATE INDEX bills_wm ON bills(updated_at, id);
CREATE INDEX matters_wm ON matters(updated_at, id);
CREATE TABLE pay_requests (
    id INTEGER PRIMARY KEY, matter_no TEXT NOT NULL, amount TEXT, note TEXT, status TEXT NOT NULL DEFAULT 'NEW',
    link_url TEXT, link_id TEXT, link_status TEXT, error TEXT);
CREATE TABLE receipts (
    id INTEGER PRIMARY KEY, reference TEXT NOT NULL UNIQUE, bill_id INTEGER NOT NULL REFERENCES bills(id),
    amount_pence INTEGER NOT NULL, received_at TEXT NOT NULL, method TEXT NOT NULL);
CREATE TABLE client_ledger (
    id INTEGER PRIMARY KEY, reference TEXT NOT NULL UNIQUE, matter_id INTEGER NOT NULL REFERENCES matters(id),
    amount_pence INTEGER NOT NULL, received_at TEXT NOT NULL, method TEXT NOT NULL, entry TEXT NOT NULL);
CREATE TABLE office_expenses (
    id INTEGER PRIMARY KEY, reference TEXT NOT NULL UNIQUE, account TEXT NOT NULL, payout TEXT NOT NULL,
    amount_pence INTEGER NOT NULL, incurred_on TEXT NOT NULL, description TEXT NOT NULL);
CREATE TABLE bank_deposits (
    id INTEGER PRIMARY KEY, reference TEXT NOT NULL UNIQUE, account TEXT NOT NULL, payout TEXT NOT NULL,
    bank_reference TEXT NOT NULL, amount_pence INTEGER NOT NULL, deposited_on TEXT NOT NULL);
CREATE TABLE transfer_requests (
    id INTEGER PRIMARY KEY, reference TEXT NOT NULL UNIQUE, from_account TEXT NOT NULL, to_account TEXT NOT NULL,
    payout TEXT NOT NULL, amount_pence INTEGER NOT NULL, requested_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'REQUESTED');
CREATE TABLE ledgerlink_audit (
    seq INTEGER NOT NULL, entry_hash TEXT NOT NULL, signed_at TEXT NOT NULL, signer TEXT NOT NULL,
    signature TEXT NOT NULL);
"""

TRIGGERS = [
    f"""CREATE TRIGGER {t}_touch AFTER UPDATE ON {t} FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
    BEGIN UPDATE {t} SET updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = NEW.id; END;"""
    for t in ("clients", "payers", "matters", "bills")
]

# A receipt moves the bill's balance and marks it paid when nothing is left: done by the firm's own system in
# real life, by a trigger here, so the demo mapping only has to insert the receipt.
RECEIPT_TRIGGER = """CREATE TRIGGER receipts_apply AFTER INSERT ON receipts FOR EACH ROW BEGIN
    UPDATE bills SET balance_pence = balance_pence - NEW.amount_pence,
        state = CASE WHEN balance_pence - NEW.amount_pence <= 0 THEN 'PAID' ELSE 'OPEN' END
    WHERE id = NEW.bill_id; END;"""

SURNAMES = ["Okafor", "Brennan", "Nakamura", "Ó Súilleabháin", "Fernández", "Whitfield", "Kowalczyk", "Adeyemi",
            "Lindqvist", "Chaudhry", "Müller", "Harrington"]
MATTERS = ["Conveyancing: 14 Elm Row", "Probate: estate of the late J. Reed", "Employment tribunal claim",
           "Lease renewal", "Divorce and financial remedy", "Company formation", "Boundary dispute",
           "Will drafting", "Debt recovery", "Commercial contract review"]


def create_demo_firm(path: Path, *, seed: int = 7, today: dt.date | None = None) -> Path:
    """Write the demo firm database at ``path`` unless it already exists."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    today = today or dt.date.today()
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript(SCHEMA)
        for trigger in [*TRIGGERS, RECEIPT_TRIGGER]:
            conn.execute(trigger)
        bill_no = 1000
        for i, surname in enumerate(SURNAMES, start=1):
            client = f"{rng.choice(['Amara', 'Liam', 'Yuki', 'Siobhán', 'Lucía', 'Tom', 'Zofia'])} {surname}"
            email = None if i == 4 else f"{surname.lower().replace(' ', '').replace('ó', 'o')}@example.com"
            conn.execute("INSERT INTO clients (id, name, email, phone) VALUES (?, ?, ?, ?)",
                         (i, client, email, f"+44 7700 900{i:03d}"))
            conn.execute("INSERT INTO payers (id, client_id, name, email, phone) VALUES (?, ?, ?, ?, ?)",
                         (i, i, client, email, f"+44 7700 900{i:03d}"))
            for j in range(1 + (i % 2)):
                matter_id = i * 10 + j
                conn.execute(
                    "INSERT INTO matters (id, matter_no, title, client_id, payer_id, state) VALUES (?,?,?,?,?,?)",
                    (matter_id, f"M-{2026}-{matter_id:04d}", MATTERS[(i + j) % len(MATTERS)], i, i,
                     "C" if (i, j) == (12, 0) else "A"),
                )
                for k in range(1 + (matter_id % 3)):
                    bill_no += 1
                    total = rng.randrange(15_000, 250_000, 5)
                    paid = 0 if k == 0 else rng.choice([0, total // 2])
                    issued = today - dt.timedelta(days=60 - 20 * k)
                    conn.execute(
                        "INSERT INTO bills (bill_no, matter_id, issued_on, due_on, total_pence, balance_pence)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (f"INV-{bill_no}", matter_id, issued.isoformat(),
                         (issued + dt.timedelta(days=30)).isoformat(), total, total - paid),
                    )
    conn.close()
    return path


DEFAULT_CONFIG = """\
# Ledgerlink agent settings. Environment variables LEDGERLINK_<NAME> override these (nested: __).
mapping = "mapping.yaml"
firm_timezone = "Europe/London"
service_name = "Demo Legal LLP"
# secrets_backend = "auto"   # auto | file (headless servers) | env (containers)

[accounts.operating]
provider = "sandbox"
currency = "GBP"
expiry_days = 7
disclaimer = "Demo Legal LLP is authorised and regulated by the Solicitors Regulation Authority (demo)."

[accounts.trust]
kind = "client"          # client money (SRA Accounts Rules): posted to the matter's client ledger, never pays fees
provider = "sandbox"
currency = "GBP"
expiry_days = 14
fees_account = "operating"
options = { payout_fees = "gross" }  # sandbox: paid out in full, its fees charged to fees_account's payout
"""


def init_home(home: Path, *, force: bool = False) -> list[Path]:
    """Write config, demo mapping and demo firm database into ``home``; existing files are kept unless force."""
    home.mkdir(parents=True, exist_ok=True)
    written = []
    config = home / CONFIG_NAME
    if force or not config.exists():
        config.write_text(DEFAULT_CONFIG, encoding="utf-8")
        written.append(config)
    mapping = home / "mapping.yaml"
    if force or not mapping.exists():
        mapping.write_bytes(resources.files("mappings").joinpath("demo.yaml").read_bytes())  # package data
        written.append(mapping)
    firm = home / "demo-firm.db"
    if not firm.exists():
        create_demo_firm(firm)
        written.append(firm)
    return written
