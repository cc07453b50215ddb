"""The sandbox's money after the payment: its fee schedule, its balance, daily payouts and refunds.

Every settled payment, fee, refund and chargeback is a line of an account's balance in ``<home>/sandbox.db``;
a payout takes an account's unpaid lines of one day, so a payout's items add up to its amount by construction,
as GoCardless's payout items and Stripe's balance transactions do. A day whose lines add up to nothing or less
is carried forward (GoCardless and Stripe also net a negative balance against later takings).

Fee schedule (``fee_for``), per settled payment, rounded half up to the currency's minor unit:

=============  =====================================
card           1.5% + 0.20
bank           1.0%, at least 0.20, at most 2.00
direct_debit   1.0% + 0.20, at most 4.00
=============  =====================================

An account set to pay out ``gross`` (its ``options.payout_fees``) is paid every payment in full and its fees are
charged to its ``fees_account``'s payout, the compliant set-up for client money; ``net`` deducts them from its own
payout, which for a trust account is the breach the agent must report.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
from decimal import ROUND_HALF_UP, Decimal

from agent.core.model import MerchantAccount, exponent
from connectors.providers.contract import PaymentMethod, PayoutItemKind, RefundRefused

MONEY_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    payout_fees TEXT NOT NULL,
    fees_account TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS balance (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    payment_ref TEXT,
    ref TEXT NOT NULL,
    raw_type TEXT NOT NULL,
    created_at TEXT NOT NULL,
    payout_ref TEXT
);
CREATE TABLE IF NOT EXISTS payouts (
    ref TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    arrival_date TEXT NOT NULL,
    bank_reference TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    ref TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    payment_ref TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (account, idempotency_key)
);
"""

# method -> (rate, fixed, minimum, maximum); None: no bound.
FEE_SCHEDULE: dict[str, tuple[Decimal, Decimal, Decimal | None, Decimal | None]] = {
    PaymentMethod.CARD: (Decimal("0.015"), Decimal("0.20"), None, None),
    PaymentMethod.BANK: (Decimal("0.01"), Decimal(0), Decimal("0.20"), Decimal("2.00")),
    PaymentMethod.DIRECT_DEBIT: (Decimal("0.01"), Decimal("0.20"), None, Decimal("4.00")),
}


def fee_for(amount: Decimal, currency: str, method: str) -> Decimal:
    """The sandbox's fee on one settled payment (the schedule in the module docstring)."""
    rate, fixed, low, high = FEE_SCHEDULE[PaymentMethod(method)]
    fee = amount * rate + fixed
    fee = max(fee, low) if low is not None else fee
    fee = min(fee, high) if high is not None else fee
    return fee.quantize(Decimal(1).scaleb(-exponent(currency)), rounding=ROUND_HALF_UP)


def register(conn: sqlite3.Connection, account: MerchantAccount, payout_fees: str) -> None:
    """Remember how the account is paid out, for the lines its payments write (the provider registers itself)."""
    conn.execute(
        "INSERT INTO accounts (name, payout_fees, fees_account) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
        " SET payout_fees = excluded.payout_fees, fees_account = excluded.fees_account",
        (account.name, payout_fees, account.fees_account or account.name),
    )


def _line(conn: sqlite3.Connection, account: str, kind: PayoutItemKind, amount: Decimal, currency: str,
          payment_ref: str | None, raw_type: str, now: str, ref: str | None = None) -> None:
    conn.execute(
        "INSERT INTO balance (account, kind, amount, currency, payment_ref, ref, raw_type, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (account, kind.value, str(amount), currency, payment_ref, ref or "bt_" + secrets.token_hex(8), raw_type, now),
    )


def settle(conn: sqlite3.Connection, account: str, payment_ref: str, amount: Decimal, currency: str,
           method: str, now: str) -> None:
    """A payment settled: its gross amount on its account, its fee on the account that pays the fees."""
    row = conn.execute("SELECT payout_fees, fees_account FROM accounts WHERE name = ?", (account,)).fetchone()
    fees_to = row["fees_account"] if row is not None and row["payout_fees"] == "gross" else account
    _line(conn, account, PayoutItemKind.PAYMENT, amount, currency, payment_ref, "payment", now)
    _line(conn, fees_to, PayoutItemKind.FEE, -fee_for(amount, currency, method), currency, payment_ref,
          "gateway_fee", now)


def take_back(conn: sqlite3.Connection, account: str, payment_ref: str, amount: Decimal, currency: str,
              kind: PayoutItemKind, now: str) -> None:
    """A settled payment charged back (or failed late): the money leaves the account's next payout."""
    _line(conn, account, kind, -amount, currency, payment_ref, kind.value, now)


