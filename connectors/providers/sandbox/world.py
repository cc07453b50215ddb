"""The sandbox's simulated provider: links, payments, mandates, collections and events in ``<home>/sandbox.db``.

The helpers below play the payer and the banks, so every state (pending, confirmed, failed, charged back, expired,
a Direct Debit retried after failing) can be produced on demand; SandboxProvider reads the same file.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from agent.core.errors import DataError
from agent.core.model import check_decimals
from connectors.providers.contract import (
    Collection,
    CollectionStatus,
    EventKind,
    LinkNotFound,
    LinkStatus,
    MandateStatus,
    PaymentMethod,
    PayoutItemKind,
    ProviderError,
    ProviderLink,
)
from connectors.providers.sandbox.money import MONEY_SCHEMA, pay_out_lines, return_payout, settle, take_back

DEFAULT_BASE = "http://127.0.0.1:8765"
DB_NAME = "sandbox.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS links (
    ref TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    link_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    description TEXT NOT NULL,
    reference TEXT NOT NULL,
    firm_name TEXT NOT NULL DEFAULT '',
    matter_number TEXT NOT NULL DEFAULT '',
    invoice_numbers TEXT NOT NULL DEFAULT '',
    disclaimer TEXT NOT NULL DEFAULT '',
    payer_name TEXT NOT NULL,
    payer_email TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    amount_paid TEXT,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (account, idempotency_key)
);
CREATE TABLE IF NOT EXISTS payments (
    payment_ref TEXT PRIMARY KEY,
    link_ref TEXT NOT NULL REFERENCES links(ref),
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    method TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    link_ref TEXT,
    payment_ref TEXT,
    amount TEXT,
    currency TEXT,
    method TEXT NOT NULL,
    raw_status TEXT NOT NULL,
    mandate_ref TEXT
);
CREATE TABLE IF NOT EXISTS mandates (
    ref TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    payer_key TEXT NOT NULL,
    payer_name TEXT NOT NULL,
    payer_email TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    schedule TEXT NOT NULL DEFAULT '[]',
    UNIQUE (account, idempotency_key)
);
CREATE TABLE IF NOT EXISTS collections (
    ref TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    mandate_ref TEXT NOT NULL REFERENCES mandates(ref),
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    charge_date TEXT NOT NULL,
    description TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (account, idempotency_key)
);
"""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    """Fixed-width UTC text so SQLite compares instants as strings."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


@contextmanager
def _db(home: str | Path) -> Iterator[sqlite3.Connection]:
    """One short BEGIN IMMEDIATE transaction, so the pay page and the agent can both write the file."""
    path = Path(home) / DB_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(_SCHEMA + MONEY_SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        _add_columns(conn)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


# Columns added after the first sandbox.db files were written: (table, column, definition).
_ADDED = (
    ("events", "mandate_ref", "TEXT"),  # Direct Debit
    *(("links", name, "TEXT NOT NULL DEFAULT ''")  # what the payer sees (issue 24)
      for name in ("firm_name", "matter_number", "invoice_numbers", "disclaimer")),
    ("mandates", "schedule", "TEXT NOT NULL DEFAULT '[]'"),  # the plan a mandate is set up for (issue 27)
)


def _add_columns(conn: sqlite3.Connection) -> None:
    """Bring a sandbox.db written by an earlier version up to the schema above."""
    for table, column, definition in _ADDED:
        if column not in {col[1] for col in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


class ChangeWatch:
    """Whether sandbox.db changed since a look, for a few microseconds: ``PRAGMA data_version`` on a connection
    kept open, which moves whenever any other connection (the pay page, a payer's process, our own writes
    through _db) commits. An idle agent's poll then never opens the file or takes its write lock."""

    def __init__(self, home: str | Path) -> None:
        self.path = Path(home) / DB_NAME
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the service's poll and the API's threads share one provider

    def version(self) -> int:
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            version: int = self._conn.execute("PRAGMA data_version").fetchone()[0]
            return version

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def next_expiry(conn: sqlite3.Connection) -> dt.datetime | None:
    """When the next outstanding link (of any account) expires: until then, expiry writes no event."""
    value = conn.execute("SELECT min(expires_at) FROM links WHERE status = ?",
                         (LinkStatus.OUTSTANDING.value,)).fetchone()[0]
    return dt.datetime.fromisoformat(value) if value else None


def _add_event(
    conn: sqlite3.Connection,
    link: sqlite3.Row,
    kind: EventKind,
    *,
    payment_ref: str | None = None,
    amount: str | None = None,
    method: str = PaymentMethod.BANK,
    raw_status: str = "",
) -> None:
    conn.execute(
        "INSERT INTO events (account, kind, occurred_at, link_ref, payment_ref, amount, currency, method,"
        " raw_status)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            link["account"],
            kind.value,
            _iso(_now()),
            link["ref"],
            payment_ref,
            amount,
            link["currency"] if amount is not None else None,
            method,
            raw_status or kind.value,
        ),
    )


