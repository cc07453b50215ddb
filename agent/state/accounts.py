"""Whether money is client money, fixed on each link and payment when it is made (issue 24, item 7).

Settings say what kind an account is today; the rows say what it was when the link was sent and the payment taken,
and only the rows decide how a payment is posted. Changing an account's kind while it has links or payments in
flight would post client money as office money (or the reverse): ``kind_changes`` names them, and the link engine,
the service and ``doctor`` refuse to go on until they are settled or the kind is put back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, exists, func, select, update

from agent.state.schema import links, payments, postings
from agent.state.statuses import LINK_OPEN, PAYMENT_UNPOSTED, POSTING_IN_FLIGHT


@dataclass(frozen=True)
class KindChange:
    """An account whose settings now say ``now`` while rows made as ``was`` are still in flight."""

    account: str
    was: str
    now: str
    links: int
    payments: int

    @property
    def message(self) -> str:
        return (f"account {self.account!r} is now kind {self.now!r} in the settings, but {self.links} link(s) and "
                f"{self.payments} payment(s) made as {self.was!r} are still in flight: put its kind back to "
                f"{self.was!r} until they are paid, cancelled or posted ('ledgerlink links list', 'ledgerlink "
                "postings list'), or use a new account name for the other kind")


def stamp_kinds(conn: Connection, kinds: Mapping[str, str]) -> None:
    """Fix the kind on rows an older agent made without one: the account's kind as the settings say now, once, at
    the first start after the upgrade."""
    for table in (links, payments):
        for account, kind in kinds.items():
            conn.execute(update(table).where(table.c.account == account, table.c.account_kind.is_(None))
                         .values(account_kind=kind))


def _unposted_payment() -> ColumnElement[bool]:
    in_flight = exists().where(postings.c.payment_id == payments.c.id, postings.c.state.in_(POSTING_IN_FLIGHT))
    return payments.c.status.in_(PAYMENT_UNPOSTED) & (
        in_flight | ~exists().where(postings.c.payment_id == payments.c.id))


def kind_changes(conn: Connection, kinds: Mapping[str, str]) -> list[KindChange]:
    """Accounts whose kind in ``kinds`` differs from the kind their in-flight links and payments were made with."""
    found: dict[tuple[str, str], list[int]] = {}
    for row in conn.execute(select(links.c.account, links.c.account_kind, func.count())
                            .where(links.c.status.in_(LINK_OPEN), links.c.account_kind.is_not(None))
                            .group_by(links.c.account, links.c.account_kind)):
        found.setdefault((row[0], row[1]), [0, 0])[0] += row[2]
    for row in conn.execute(select(payments.c.account, payments.c.account_kind, func.count())
                            .where(_unposted_payment(), payments.c.account_kind.is_not(None))
                            .group_by(payments.c.account, payments.c.account_kind)):
        found.setdefault((row[0], row[1]), [0, 0])[1] += row[2]
    return [KindChange(account, was, kinds[account], n_links, n_payments)
            for (account, was), (n_links, n_payments) in sorted(found.items())
            if account in kinds and kinds[account] != was]


__all__ = ["KindChange", "kind_changes", "stamp_kinds"]
