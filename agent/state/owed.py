"""What is owed: the one place that says how much a matter, a statement or a payer still owes.

The mirror shows the firm database's balances as of the start of its last finished statements pass, so money the
agent already moved is not in it yet. What is owed is therefore

    the mirror's open balance
    - Direct Debit collections that will still take money (reserved, at the provider, not yet paid), and a
      payment plan's instalments still to come
    - payments received that the mirror does not show yet
    + refunds, failures and charge-backs whose reversal the mirror does not show yet

A posting counts as shown once it was written before the mirror's pass began (``mirror_as_of``): until then the
firm's new balance is not in the mirror and the posting keeps counting, or a paid debt would be offered again. A
refund is not an unposted payment: its reversal raises what is owed by what went back, and stops counting once
the mirror shows it. A payment still pending at the provider (money on its way) has no postings yet and counts by
what its link earmarked; a Direct Debit payment counts through its collection until it is confirmed.

Links, Direct Debit planning, the manual Direct Debit check, allocation, the API, the console and the CLI read these
figures; nothing else computes them.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from sqlalchemy import ColumnElement, Connection, Numeric, cast, exists, func, select

from agent.core.model import Statement
from agent.state.mirror import mirror_as_of, open_statements, statement_from_row
from agent.state.schema import (
    collections,
    firm_matters,
    firm_statements,
    link_items,
    links,
    payments,
    plan_instalments,
    plan_statements,
    plans,
    postings,
    quarantine,
)
from agent.state.statuses import COLLECTION_LIVE, LINK_OPEN, PAYMENT_UNPOSTED, PLAN_HOLDING, POSTING_IN_FLIGHT

ZERO = Decimal(0)
# A payment's posting the firm's books do not hold yet: being written, or set aside for a person to place.
_UNWRITTEN = (*POSTING_IN_FLIGHT, "incomplete")


@dataclass(frozen=True)
class Figures:
    """The parts of what is owed, each a non-negative amount in the debt's currency."""

    open_balance: Decimal
    pending_collections: Decimal = ZERO
    unposted_payments: Decimal = ZERO
    unposted_reversals: Decimal = ZERO

    @property
    def before_collections(self) -> Decimal:
        """What the payer still owes once the agent's own payments and refunds are in the books."""
        return self.open_balance - self.unposted_payments + self.unposted_reversals

    @property
    def amount(self) -> Decimal:
        """What may still be asked for: never below zero."""
        return max(self.before_collections - self.pending_collections, ZERO)


@dataclass(frozen=True)
class StatementOwed:
    statement: Statement
    figures: Figures


@dataclass(frozen=True)
class MatterOwed:
    matter_key: str
    statements: list[Statement]  # open, oldest first
    figures: Figures


def _unshown(as_of: dt.datetime | None) -> ColumnElement[bool]:
    """Postings of payments (not payouts) the mirror cannot show yet: unwritten, or written after its pass began.
    Client money (section trust) is on a client ledger and never pays an office bill, so it is not counted."""
    p = postings.c
    posted = p.state == "posted"
    if as_of is not None:
        posted = posted & (p.posted_at >= as_of)
    return (p.payment_id.is_not(None) & p.kind.in_(("payment", "reversal")) & p.section.is_(None)
            & (p.state.in_(_UNWRITTEN) | posted))


def _not_allocated_yet() -> ColumnElement[bool]:
    """Payments through a link that have no postings yet: money on its way (pending), counted by its earmarks."""
    office = payments.c.account_kind.is_(None) | (payments.c.account_kind != "trust")
    return (payments.c.status.in_(PAYMENT_UNPOSTED) & payments.c.link_id.is_not(None) & office
            & ~exists().where(postings.c.payment_id == payments.c.id))


class _Tally:
    """Sums per key (a statement's or a matter's) of each part of what is owed."""

    def __init__(self) -> None:
        self.collections: defaultdict[str, Decimal] = defaultdict(Decimal)
        self.payments: defaultdict[str, Decimal] = defaultdict(Decimal)
        self.reversals: defaultdict[str, Decimal] = defaultdict(Decimal)

    def posting(self, key: str, kind: str, amount: Decimal) -> None:
        if kind == "reversal":
            self.reversals[key] -= amount  # a reversal's amount is negative: it gives back what was taken
        else:
            self.payments[key] += amount

    def figures(self, key: str, balance: Decimal) -> Figures:
        return Figures(balance, self.collections[key], self.payments[key], self.reversals[key])