def pay_out_lines(conn: sqlite3.Connection, until: str, now: dt.datetime) -> list[str]:
    """One payout per account, currency and day of unpaid lines before ``until``; returns the new payout refs."""
    groups = conn.execute(
        "SELECT account, currency, substr(created_at, 1, 10) AS day, GROUP_CONCAT(amount, ' ') AS amounts"
        " FROM balance WHERE payout_ref IS NULL AND created_at < ? GROUP BY account, currency, day"
        " ORDER BY day, account", (until,)).fetchall()
    made = []
    carried: dict[tuple[str, str], Decimal] = {}
    for group in groups:
        key = (group["account"], group["currency"])
        total = carried.pop(key, Decimal(0)) + sum((Decimal(a) for a in group["amounts"].split()), Decimal(0))
        if total <= 0:
            carried[key] = total  # carried forward into a later day's payout
            continue
        ref = "po_" + secrets.token_hex(8)
        conn.execute(
            "UPDATE balance SET payout_ref = ? WHERE payout_ref IS NULL AND account = ? AND currency = ?"
            " AND created_at < ? AND substr(created_at, 1, 10) <= ?",
            (ref, group["account"], group["currency"], until, group["day"]))
        paid = conn.execute("SELECT amount FROM balance WHERE payout_ref = ?", (ref,)).fetchall()
        amount = sum((Decimal(r["amount"]) for r in paid), Decimal(0))
        conn.execute(
            "INSERT INTO payouts (ref, account, amount, currency, status, created_at, arrival_date, bank_reference)"
            " VALUES (?, ?, ?, ?, 'paid', ?, ?, ?)",
            (ref, group["account"], str(amount), group["currency"], now.isoformat(timespec="microseconds"),
             (now.date() + dt.timedelta(days=1)).isoformat(), f"SANDBOX {ref[3:11].upper()}"))
        made.append(ref)
    return made


def return_payout(conn: sqlite3.Connection, payout_ref: str, now: str) -> bool:
    """A paid payout the bank returned: failed, its amount one line of the account's next payout (Stripe's
    payout_failure transaction); False when it is no paid payout."""
    if conn.execute("UPDATE payouts SET status = 'failed' WHERE ref = ? AND status = 'paid'",
                    (payout_ref,)).rowcount != 1:
        return False
    row = conn.execute("SELECT account, amount, currency FROM payouts WHERE ref = ?", (payout_ref,)).fetchone()
    _line(conn, row["account"], PayoutItemKind.ADJUSTMENT, Decimal(row["amount"]), row["currency"], None,
          "payout_failure", now)
    return True


def refundable(conn: sqlite3.Connection, account: str, payment_ref: str) -> tuple[Decimal, str] | None:
    """What is left to refund of a settled payment of ``account`` and its currency; None: not settled there."""
    paid = conn.execute(
        "SELECT amount, currency FROM balance WHERE account = ? AND payment_ref = ? AND kind = 'payment'",
        (account, payment_ref)).fetchone()
    if paid is None:
        return None
    taken = conn.execute(
        "SELECT amount FROM balance WHERE account = ? AND payment_ref = ? AND kind IN ('refund', 'chargeback')",
        (account, payment_ref)).fetchall()
    return Decimal(paid["amount"]) + sum((Decimal(r["amount"]) for r in taken), Decimal(0)), paid["currency"]


def refund(conn: sqlite3.Connection, account: str, payment_ref: str, amount: Decimal, currency: str,
           reason: str, key: str, now: str) -> sqlite3.Row:
    """Refund under ``key`` (the same key returns the same refund); refused above what is left."""
    existing: sqlite3.Row | None = conn.execute(
        "SELECT * FROM refunds WHERE account = ? AND idempotency_key = ?", (account, key)).fetchone()
    if existing is not None:
        if Decimal(existing["amount"]) != amount or existing["payment_ref"] != payment_ref:
            raise RefundRefused("idempotency key reused with a different payment or amount")
        return existing
    left = refundable(conn, account, payment_ref)
    if left is None:
        raise RefundRefused(f"sandbox payment {payment_ref} is not settled on account {account}: nothing to refund")
    if left[1] != currency:
        raise RefundRefused(f"sandbox payment {payment_ref} is in {left[1]}, not {currency}")
    if not Decimal(0) < amount <= left[0]:
        raise RefundRefused(f"refund_exceeds_amount: {amount} {currency} asked, {left[0]} {currency} left to "
                            f"refund on {payment_ref}")
    ref = "re_" + secrets.token_hex(8)
    conn.execute(
        "INSERT INTO refunds (ref, account, payment_ref, amount, currency, reason, idempotency_key, status,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'succeeded', ?)",
        (ref, account, payment_ref, str(amount), currency, reason, key, now))
    _line(conn, account, PayoutItemKind.REFUND, -amount, currency, payment_ref, "refund", now, ref)  # as Stripe's
    row: sqlite3.Row = conn.execute("SELECT * FROM refunds WHERE ref = ?", (ref,)).fetchone()
    return row

