"""The embedded offline provider: links, payments, events in ``<home>/sandbox.db``, paid on a local page.

It lets a firm try Ledgerlink end to end without a provider account, and gives the tests a provider whose
every state (pending, confirmed, failed, charged back, expired) can be produced on demand by the helpers
below.
"""

from __future__ import annotations

import datetime as dt
import html
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs

from agent.core.errors import ConfigurationError, DataError
from agent.core.model import MerchantAccount, check_decimals
from connectors.providers.contract import (
    CancelRefused,
    Collection,
    CollectionCancelRefused,
    CollectionStatus,
    DirectDebitProvider,
    EventKind,
    EventPage,
    LinkNotFound,
    LinkSpec,
    LinkStatus,
    Mandate,
    MandatePayer,
    MandateSetup,
    MandateStatus,
    PaymentMethod,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderLink,
)

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
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        if "mandate_ref" not in {col[1] for col in conn.execute("PRAGMA table_info(events)")}:
            conn.execute("ALTER TABLE events ADD COLUMN mandate_ref TEXT")  # sandbox.db files from before DD
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


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
    row = conn.execute("SELECT * FROM links WHERE ref = ?", (ref,)).fetchone()
    if row is None:
        raise LinkNotFound(f"sandbox link {ref!r} does not exist")
    return row


