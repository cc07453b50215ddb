"""Postings as people read them: each posting with its payment, link, statement and matter numbers.

One query (``POSTING_DETAILS``) for the outbox's write-back parameters, the CLI's and the API's listings, the
console's Manage Postings and the exports, so every screen and file shows the same posting the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from agent.state.schema import firm_matters, firm_statements, links, payments, payouts, postings

POSTING_DETAILS = (
    select(postings, payments.c.payment_ref, func.coalesce(payments.c.provider, payouts.c.provider).label("provider"),
           payments.c.method, payments.c.status_at,
           payments.c.confirmed_at, payments.c.link_id, payments.c.status.label("payment_status"),
           links.c.description, links.c.client_key.label("link_client"), links.c.invoice_number, links.c.payer_name,
           firm_statements.c.number.label("statement_number"), firm_matters.c.number.label("matter_number"),
           firm_matters.c.client_key, payouts.c.payout_ref, payouts.c.bank_reference,
           payouts.c.created_at.label("payout_at"), payouts.c.account_kind, payouts.c.fees_account)
    .outerjoin(payments, payments.c.id == postings.c.payment_id)
    .outerjoin(payouts, payouts.c.id == postings.c.payout_id)
    .outerjoin(links, links.c.id == payments.c.link_id)
    .outerjoin(firm_statements, firm_statements.c.key == postings.c.statement_key)
    .outerjoin(firm_matters, firm_matters.c.key == postings.c.matter_key)
)


def posting_rows(conn: Connection, states: Sequence[str] | None = None, *, newest_first: bool = False
                 ) -> list[dict[str, Any]]:
    """Postings with their details, in id order (or newest first), optionally only those in ``states``."""
    query = POSTING_DETAILS.order_by(postings.c.id.desc() if newest_first else postings.c.id)
    if states:
        query = query.where(postings.c.state.in_(states))
    return [dict(r) for r in conn.execute(query).mappings()]


def posting_row(conn: Connection, posting_id: int) -> dict[str, Any] | None:
    """One posting with its details; ``None`` when there is no such posting."""
    row = conn.execute(POSTING_DETAILS.where(postings.c.id == posting_id)).mappings().first()
    return dict(row) if row else None


def state_counts(conn: Connection) -> dict[str, int]:
    """How many postings are in each state: the backlog /status reports."""
    return {state: count for state, count in
            conn.execute(select(postings.c.state, func.count()).group_by(postings.c.state))}


def posting_detail(conn: Connection, posting_id: int) -> dict[str, Any] | None:
    """One posting with its payment (``None`` for a payout's fees, deposit or transfer) and every posting of the
    same payment or payout; ``None`` when there is no such posting. The CLI, the API and the console show this."""
    row = posting_row(conn, posting_id)
    if row is None:
        return None
    same = (postings.c.payment_id == row["payment_id"] if row["payment_id"] is not None
            else postings.c.payout_id == row["payout_id"])
    payment = conn.execute(select(payments).where(payments.c.id == row["payment_id"])).mappings().first()
    allocations = [dict(r) for r in conn.execute(POSTING_DETAILS.where(same).order_by(postings.c.id)).mappings()]
    return {"posting": row, "payment": dict(payment) if payment else None, "allocations": allocations}
