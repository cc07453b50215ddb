"""How a payment is split over its link's statements.

Explicit link amounts are honoured first (capped at what the statement still owes); whatever the payer did not
earmark goes to the remaining statements oldest first (issue date, number). Money that cannot be placed — no
link, a quick link, an overpayment, a statement gone, void or deleted — is returned as ONE unallocated share with
the reasons, for a person to reallocate: the agent never guesses where money belongs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, select

from agent.state.owed import available_balances
from agent.state.schema import Row, collections, firm_statements, link_items, links, plan_instalments, plan_statements


@dataclass(frozen=True)
class Share:
    """Part of a payment for one statement; ``note`` set means unallocated (why), statement_key then None."""

    statement_key: str | None
    matter_key: str | None
    amount: Decimal
    note: str | None = None


def unusable(st: Row | None, key: str, currency: str) -> str | None:
    if st is None:
        return f"statement {key} is no longer in the firm database"
    if st["deleted"]:
        return f"statement {st['number']} was deleted in the firm database"
    if st["status"] == "void":
        return f"statement {st['number']} is void"
    if st["currency"] != currency:
        return f"statement {st['number']} is in {st['currency']}, the payment in {currency}"
    return None


def _earmarks(conn: Connection, payment: Row) -> tuple[Row, Sequence[Row]] | Share:
    """The link (or Direct Debit collection) the payment came through and the statements it was for."""
    if payment["link_id"] is None:
        collection = conn.execute(select(collections).where(
            collections.c.account == payment["account"], collections.c.provider_ref == payment["payment_ref"]
        )).mappings().first()
        if collection is None:
            return Share(None, None, payment["amount"], "the payment did not come through a payment link")
        if collection["kind"] == "plan":  # an instalment pays the plan's statements, oldest first
            keys = conn.execute(select(plan_statements.c.statement_key).join(
                plan_instalments, plan_instalments.c.plan_id == plan_statements.c.plan_id).where(
                plan_instalments.c.collection_id == collection["id"])).scalars().all()
            return ({"id": collection["id"], "matter_key": collection["matter_key"]},
                    [{"statement_key": key, "amount": Decimal(0), "explicit": False} for key in keys])
        # A Direct Debit collection is for one statement: like a link earmarking the whole payment for it.
        return ({"id": collection["id"], "matter_key": collection["matter_key"]},
                [{"statement_key": collection["statement_key"], "amount": payment["amount"], "explicit": True}])
    link = conn.execute(select(links).where(links.c.id == payment["link_id"])).mappings().one()
    return link, conn.execute(select(link_items).where(link_items.c.link_id == link["id"])).mappings().all()


class _Placer:
    """Places a payment's money on statements, never more than each still owes, and keeps the reasons why not."""

    def __init__(self, amount: Decimal, currency: str, statements: Mapping[str, Row],
                 available: dict[str, Decimal]) -> None:
        self.remaining = amount
        self.currency = currency
        self.statements = statements
        self.available = available
        self.shares: dict[str, Decimal] = {}
        self.reasons: list[str] = []

    def place(self, key: str, wanted: Decimal) -> Decimal:
        """Put up to ``wanted`` on statement ``key``; returns what could not be placed there."""
        take = min(wanted, self.remaining, self.available.get(key, Decimal(0)))
        if take > 0:
            self.shares[key] = self.shares.get(key, Decimal(0)) + take
            self.available[key] -= take
            self.remaining -= take
        return wanted - take

    def order(self, item: Row) -> tuple[dt.date, str]:
        st = self.statements.get(item["statement_key"])
        return (st["issue_date"] or dt.date.min, st["number"]) if st else (dt.date.max, item["statement_key"])

    def unusable(self, key: str) -> str | None:
        return unusable(self.statements.get(key), key, self.currency)

    def explicit(self, items: Sequence[Row]) -> Decimal:
        """The amounts the clerk earmarked per statement, oldest first; returns how much was earmarked."""
        earmarked = Decimal(0)
        for item in sorted(items, key=self.order):
            key = item["statement_key"]
            wanted = min(item["amount"], self.remaining)
            earmarked += wanted
            reason = self.unusable(key)
            if reason:
                self.reasons.append(f"{wanted} earmarked for it but {reason}")
                continue
            short = self.place(key, wanted)
            if short > 0:
                self.reasons.append(f"{short} earmarked for statement {self.statements[key]['number']} is more "
                                    "than it owes")
        return earmarked

    def oldest_first(self, items: Sequence[Row], free: Decimal) -> Decimal:
        """The unearmarked rest over the other statements, oldest first; returns what is left over."""
        for item in sorted(items, key=self.order):
            reason = self.unusable(item["statement_key"])
            if reason:
                self.reasons.append(reason)
                continue
            free = self.place(item["statement_key"], free) if free > 0 else free
        return free


def trust_shares(conn: Connection, payment: Row) -> list[Share]:
    """A trust (client) account payment: the whole amount on account for the matter, on its client ledger.

    Client money is never allocated to an office bill, whatever the link earmarked; a payment that came through
    no matter is left unallocated for a person to place."""
    earmarks = _earmarks(conn, payment)
    matter_key = None if isinstance(earmarks, Share) else earmarks[0]["matter_key"]
    if matter_key is None:
        return [Share(None, None, payment["amount"], "client money with no matter: choose the matter's client "
                      "ledger by hand")]
    return [Share(None, matter_key, payment["amount"])]


def allocate(conn: Connection, payment: Row) -> list[Share]:
    """Split ``payment`` (a payments row) into per-statement shares plus at most one unallocated share."""
    amount: Decimal = payment["amount"]
    earmarks = _earmarks(conn, payment)
    if isinstance(earmarks, Share):
        return [earmarks]
    link, items = earmarks
    if not items:
        return [Share(None, link["matter_key"], amount, f"link {link['id']} is a quick link with no statements")]
    keys = [i["statement_key"] for i in items]
    statements = {r["key"]: r for r in conn.execute(select(firm_statements)
                                                      .where(firm_statements.c.key.in_(keys))).mappings()}
    placer = _Placer(amount, payment["currency"], statements, available_balances(conn, keys))
    earmarked = placer.explicit([i for i in items if i["explicit"]])
    # Earmarked money that could not be placed stays unallocated; only the payer's unearmarked rest flows on.
    free = placer.oldest_first([i for i in items if not i["explicit"]], amount - earmarked)
    out = [Share(k, statements[k]["matter_key"], v) for k, v in placer.shares.items()]
    if placer.remaining > 0:
        if free > 0:
            placer.reasons.append(f"overpayment: {free} {payment['currency']} more than the link's statements owe")
        out.append(Share(None, link["matter_key"], placer.remaining, "; ".join(placer.reasons)))
    return out
