"""Postings as people read them: each posting with its payment and link, for the CLI, the API and the exports.

One query, so every screen and file shows the same columns for the same posting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from agent.state.schema import links, payments, postings


def posting_rows(conn: Connection, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Postings in id order, each with its payment's reference, method and status and its link's invoice."""
    query = (select(postings, payments.c.payment_ref, payments.c.method, payments.c.status.label("payment_status"),
                    payments.c.link_id, links.c.invoice_number, links.c.payer_name)
             .join(payments, payments.c.id == postings.c.payment_id)
             .outerjoin(links, links.c.id == payments.c.link_id).order_by(postings.c.id))
    if states:
        query = query.where(postings.c.state.in_(states))
    return [dict(r) for r in conn.execute(query).mappings()]