def _link_row(conn: sqlite3.Connection, ref: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM links WHERE ref = ?", (ref,)).fetchone()
    if row is None:
        raise LinkNotFound(f"sandbox link {ref!r} does not exist")
    return row


def _payment_row(conn: sqlite3.Connection, payment_ref: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM payments WHERE payment_ref = ?", (payment_ref,)).fetchone()
    if row is None:
        raise ProviderError(f"sandbox payment {payment_ref!r} does not exist")
    return row


def _to_link(row: sqlite3.Row) -> ProviderLink:
    return ProviderLink(
        ref=row["ref"],
        url=row["url"],
        status=LinkStatus(row["status"]),
        expires_at=dt.datetime.fromisoformat(row["expires_at"]),
        amount_paid=Decimal(row["amount_paid"]) if row["amount_paid"] is not None else None,
    )


def _expire(conn: sqlite3.Connection, now: dt.datetime) -> list[str]:
    rows = conn.execute(
        "SELECT * FROM links WHERE status = ? AND expires_at <= ?", (LinkStatus.OUTSTANDING.value, _iso(now))
    ).fetchall()
    for row in rows:
        conn.execute("UPDATE links SET status = ? WHERE ref = ?", (LinkStatus.EXPIRED.value, row["ref"]))
        _add_event(conn, row, EventKind.LINK_EXPIRED)
    return [row["ref"] for row in rows]


def expire_due(home: str | Path, now: dt.datetime | None = None) -> list[str]:
    """Expire outstanding links whose expiry has passed (writing link_expired events); returns their refs."""
    with _db(home) as conn:
        return _expire(conn, now or _now())


def pay(
    home: str | Path, ref: str, amount: Decimal | None = None, method: str = "bank", confirm: bool = True
) -> str:
    """Pay a link as a payer would: payment_pending, then payment_confirmed unless ``confirm`` is False.

    Any payment, partial included, closes the link (single use). Returns the new payment_ref.
    """
    method = PaymentMethod(method).value
    with _db(home) as conn:
        _expire(conn, _now())
        link = _link_row(conn, ref)
        if link["status"] != LinkStatus.OUTSTANDING:
            raise ProviderError(f"sandbox link {ref} is {link['status']} and cannot be paid")
        due = Decimal(link["amount"])
        paid = due if amount is None else amount
        try:
            paid = check_decimals(paid, link["currency"])
        except DataError as exc:
            raise ProviderError(str(exc)) from None
        if not Decimal(0) < paid <= due:
            raise ProviderError(f"payment {paid} must be above 0 and at most {due}")
        payment_ref = "pay_" + secrets.token_urlsafe(12)
        conn.execute(
            "INSERT INTO payments (payment_ref, link_ref, amount, currency, method, status)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (payment_ref, ref, str(paid), link["currency"], method, "pending"),
        )
        conn.execute(
            "UPDATE links SET status = ?, amount_paid = ? WHERE ref = ?",
            (LinkStatus.PAYMENT_RECEIVED.value, str(paid), ref),
        )
        _add_event(
            conn, link, EventKind.PAYMENT_PENDING, payment_ref=payment_ref, amount=str(paid), method=method
        )
        if confirm:
            _confirm(conn, payment_ref)
    return payment_ref


def _confirm(conn: sqlite3.Connection, payment_ref: str) -> None:
    payment = _payment_row(conn, payment_ref)
    if payment["status"] != "pending":
        raise ProviderError(f"sandbox payment {payment_ref} is {payment['status']}, not pending")
    conn.execute("UPDATE payments SET status = 'confirmed' WHERE payment_ref = ?", (payment_ref,))
    link = _link_row(conn, payment["link_ref"])
    settle(conn, link["account"], payment_ref, Decimal(payment["amount"]), payment["currency"], payment["method"],
           _iso(_now()))
    _add_event(
        conn,
        _link_row(conn, payment["link_ref"]),
        EventKind.PAYMENT_CONFIRMED,
        payment_ref=payment_ref,
        amount=payment["amount"],
        method=payment["method"],
    )


def confirm_payment(home: str | Path, payment_ref: str) -> None:
    """Confirm a payment left pending by ``pay(..., confirm=False)``."""
    with _db(home) as conn:
        _confirm(conn, payment_ref)


def fail_payment(home: str | Path, payment_ref: str) -> None:
    """The payment bounced: payment_failed event, payment and link marked failed."""
    with _db(home) as conn:
        payment = _payment_row(conn, payment_ref)
        if payment["status"] not in ("pending", "confirmed"):
            raise ProviderError(f"sandbox payment {payment_ref} is {payment['status']} and cannot fail")
        conn.execute("UPDATE payments SET status = 'failed' WHERE payment_ref = ?", (payment_ref,))
        if payment["status"] == "confirmed":  # settled already: the money leaves the next payout
            take_back(conn, _link_row(conn, payment["link_ref"])["account"], payment_ref, Decimal(payment["amount"]),
                      payment["currency"], PayoutItemKind.ADJUSTMENT, _iso(_now()))
        conn.execute(
            "UPDATE links SET status = ? WHERE ref = ?", (LinkStatus.FAILED.value, payment["link_ref"])
        )
        _add_event(
            conn,
            _link_row(conn, payment["link_ref"]),
            EventKind.PAYMENT_FAILED,
            payment_ref=payment_ref,
            amount=payment["amount"],
            method=payment["method"],
        )


def charge_back(home: str | Path, payment_ref: str) -> None:
    """The payer disputed a confirmed payment: payment_charged_back event."""
    with _db(home) as conn:
        payment = _payment_row(conn, payment_ref)
        if payment["status"] != "confirmed":
            raise ProviderError(
                f"sandbox payment {payment_ref} is {payment['status']}; only confirmed ones charge back"
            )
        conn.execute("UPDATE payments SET status = 'charged_back' WHERE payment_ref = ?", (payment_ref,))
        take_back(conn, _link_row(conn, payment["link_ref"])["account"], payment_ref, Decimal(payment["amount"]),
                  payment["currency"], PayoutItemKind.CHARGEBACK, _iso(_now()))
        _add_event(
            conn,
            _link_row(conn, payment["link_ref"]),
            EventKind.PAYMENT_CHARGED_BACK,
            payment_ref=payment_ref,
            amount=payment["amount"],
            method=payment["method"],
        )


# --- Direct Debit: mandates and collections ------------------------------------------------------------------

# Where a collection may move next, and the event each move writes (GoCardless's payment lifecycle).
_COLLECTION_MOVES: dict[str, tuple[tuple[str, ...], EventKind]] = {
    CollectionStatus.SUBMITTED: ((CollectionStatus.PENDING_SUBMISSION,), EventKind.PAYMENT_PENDING),
    CollectionStatus.CONFIRMED: ((CollectionStatus.SUBMITTED,), EventKind.PAYMENT_CONFIRMED),
    CollectionStatus.PAID_OUT: ((CollectionStatus.CONFIRMED,), EventKind.PAYMENT_CONFIRMED),
    CollectionStatus.FAILED: (
        (CollectionStatus.PENDING_SUBMISSION, CollectionStatus.SUBMITTED, CollectionStatus.CONFIRMED),
        EventKind.PAYMENT_FAILED,
    ),
    CollectionStatus.CHARGED_BACK: (
        (CollectionStatus.CONFIRMED, CollectionStatus.PAID_OUT),
        EventKind.PAYMENT_CHARGED_BACK,
    ),
    CollectionStatus.CANCELLED: (
        (CollectionStatus.PENDING_CUSTOMER_APPROVAL, CollectionStatus.PENDING_SUBMISSION),
        EventKind.COLLECTION_CANCELLED,
    ),
}
COLLECTABLE_MANDATES = (MandateStatus.PENDING_SUBMISSION, MandateStatus.SUBMITTED, MandateStatus.ACTIVE)


def _dd_event(
    conn: sqlite3.Connection,
    account: str,
    kind: EventKind,
    raw_status: str,
    *,
    mandate_ref: str,
    collection: sqlite3.Row | None = None,
) -> None:
    conn.execute(
        "INSERT INTO events (account, kind, occurred_at, payment_ref, amount, currency, method, raw_status,"
        " mandate_ref) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            account,
            kind.value,
            _iso(_now()),
            collection["ref"] if collection is not None else None,
            collection["amount"] if collection is not None else None,
            collection["currency"] if collection is not None else None,
            PaymentMethod.DIRECT_DEBIT.value,
            raw_status,
            mandate_ref,
        ),
    )


def _mandate_row(conn: sqlite3.Connection, ref: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM mandates WHERE ref = ?", (ref,)).fetchone()
    if row is None:  # the contract's not-found refusal, as GoCardless's 404 is (DirectDebitContract)
        raise LinkNotFound(f"sandbox mandate {ref!r} does not exist")
    return row


def _collection_row(conn: sqlite3.Connection, ref: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM collections WHERE ref = ?", (ref,)).fetchone()
    if row is None:
        raise LinkNotFound(f"sandbox collection {ref!r} does not exist")
    return row


def _to_collection(row: sqlite3.Row) -> Collection:
    return Collection(
        ref=row["ref"],
        status=CollectionStatus(row["status"]),
        amount=Decimal(row["amount"]),
        currency=row["currency"],
        charge_date=dt.date.fromisoformat(row["charge_date"]),
    )


def _move_collection(conn: sqlite3.Connection, ref: str, status: CollectionStatus) -> sqlite3.Row:
    row = _collection_row(conn, ref)
    sources, kind = _COLLECTION_MOVES[status]
    if row["status"] not in sources:
        raise ProviderError(f"sandbox collection {ref} is {row['status']} and cannot become {status}")
    conn.execute("UPDATE collections SET status = ? WHERE ref = ?", (status.value, ref))
    _collection_money(conn, row, status)
    row = _collection_row(conn, ref)
    _dd_event(conn, row["account"], kind, status.value, mandate_ref=row["mandate_ref"], collection=row)
    return row


def _collection_money(conn: sqlite3.Connection, row: sqlite3.Row, status: CollectionStatus) -> None:
    """A collection's money on its account's balance: settled when confirmed, taken back when it is charged
    back or fails after confirmation."""
    amount, now = Decimal(row["amount"]), _iso(_now())
    if status == CollectionStatus.CONFIRMED:
        settle(conn, row["account"], row["ref"], amount, row["currency"], PaymentMethod.DIRECT_DEBIT, now)
    elif status == CollectionStatus.CHARGED_BACK:
        take_back(conn, row["account"], row["ref"], amount, row["currency"], PayoutItemKind.CHARGEBACK, now)
    elif status == CollectionStatus.FAILED and row["status"] == CollectionStatus.CONFIRMED:
        take_back(conn, row["account"], row["ref"], amount, row["currency"], PayoutItemKind.ADJUSTMENT, now)


def settled(home: str | Path, account: str, payment_ref: str, amount: Decimal, currency: str,
            method: str = PaymentMethod.BANK) -> None:
    """A payment the sandbox settles without a link of its own (a harness's seeded payment): fees and all."""
    with _db(home) as conn:
        settle(conn, account, payment_ref, amount, currency, method, _iso(_now()))


def pay_out(home: str | Path, until: dt.datetime | None = None) -> list[str]:
    """The banks' end of day: pay each account its unpaid balance lines before ``until`` (default: now), one
    payout per account and day. The provider runs this itself for the days before today when payouts are read."""
    now = _now()
    with _db(home) as conn:
        return pay_out_lines(conn, _iso(until or now + dt.timedelta(microseconds=1)), now)


def fail_payout(home: str | Path, payout_ref: str) -> None:
    """The firm's bank returned a payout (a closed account): it is failed, and its amount goes back to the account's
    balance as one line for the next payout, as Stripe returns a failed payout's funds (a payout_failure balance
    transaction): its payments and fees stay where they were paid out."""
    with _db(home) as conn:
        if not return_payout(conn, payout_ref, _iso(_now())):
            raise ProviderError(f"sandbox payout {payout_ref!r} is not a paid payout")


def set_collection(home: str | Path, ref: str, status: str) -> None:
    """Move a collection as the banks would: submitted, confirmed, paid_out, failed, charged_back or cancelled."""
    with _db(home) as conn:
        _move_collection(conn, ref, CollectionStatus(status))


def resubmit_collection(home: str | Path, ref: str) -> None:
    """Retry a failed collection, as GoCardless's payments retry (or Success+) does: resubmission_requested puts
    it back to pending_submission, and it goes through submitted and confirmed or failed again."""
    with _db(home) as conn:
        row = _collection_row(conn, ref)
        if row["status"] != CollectionStatus.FAILED:
            raise ProviderError(f"sandbox collection {ref} is {row['status']}: retry_failed (it has not failed)")
        conn.execute(
            "UPDATE collections SET status = ? WHERE ref = ?", (CollectionStatus.PENDING_SUBMISSION.value, ref)
        )
        row = _collection_row(conn, ref)
        _dd_event(conn, row["account"], EventKind.PAYMENT_PENDING, CollectionStatus.PENDING_SUBMISSION.value,
                  mandate_ref=row["mandate_ref"], collection=row)


def set_mandate(home: str | Path, ref: str, status: str) -> None:
    """Move a mandate (the payer finished the flow, the bank refused it, the payer cancelled it...).

    As at GoCardless, a mandate that can no longer collect cancels its collections not yet submitted.
    """
    status = MandateStatus(status)
    with _db(home) as conn:
        row = _mandate_row(conn, ref)
        conn.execute("UPDATE mandates SET status = ? WHERE ref = ?", (status.value, ref))
        _dd_event(conn, row["account"], EventKind.MANDATE_CHANGED, status.value, mandate_ref=ref)
        if status not in COLLECTABLE_MANDATES:
            for coll in conn.execute(
                "SELECT ref FROM collections WHERE mandate_ref = ? AND status = ?",
                (ref, CollectionStatus.PENDING_SUBMISSION.value),
            ).fetchall():
                _move_collection(conn, coll["ref"], CollectionStatus.CANCELLED)