def _by_statement(conn: Connection, keys: list[str], *, pending_payments: bool) -> _Tally:
    tally = _Tally()
    if not keys:
        return tally
    as_of = mirror_as_of(conn, "statements")
    p = postings.c
    query = select(p.statement_key, p.kind, p.amount).where(p.statement_key.in_(keys), _unshown(as_of))
    for key, kind, amount in conn.execute(query):
        tally.posting(key, kind, amount)
    for key, amount in conn.execute(select(collections.c.statement_key, collections.c.amount).where(
            collections.c.statement_key.in_(keys), collections.c.status.in_(COLLECTION_LIVE),
            collections.c.kind != "plan")):
        tally.collections[key] += amount
    for key, amount in plan_reserved(conn, plan_statements.c.statement_key.in_(keys)).items():
        if key in keys:
            tally.collections[key] += amount
    if pending_payments:
        _earmarked(conn, tally, link_items.c.statement_key.in_(keys))
    return tally


def _earmarked(conn: Connection, tally: _Tally, where: ColumnElement[bool]) -> None:
    """A pending payment's money, spread over its link's statements in the link's order, up to what was paid."""
    query = (select(payments.c.id, payments.c.amount, link_items.c.statement_key, link_items.c.amount)
             .join(link_items, link_items.c.link_id == payments.c.link_id)
             .where(_not_allocated_yet(), where).order_by(payments.c.id, link_items.c.explicit.desc(),
                                                          link_items.c.statement_key))
    left: dict[str, Decimal] = {}
    for payment_id, paid, key, earmark in conn.execute(query):
        rest = left.setdefault(payment_id, paid)
        take = min(rest, earmark)
        left[payment_id] = rest - take
        tally.payments[key] += take


def plan_reserved(conn: Connection, where: ColumnElement[bool]) -> dict[str, Decimal]:
    """What payment plans will still collect, per statement: instalments scheduled and instalments at the provider
    not yet paid, spread over each plan's statements oldest first up to their balance (any rest on the newest).
    Counted as pending collections, so no link or other collection asks for the same money; a plan awaiting its
    mandate counts as an active one does, as its payer is being asked to agree to those very instalments."""
    active = select(plans.c.id).join(plan_statements, plan_statements.c.plan_id == plans.c.id).where(
        plans.c.status.in_(PLAN_HOLDING), where)
    plan_ids = list(dict.fromkeys(conn.execute(active).scalars()))
    out: defaultdict[str, Decimal] = defaultdict(Decimal)
    for plan_id in plan_ids:
        i, c = plan_instalments.c, collections.c
        scheduled = sum(conn.execute(select(i.amount).where(i.plan_id == plan_id, i.state == "scheduled"))
                        .scalars(), ZERO)
        live = sum(conn.execute(select(c.amount).join(plan_instalments, i.collection_id == c.id).where(
            i.plan_id == plan_id, c.status.in_(COLLECTION_LIVE))).scalars(), ZERO)
        rows = conn.execute(select(firm_statements.c.key, firm_statements.c.balance)
                            .join(plan_statements, plan_statements.c.statement_key == firm_statements.c.key)
                            .where(plan_statements.c.plan_id == plan_id)
                            .order_by(firm_statements.c.issue_date, firm_statements.c.number)).all()
        left = scheduled + live
        for n, (key, balance) in enumerate(rows, start=1):
            take = left if n == len(rows) else min(left, max(balance, ZERO))
            out[key] += take
            left -= take
    return dict(out)


def statements_owed(conn: Connection, statements: Iterable[Statement], *,
                    pending_payments: bool = True) -> list[StatementOwed]:
    """What is owed on each statement. ``pending_payments=False`` leaves out payments not allocated yet: the
    first one confirmed is placed first, as allocation does."""
    statements = list(statements)
    tally = _by_statement(conn, [s.key for s in statements], pending_payments=pending_payments)
    return [StatementOwed(s, tally.figures(s.key, s.balance)) for s in statements]


def available_balances(conn: Connection, keys: list[str]) -> dict[str, Decimal]:
    """What allocation may still place on each statement: its balance less confirmed money not yet shown, so two
    payments on one statement do not both see the full balance."""
    rows = conn.execute(select(firm_statements).where(firm_statements.c.key.in_(keys))).mappings()
    owed = statements_owed(conn, map(statement_from_row, rows), pending_payments=False)
    return {o.statement.key: max(o.figures.before_collections, ZERO) for o in owed}


