"""What the interfaces list that belongs to no engine: payments as received, the invoice numbers of open links, and
a matter's outstanding link with its sends. The CLI, the API and the console read the tables through these (and
through the mirror, owed and postings.queries), never by importing the table definitions themselves."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, or_, select

from agent.state.schema import firm_matters, links, payments, sends
from agent.state.statuses import LINK_OPEN, LINK_OUTSTANDING


def payment_rows(conn: Connection) -> list[dict[str, Any]]:
    """Every payment, oldest first, as the payments table holds it."""
    return [dict(r) for r in conn.execute(select(payments).order_by(payments.c.created_at, payments.c.id)).mappings()]


def open_link_invoices(conn: Connection) -> set[str]:
    """Invoice numbers that already have a link being made or outstanding: a bulk row for one is a duplicate."""
    return set(conn.execute(select(links.c.invoice_number).where(
        links.c.status.in_(LINK_OPEN), links.c.invoice_number.is_not(None))).scalars())


@dataclass(frozen=True)
class Delivery:
    """A matter's outstanding link and every send of it, oldest first."""

    matter_number: str
    link_id: str
    created_at: dt.datetime
    sends: list[dict[str, Any]]


def outstanding_deliveries(conn: Connection, matters: Sequence[str]) -> list[Delivery]:
    """For each matter (by number or key) with an outstanding link: the link and how it was sent."""
    found = conn.execute(
        select(firm_matters.c.number, links.c.id, links.c.created_at)
        .join(links, links.c.matter_key == firm_matters.c.key)
        .where(or_(firm_matters.c.number.in_(matters), firm_matters.c.key.in_(matters)),
               links.c.status == LINK_OUTSTANDING)).all()
    history: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(select(sends).where(sends.c.link_id.in_([f.id for f in found]))
                            .order_by(sends.c.id)).mappings():
        history.setdefault(row["link_id"], []).append(dict(row))
    return [Delivery(number, link_id, created, history.get(link_id, [])) for number, link_id, created in found]


__all__ = ["Delivery", "open_link_invoices", "outstanding_deliveries", "payment_rows"]