def _payment_row(conn: sqlite3.Connection, payment_ref: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM payments WHERE payment_ref = ?", (payment_ref,)).fetchone()
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
    row = conn.execute("SELECT * FROM mandates WHERE ref = ?", (ref,)).fetchone()
    if row is None:
        raise ProviderError(f"sandbox mandate {ref!r} does not exist")
    return row


def _collection_row(conn: sqlite3.Connection, ref: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM collections WHERE ref = ?", (ref,)).fetchone()
    if row is None:
        raise ProviderError(f"sandbox collection {ref!r} does not exist")
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
    row = _collection_row(conn, ref)
    _dd_event(conn, row["account"], kind, status.value, mandate_ref=row["mandate_ref"], collection=row)
    return row


def set_collection(home: str | Path, ref: str, status: str) -> None:
    """Move a collection as the banks would: submitted, confirmed, paid_out, failed, charged_back or cancelled."""
    with _db(home) as conn:
        _move_collection(conn, ref, CollectionStatus(status))


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


class SandboxProvider(Provider, DirectDebitProvider):
    """Offline provider: state in ``<home>/sandbox.db``, links paid at ``{api_base}/pay/<ref>``."""

    name: ClassVar[str] = "sandbox"
    max_expiry: ClassVar[dt.timedelta] = dt.timedelta(days=90)
    methods: ClassVar[tuple[PaymentMethod, ...]] = (
        PaymentMethod.BANK,
        PaymentMethod.CARD,
        PaymentMethod.DIRECT_DEBIT,
    )

    def __init__(self, account: MerchantAccount, credentials: str | None, *, home: str | None = None) -> None:
        super().__init__(account, credentials, home=home)
        if home is None:
            raise ConfigurationError("the sandbox provider needs a home directory for sandbox.db")
        self.base = (account.api_base or DEFAULT_BASE).rstrip("/")

    def create_link(self, spec: LinkSpec) -> ProviderLink:
        try:
            amount = check_decimals(spec.amount, spec.currency)
        except DataError as exc:
            raise ProviderError(str(exc)) from None
        if amount <= 0:
            raise ProviderError(f"amount must be above 0, not {amount}")
        now = _now()
        expires_at = spec.expires_at if spec.expires_at.tzinfo else spec.expires_at.replace(tzinfo=dt.UTC)
        if not now < expires_at <= now + self.max_expiry:
            raise ProviderError(f"expires_at must be in the future and within {self.max_expiry.days} days")
        with _db(self.home) as conn:  # type: ignore[arg-type]
            existing = conn.execute(
                "SELECT * FROM links WHERE account = ? AND idempotency_key = ?",
                (self.account.name, spec.idempotency_key),
            ).fetchone()
            if existing is not None:
                if Decimal(existing["amount"]) != amount or existing["currency"] != spec.currency:
                    raise ProviderError("idempotency key reused with a different amount or currency")
                return _to_link(existing)
            ref = secrets.token_urlsafe(16)
            conn.execute(
                "INSERT INTO links (ref, account, link_id, idempotency_key, amount, currency, description,"
                " reference,"
                " payer_name, payer_email, url, status, expires_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ref,
                    self.account.name,
                    spec.link_id,
                    spec.idempotency_key,
                    str(amount),
                    spec.currency,
                    spec.description,
                    spec.reference,
                    spec.payer_name,
                    spec.payer_email,
                    f"{self.base}/pay/{ref}",
                    LinkStatus.OUTSTANDING.value,
                    _iso(expires_at),
                    _iso(now),
                ),
            )
            return _to_link(_link_row(conn, ref))

    def get_link(self, ref: str) -> ProviderLink:
        with _db(self.home) as conn:  # type: ignore[arg-type]
            _expire(conn, _now())
            return _to_link(_link_row(conn, ref))

    def cancel_link(self, ref: str) -> ProviderLink:
        with _db(self.home) as conn:  # type: ignore[arg-type]
            _expire(conn, _now())
            row = _link_row(conn, ref)
            if row["status"] == LinkStatus.CANCELLED:
                return _to_link(row)
            if row["status"] != LinkStatus.OUTSTANDING:
                raise CancelRefused(f"sandbox link {ref} is {row['status']}", _to_link(row))
            conn.execute("UPDATE links SET status = ? WHERE ref = ?", (LinkStatus.CANCELLED.value, ref))
            _add_event(conn, row, EventKind.LINK_CANCELLED)
            return _to_link(_link_row(conn, ref))

    def events(self, cursor: str | None, limit: int = 100) -> EventPage:
        try:
            after = int(cursor) if cursor is not None else 0
        except ValueError:
            raise ProviderError(f"not a sandbox event cursor: {cursor!r}") from None
        with _db(self.home) as conn:  # type: ignore[arg-type]
            _expire(conn, _now())
            rows = conn.execute(
                "SELECT * FROM events WHERE account = ? AND id > ? ORDER BY id LIMIT ?",
                (self.account.name, after, limit + 1),
            ).fetchall()
        page = rows[:limit]
        events = [
            ProviderEvent(
                event_id=str(row["id"]),
                kind=EventKind(row["kind"]),
                occurred_at=dt.datetime.fromisoformat(row["occurred_at"]),
                link_ref=row["link_ref"],
                payment_ref=row["payment_ref"],
                amount=Decimal(row["amount"]) if row["amount"] is not None else None,
                currency=row["currency"],
                method=PaymentMethod(row["method"]),
                raw_status=row["raw_status"],
                mandate_ref=row["mandate_ref"],
            )
            for row in page
        ]
        return EventPage(events, str(page[-1]["id"]) if page else cursor, has_more=len(rows) > limit)


    # --- Direct Debit -----------------------------------------------------------------------------------------

    def setup_mandate(self, payer: MandatePayer) -> MandateSetup:
        """A mandate awaiting the payer; set_mandate(home, ref, "active") is the payer finishing the flow."""
        with _db(self.home) as conn:  # type: ignore[arg-type]
            row = conn.execute(
                "SELECT * FROM mandates WHERE account = ? AND idempotency_key = ?",
                (self.account.name, payer.idempotency_key),
            ).fetchone()
            ref = row["ref"] if row is not None else "MD" + secrets.token_hex(6).upper()
            if row is None:
                conn.execute(
                    "INSERT INTO mandates (ref, account, payer_key, payer_name, payer_email, idempotency_key,"
                    " status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ref,
                        self.account.name,
                        payer.key,
                        payer.name,
                        payer.email,
                        payer.idempotency_key,
                        MandateStatus.PENDING_CUSTOMER_APPROVAL.value,
                        _iso(_now()),
                    ),
                )
        return MandateSetup(ref=ref, url=f"{self.base}/mandate/{ref}")

    def get_mandate(self, ref: str) -> Mandate:
        with _db(self.home) as conn:  # type: ignore[arg-type]
            row = _mandate_row(conn, ref)
        return Mandate(ref=ref, status=MandateStatus(row["status"]), raw_status=row["status"])

    def create_collection(
        self,
        mandate_ref: str,
        amount: Decimal,
        currency: str,
        charge_date: dt.date | None,
        description: str,
        idempotency_key: str,
    ) -> Collection:
        try:
            amount = check_decimals(amount, currency)
        except DataError as exc:
            raise ProviderError(str(exc)) from None
        if amount <= 0:
            raise ProviderError(f"amount must be above 0, not {amount}")
        today = _now().date()
        charge_date = charge_date or today
        if charge_date < today:
            raise ProviderError(f"charge_date {charge_date} is in the past")
        with _db(self.home) as conn:  # type: ignore[arg-type]
            existing = conn.execute(
                "SELECT * FROM collections WHERE account = ? AND idempotency_key = ?",
                (self.account.name, idempotency_key),
            ).fetchone()
            if existing is not None:
                if Decimal(existing["amount"]) != amount or existing["currency"] != currency:
                    raise ProviderError("idempotency key reused with a different amount or currency")
                return _to_collection(existing)
            mandate = _mandate_row(conn, mandate_ref)
            if mandate["status"] not in COLLECTABLE_MANDATES:
                raise ProviderError(f"sandbox mandate {mandate_ref} is {mandate['status']}: mandate_is_inactive")
            ref = "PM" + secrets.token_hex(6).upper()
            conn.execute(
                "INSERT INTO collections (ref, account, mandate_ref, amount, currency, charge_date, description,"
                " idempotency_key, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ref,
                    self.account.name,
                    mandate_ref,
                    str(amount),
                    currency,
                    charge_date.isoformat(),
                    description,
                    idempotency_key,
                    CollectionStatus.PENDING_SUBMISSION.value,
                    _iso(_now()),
                ),
            )
            row = _collection_row(conn, ref)
            _dd_event(
                conn,
                self.account.name,
                EventKind.PAYMENT_PENDING,
                CollectionStatus.PENDING_SUBMISSION.value,
                mandate_ref=mandate_ref,
                collection=row,
            )
            return _to_collection(row)

    def get_collection(self, ref: str) -> Collection:
        with _db(self.home) as conn:  # type: ignore[arg-type]
            return _to_collection(_collection_row(conn, ref))

    def cancel_collection(self, ref: str) -> Collection:
        with _db(self.home) as conn:  # type: ignore[arg-type]
            row = _collection_row(conn, ref)
            if row["status"] == CollectionStatus.CANCELLED:
                return _to_collection(row)
            if row["status"] not in _COLLECTION_MOVES[CollectionStatus.CANCELLED][0]:
                raise CollectionCancelRefused(
                    f"sandbox collection {ref} is {row['status']}: cancellation_failed", _to_collection(row)
                )
            return _to_collection(_move_collection(conn, ref, CollectionStatus.CANCELLED))


