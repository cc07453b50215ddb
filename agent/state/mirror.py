"""Read side of the mirror: a matter and its open statements, for the CLI, API and link engine (search: search.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, or_, select

from agent.core.errors import NotFound
from agent.core.model import Matter, Payer, Statement
from agent.state.schema import component_status, firm_clients, firm_matters, firm_payers, firm_statements, quarantine


def matter_from_row(row: Any) -> Matter:
    """A mirror row of firm_matters (by column name) as the model."""
    return Matter(key=row["key"], number=row["number"], name=row["name"], client_key=row["client_key"],
                  payer_key=row["payer_key"], status=row["status"], deleted=row["deleted"])


def get_matter(conn: Connection, ref: str) -> Matter:
    """A matter by its number (what staff type) or its key."""
    m = firm_matters
    row = conn.execute(
        select(m).where(m.c.deleted.is_(False), or_(m.c.number == ref, m.c.key == ref)).order_by(m.c.number != ref)
    ).mappings().first()
    if row is None:
        raise NotFound(f"unknown matter {ref!r}: no matter with that number or key (has a sync run?)")
    return matter_from_row(row)


def matter_number(conn: Connection, key: str) -> str | None:
    """A matter's number (what the firm and its client write) from its key, deleted or not; None when unknown."""
    number: str | None = conn.execute(select(firm_matters.c.number).where(firm_matters.c.key == key)).scalar()
    return number


def client_name(conn: Connection, key: str | None) -> str | None:
    name: str | None = conn.execute(select(firm_clients.c.name).where(firm_clients.c.key == key)).scalar()
    return name


def get_payer(conn: Connection, key: str | None) -> Payer | None:
    if key is None:
        return None
    row = conn.execute(select(firm_payers).where(firm_payers.c.key == key)).mappings().first()
    if row is None:
        return None
    return Payer(key=row["key"], name=row["name"], email=row["email"], phone=row["phone"],
                 client_key=row["client_key"], deleted=row["deleted"])


def statement_from_row(row: Any) -> Statement:
    """A mirror row of firm_statements (by column name) as the model."""
    return Statement(**{k: row[k] for k in ("key", "number", "matter_key", "issue_date", "due_date", "amount",
                                            "balance", "currency", "status", "deleted")})


def open_statements(conn: Connection, matter_key: str) -> list[Statement]:
    """Statements still owing on a matter, oldest first (the allocation order too). A quarantined statement is
    left out: the firm's row cannot be read as it stands now, so its last mirrored balance may be stale."""
    s = firm_statements
    held = select(quarantine.c.key).where(quarantine.c.entity == "statements")
    rows = conn.execute(
        select(s)
        .where(s.c.matter_key == matter_key, s.c.deleted.is_(False), s.c.status == "open", s.c.key.not_in(held))
        .order_by(s.c.issue_date, s.c.number)
    ).mappings()
    return [st for st in map(statement_from_row, rows) if st.balance != 0]


def get_statement(conn: Connection, key: str) -> Statement | None:
    row = conn.execute(select(firm_statements).where(firm_statements.c.key == key)).mappings().first()
    return statement_from_row(row) if row else None


def statement_key(conn: Connection, ref: str) -> str | None:
    """A statement's key from its number (what staff type) or the key itself; ``None`` when there is none."""
    s = firm_statements
    key: str | None = conn.execute(select(s.c.key).where(or_(s.c.number == ref, s.c.key == ref))
                                   .order_by(s.c.number != ref)).scalar()
    return key


def open_balance(statements: list[Statement]) -> dict[str, Decimal]:
    """Per currency, since a matter could in principle bill in two."""
    out: dict[str, Decimal] = {}
    for st in statements:
        out[st.currency] = out.get(st.currency, Decimal(0)) + st.balance
    return out


def mirror_component(entity: str) -> str:
    """The component-status name under which the sync records how fresh the mirror of ``entity`` is."""
    return f"mirror.{entity}"


def mirror_as_of(conn: Connection, entity: str) -> dt.datetime | None:
    """When the last finished sync pass of ``entity`` began: the mirror shows the firm's rows as of then or later."""
    value: dt.datetime | None = conn.execute(select(component_status.c.last_ok_at).where(
        component_status.c.component == mirror_component(entity))).scalar()
    return value


def quarantined_rows(conn: Connection, limit: int = 200) -> list[dict[str, Any]]:
    """Source rows the sync set aside (entity, key, the firm's number, field, reason, when), for check and /status."""
    q = quarantine.c
    query = (select(q.entity, q.key, q.number, q.field, q.reason, q.first_seen, q.last_seen)
             .order_by(q.entity, q.key).limit(limit))
    return [dict(r) for r in conn.execute(query).mappings()]