def matter_owed(conn: Connection, matter_key: str) -> MatterOwed:
    """What is owed on a matter: its open statements, and money of the matter not placed on any statement yet
    (an unallocated share still counts as paid for the matter)."""
    statements = open_statements(conn, matter_key)
    as_of = mirror_as_of(conn, "statements")
    tally = _Tally()
    p = postings.c
    for kind, amount in conn.execute(select(p.kind, p.amount).where(p.matter_key == matter_key,
                                                                    _unshown(as_of))):
        tally.posting(matter_key, kind, amount)
    tally.collections[matter_key] = sum(conn.execute(select(collections.c.amount).where(
        collections.c.matter_key == matter_key, collections.c.status.in_(COLLECTION_LIVE),
        collections.c.kind != "plan")).scalars(), ZERO)
    tally.collections[matter_key] += sum(plan_reserved(conn, plans.c.matter_key == matter_key).values(), ZERO)
    tally.payments[matter_key] += sum(conn.execute(
        select(payments.c.amount).join(links, links.c.id == payments.c.link_id)
        .where(links.c.matter_key == matter_key, _not_allocated_yet())).scalars(), ZERO)
    balance = sum((s.balance for s in statements), ZERO)
    return MatterOwed(matter_key, statements, tally.figures(matter_key, balance))


def payer_statements(conn: Connection, payer_key: str) -> list[StatementOwed]:
    """The payer's open statements over all their matters, oldest first (the order credits are used in)."""
    s, m = firm_statements, firm_matters
    held = select(quarantine.c.key).where(quarantine.c.entity == "statements")
    rows = conn.execute(
        select(s).join(m, m.c.key == s.c.matter_key)
        .where(m.c.payer_key == payer_key, m.c.deleted.is_(False), s.c.deleted.is_(False), s.c.status == "open",
               s.c.key.not_in(held))
        .order_by(s.c.issue_date, s.c.number)
    ).mappings()
    return statements_owed(conn, map(statement_from_row, rows))


@dataclass(frozen=True)
class Debt:
    """A matter that owes money, as the Debts list shows it."""

    matter_key: str
    currency: str
    oldest: dt.date | None  # the oldest open statement's issue date
    statements: int
    owed: MatterOwed


DebtOrder = Literal["oldest", "largest"]


def debts(conn: Connection, *, currency: str | None = None, matter_status: str | None = None,
          link: Literal["none", "outstanding"] | None = None, order: DebtOrder = "oldest", limit: int = 50,
          offset: int = 0) -> tuple[int, list[Debt]]:
    """Matters with open statements, oldest debt first (then largest), or largest first; a page of them with what
    each owes, and how many there are in all. The database orders by its own reading of the text balances; the
    figures shown are ``matter_owed``'s, exact."""
    s, m = firm_statements, firm_matters
    held = select(quarantine.c.key).where(quarantine.c.entity == "statements")
    size = func.sum(cast(s.c.balance, Numeric(20, 4)))
    where = [m.c.deleted.is_(False), s.c.deleted.is_(False), s.c.status == "open", s.c.key.not_in(held)]
    if currency is not None:
        where.append(s.c.currency == currency)
    if matter_status is not None:
        where.append(m.c.status == matter_status)
    if link is not None:
        linked = exists().where(links.c.matter_key == m.c.key, links.c.status.in_(LINK_OPEN))
        where.append(linked if link == "outstanding" else ~linked)
    grouped = (select(m.c.key, s.c.currency, func.min(s.c.issue_date).label("oldest"),
                      func.count().label("statements"), size.label("size"))
               .join(s, s.c.matter_key == m.c.key).where(*where).group_by(m.c.key, s.c.currency)
               .having(size != 0)).subquery()
    total = conn.execute(select(func.count()).select_from(grouped)).scalar_one()
    oldest = (grouped.c.oldest.is_(None), grouped.c.oldest)
    ranking = (*oldest, grouped.c.size.desc()) if order == "oldest" else (grouped.c.size.desc(), *oldest)
    rows = conn.execute(select(grouped).order_by(*ranking, grouped.c.key).limit(limit).offset(offset)).all()
    return total, [Debt(key, ccy, first, count, matter_owed(conn, key)) for key, ccy, first, count, _ in rows]


__all__ = ["Debt", "DebtOrder", "Figures", "MatterOwed", "StatementOwed", "available_balances", "debts",
           "matter_owed", "payer_statements", "plan_reserved", "statements_owed"]