# --- the pay page -------------------------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;
line-height:1.5}}
button{{font-size:1rem;padding:.6rem 1.2rem;margin:.3rem .3rem 0 0}}
.note{{color:#444;font-size:.9rem}}</style>
</head><body><main>
<h1>{title}</h1>
{body}
</main></body></html>"""


def _page(title: str, body: str) -> bytes:
    return _PAGE.format(title=html.escape(title), body=body).encode()


class SandboxPayServer:
    """The payer's side of the sandbox: GET/POST ``/pay/<ref>`` and ``/health`` on a local threaded server."""

    def __init__(
        self,
        home: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        disclaimer_for: Callable[[str], str] | str = "",
    ) -> None:
        self.home = Path(home)
        self.disclaimer_for = disclaimer_for
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SandboxPayServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="sandbox-pay", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def disclaimer(self, account: str) -> str:
        return self.disclaimer_for(account) if callable(self.disclaimer_for) else self.disclaimer_for

    def render(self, ref: str) -> tuple[int, bytes]:
        with _db(self.home) as conn:
            _expire(conn, _now())
            row = conn.execute("SELECT * FROM links WHERE ref = ?", (ref,)).fetchone()
        if row is None:
            return HTTPStatus.NOT_FOUND, _page(
                "Payment link not found", "<p>This payment link does not exist.</p>"
            )
        amount = f"{row['currency']} {row['amount']}"
        disclaimer = self.disclaimer(row["account"])
        details = (
            f'<dl><dt>Amount</dt><dd id="amount">{html.escape(amount)}</dd>'
            f'<dt>Description</dt><dd id="description">{html.escape(row["description"])}</dd>'
            + (f"<dt>Reference</dt><dd>{html.escape(row['reference'])}</dd>" if row["reference"] else "")
            + "</dl>"
            + (f'<p class="note" id="disclaimer">{html.escape(disclaimer)}</p>' if disclaimer else "")
        )
        if row["status"] != LinkStatus.OUTSTANDING:
            status = row["status"].replace("_", " ")
            return HTTPStatus.OK, _page(
                "Payment link closed",
                details
                + (
                    f'<p role="status" id="status">This link can no longer be paid: '
                    f"{html.escape(status)}.</p>"
                ),
            )
        form = (
            f'<form method="post" action="/pay/{html.escape(ref)}">'
            '<p><label for="partial">Partial amount (testing only; leave empty to pay in full)</label><br>'
            '<input id="partial" name="partial" inputmode="decimal" autocomplete="off"></p>'
            '<button type="submit" name="method" value="bank">Pay by bank</button>'
            '<button type="submit" name="method" value="card">Pay by card</button>'
            '</form><p class="note">Sandbox: no real money moves.</p>'
        )
        return HTTPStatus.OK, _page(f"Pay {amount}", details + form)

    def submit(self, ref: str, form: dict[str, list[str]]) -> tuple[int, bytes]:
        method = (form.get("method") or ["bank"])[0]
        partial = (form.get("partial") or [""])[0].strip()
        try:
            amount = Decimal(partial) if partial else None
        except InvalidOperation:
            return HTTPStatus.BAD_REQUEST, _page(
                "Payment not made", '<p role="alert">The partial amount is not a number.</p>'
            )
        if method not in (PaymentMethod.BANK, PaymentMethod.CARD):
            return HTTPStatus.BAD_REQUEST, _page(
                "Payment not made", '<p role="alert">Choose bank or card.</p>'
            )
        try:
            payment_ref = pay(self.home, ref, amount, method=method)
        except LinkNotFound:
            return HTTPStatus.NOT_FOUND, _page(
                "Payment link not found", "<p>This payment link does not exist.</p>"
            )
        except ProviderError as exc:
            _, body = self.render(ref)
            message = f'<p role="alert">Payment not made: {html.escape(str(exc))}</p>'
            return HTTPStatus.CONFLICT, body.replace(b"<main>", b"<main>" + message.encode(), 1)
        return HTTPStatus.OK, _page(
            "Payment received",
            (
                f'<p role="status">Thank you. Your payment was received (reference'
                f' <span id="payment-ref">{html.escape(payment_ref)}</span>).</p>'
            ),
        )

    def mandate_page(self, ref: str, authorise: bool) -> tuple[int, bytes]:
        """The payer's Direct Debit setup: GET shows it, POST authorises it (the mandate becomes active)."""
        with _db(self.home) as conn:
            row = conn.execute("SELECT * FROM mandates WHERE ref = ?", (ref,)).fetchone()
        if row is None:
            return HTTPStatus.NOT_FOUND, _page("Mandate not found", "<p>This Direct Debit setup does not exist.</p>")
        if authorise and row["status"] == MandateStatus.PENDING_CUSTOMER_APPROVAL:
            set_mandate(self.home, ref, MandateStatus.ACTIVE)
            return HTTPStatus.OK, _page("Direct Debit set up", '<p role="status">Your Direct Debit is set up.</p>')
        if row["status"] != MandateStatus.PENDING_CUSTOMER_APPROVAL:
            status = html.escape(row["status"].replace("_", " "))
            return HTTPStatus.OK, _page("Direct Debit", f'<p role="status" id="status">This mandate is {status}.</p>')
        form = (
            f'<p>{html.escape(row["payer_name"])}, authorise Direct Debits from your account.</p>'
            f'<form method="post" action="/mandate/{html.escape(ref)}"><button type="submit">Set up Direct Debit'
            '</button></form><p class="note">Sandbox: no real mandate is made.</p>'
        )
        return HTTPStatus.OK, _page("Set up a Direct Debit", form)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the agent's own logging reports what matters."""

            def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._send(HTTPStatus.OK, b"ok", "text/plain; charset=utf-8")
                elif self.path.startswith("/pay/"):
                    self._send(*server.render(self.path.removeprefix("/pay/")))
                elif self.path.startswith("/mandate/"):
                    self._send(*server.mandate_page(self.path.removeprefix("/mandate/"), authorise=False))
                else:
                    self._send(HTTPStatus.NOT_FOUND, _page("Not found", "<p>Nothing here.</p>"))

            def do_POST(self) -> None:
                if self.path.startswith("/mandate/"):
                    self._send(*server.mandate_page(self.path.removeprefix("/mandate/"), authorise=True))
                    return
                if not self.path.startswith("/pay/"):
                    self._send(HTTPStatus.NOT_FOUND, _page("Not found", "<p>Nothing here.</p>"))
                    return
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                self._send(*server.submit(self.path.removeprefix("/pay/"), form))

        return Handler
