"""Payouts: what each provider paid into the firm's bank, what it contained, and client money kept whole.

Each account's payouts and their items (payments, fees, refunds, chargebacks, adjustments) are read from the
provider (PayoutProvider) and stored once, with their postings in the same transaction: the payout's fees as an
operating-side expense (``postings.fees``), one bank deposit per payout that reached the bank
(``postings.deposits``), so the bank reconciliation shows one line per bank credit. A trust (client) account paid
out net of fees has paid a provider's fee out of client money: a compliance breach, logged at once and shown on
/status, the console and ``doctor`` with the exact amount to transfer from the operating account, and posted as a
transfer request where the mapping has ``postings.transfers``. It stands until a person clears it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError

from agent.core.errors import LedgerlinkError, RuleError, TransientError
from agent.core.model import Actor, MerchantAccount
from agent.core.retry import call
from agent.home.settings import Settings
from agent.state import StateStore, audit
from agent.state.schema import Row, payout_items, payouts, refunds
from agent.state.store import utcnow
from connectors.providers.contract import Payout, PayoutItem, PayoutItemKind, PayoutStatus, Provider, pays_out
from connectors.providers.sandbox import SandboxProvider
from mappings.format import SECTIONS, MappingFile, ProcedurePostings, SqlPostings
from postings.outbox import enqueue_payout_posting, enqueue_payout_reversal

log = logging.getLogger("ledgerlink.payouts")

LOOKBACK = dt.timedelta(days=3)  # re-read behind the newest stored payout: a payout's status moves for days
FIRST_READ = dt.timedelta(days=35)


@dataclass(frozen=True)
class Breach:
    """Fees a provider took out of client money, to be transferred back from the operating account."""

    payout_id: str
    payout_ref: str
    account: str
    fees_account: str
    amount: Decimal = field(metadata={"description": "What to transfer from fees_account to account."})
    currency: str
    created_at: dt.datetime

    @property
    def message(self) -> str:
        return (f"COMPLIANCE BREACH: trust account {self.account!r} was paid out net of {self.amount} "
                f"{self.currency} fees (payout {self.payout_ref}); transfer {self.currency} {self.amount} from "
                f"{self.fees_account!r} to {self.account!r} now, then 'ledgerlink payouts clear {self.payout_id}'")


@dataclass(frozen=True)
class PayoutLine:
    kind: str = field(metadata={"description": "payment, fee, refund, chargeback or adjustment"})
    amount: Decimal = field(metadata={"description": "Signed: what it adds to the bank credit."})
    payment_ref: str | None
    ref: str
    raw_type: str
    refund: str | None = field(default=None, metadata={
        "description": "Our refund id, who asked and why, for a refund item."})


@dataclass(frozen=True)
class PayoutView:
    id: str
    account: str
    account_kind: str
    provider: str
    payout_ref: str
    amount: Decimal = field(metadata={"description": "What reached the firm's bank account."})
    currency: str
    status: str
    created_at: dt.datetime
    arrival_date: dt.date | None
    bank_reference: str
    items_total: Decimal
    fees: Decimal
    shortfall: Decimal | None = field(metadata={"description": "Trust payouts: fees taken from client money."})
    breach_cleared_at: dt.datetime | None
    items: list[PayoutLine] = field(default_factory=list)

    @property
    def adds_up(self) -> bool:
        """Whether the items add up to the bank amount to the penny."""
        return self.items_total == self.amount


def _view(row: Row, items: list[PayoutLine] | None = None) -> PayoutView:
    names = [f.name for f in dataclasses.fields(PayoutView) if f.name != "items"]
    return PayoutView(**{n: row[n] for n in names}, items=items or [])


@dataclass
class SyncResult:
    new: int = 0
    updated: int = 0
    postings: int = 0
    breaches: list[Breach] = field(default_factory=list)


def _total(items: list[PayoutItem], kind: PayoutItemKind | None = None) -> Decimal:
    return sum((i.amount for i in items if kind is None or i.kind == kind), Decimal(0))


def open_breaches(conn: Connection) -> list[Breach]:
    """Every shortfall of client money not yet cleared by a person, oldest first."""
    rows = conn.execute(select(payouts).where(payouts.c.shortfall.is_not(None), payouts.c.breach_cleared_at.is_(None))
                        .order_by(payouts.c.created_at)).mappings().all()
    return [Breach(r["id"], r["payout_ref"], r["account"], r["fees_account"], r["shortfall"], r["currency"],
                   r["created_at"]) for r in rows]


class Payouts:
    """The payouts engine; settings, store, providers and mapping are handed in by the composition root."""

    def __init__(self, settings: Settings, store: StateStore, providers: Callable[[str], Provider],
                 mapping: MappingFile | None, *, retry_initial: float = 0.5, attempts: int = 5) -> None:
        self.settings = settings
        self.store = store
        self.providers = providers
        postings = mapping.postings if mapping is not None else None
        self.sections = ({s for s in SECTIONS if getattr(postings, s) is not None}
                         if isinstance(postings, SqlPostings | ProcedurePostings) else set())
        self.retry_initial = retry_initial
        self.attempts = attempts

    def sync(self, since: dt.datetime | None = None) -> SyncResult:
        """Read every payout account's payouts since ``since`` (default: shortly before the newest stored).

        Each account on its own: one whose provider fails is recorded as ``payouts:<account>`` in /status and the
        others are still read; the failure is raised once all were tried."""
        result = SyncResult()
        failed: list[str] = []
        for name, account in self.settings.accounts.items():
            provider = self.providers(name)
            if not provider.capabilities.payouts:
                continue
            try:
                found = call(pays_out(provider).payouts, since or self._since(name), attempts=self.attempts,
                             initial=self.retry_initial)
                for payout in found:
                    self._one(account, provider, payout, result)
            except LedgerlinkError as exc:
                log.error("payouts of account %s: %s", name, exc)
                self.store.record_error(f"payouts:{name}", str(exc))
                failed.append(f"{name}: {exc}")
                continue
            self.store.record_ok(f"payouts:{name}")
        if failed:
            raise TransientError("payouts not read for " + "; ".join(failed))
        return result

    def _since(self, account: str) -> dt.datetime:
        with self.store.read() as conn:
            newest = conn.execute(select(func.max(payouts.c.created_at)).where(payouts.c.account == account)).scalar()
        return newest - LOOKBACK if newest is not None else utcnow() - FIRST_READ

    def _one(self, account: MerchantAccount, provider: Provider, payout: Payout, result: SyncResult) -> None:
        with self.store.read() as conn:
            known = conn.execute(select(payouts).where(payouts.c.account == account.name,
                                                       payouts.c.payout_ref == payout.ref)).mappings().first()
        if known is not None:
            if known["status"] != payout.status.value:
                self._moved(known, account, payout, result)
            return
        items = call(pays_out(provider).payout_items, payout.ref, attempts=self.attempts, initial=self.retry_initial)
        try:
            breach = self._store(account, provider.name, payout, items, result)
        except IntegrityError:
            return  # stored meanwhile by another run
        result.new += 1
        if breach is not None:
            log.error("%s", breach.message)
            result.breaches.append(breach)

    def _moved(self, known: Row, account: MerchantAccount, payout: Payout, result: SyncResult) -> None:
        """A stored payout's status moved: paid posts its deposit; failed (the bank returned it) reverses its
        deposit only. Its fees were taken all the same, so their expense and any breach stand: the money comes
        back to the provider's balance net of them, as one line of a later payout."""
        with self.store.begin() as conn:
            conn.execute(update(payouts).where(payouts.c.id == known["id"]).values(
                status=payout.status.value, raw_status=payout.raw_status))
            if payout.status is PayoutStatus.FAILED:
                result.postings += len(enqueue_payout_reversal(conn, known["id"], f"payout {payout.ref} failed"))
            else:
                result.postings += self._deposit(conn, known["id"], account, payout)
        result.updated += 1

    def _store(self, account: MerchantAccount, provider: str, payout: Payout, items: list[PayoutItem],
               result: SyncResult) -> Breach | None:
        fees = -_total(items, PayoutItemKind.FEE)
        shortfall = fees if account.kind == "trust" and fees > 0 else None
        fees_account = account.fees_account or account.name
        payout_id = "po" + secrets.token_hex(8)
        with self.store.begin() as conn:
            conn.execute(payouts.insert().values(
                id=payout_id, account=account.name, account_kind=account.kind, fees_account=fees_account,
                provider=provider, payout_ref=payout.ref, amount=payout.amount, currency=payout.currency,
                status=payout.status.value, raw_status=payout.raw_status, created_at=payout.created_at,
                arrival_date=payout.arrival_date, bank_reference=payout.bank_reference, items_total=_total(items),
                fees=fees, shortfall=shortfall, synced_at=utcnow()))
            conn.execute(payout_items.insert(), [
                {"payout_id": payout_id, "line": n, "kind": i.kind.value, "amount": i.amount,
                 "payment_ref": i.payment_ref, "ref": i.ref, "raw_type": i.raw_type} for n, i in enumerate(items, 1)])
            if fees > 0 and "fees" in self.sections:
                result.postings += self._post(conn, payout_id, "fees", f"{payout.ref}:fees", fees_account, fees,
                                              payout.currency)
            result.postings += self._deposit(conn, payout_id, account, payout)
            if shortfall is not None and "transfers" in self.sections:
                result.postings += self._post(conn, payout_id, "transfers", f"{payout.ref}:transfer", account.name,
                                              shortfall, payout.currency)
        if shortfall is None:
            return None
        return Breach(payout_id, payout.ref, account.name, fees_account, shortfall, payout.currency,
                      payout.created_at)

    def _deposit(self, conn: Connection, payout_id: str, account: MerchantAccount, payout: Payout) -> int:
        """One deposit posting per payout, once it is in the bank."""
        if payout.status is not PayoutStatus.PAID or "deposits" not in self.sections:
            return 0
        return self._post(conn, payout_id, "deposits", f"{payout.ref}:deposit", account.name, payout.amount,
                          payout.currency)

    @staticmethod
    def _post(conn: Connection, payout_id: str, section: str, reference: str, account: str, amount: Decimal,
              currency: str) -> int:
        return 1 if enqueue_payout_posting(conn, payout_id, section, reference, account, amount, currency) else 0

    def pay_out_now(self, actor: Actor) -> SyncResult:
        """Sandbox only: the sandbox pays out every sandbox account's settled balance now instead of after
        midnight, then the payouts are read as ``sync`` reads them, so a demo shows payouts, fee postings and the
        client-money check at once. Without a sandbox account it is refused naming the providers, which pay out
        on their own schedule. Audited as payout.pay_out_now."""
        with audit.attempt(self.store, actor, "payout.pay_out_now", "provider", "sandbox") as act:
            sandboxes = [p for p in map(self.providers, self.settings.accounts) if isinstance(p, SandboxProvider)]
            if not sandboxes:
                others = ", ".join(f"{name} ({a.provider})" for name, a in self.settings.accounts.items())
                raise RuleError(f"pay out now is for the sandbox only; {others} pay out on the provider's own "
                                "schedule, which 'ledgerlink payouts sync' reads")
            made = sandboxes[0].pay_out_now()  # one sandbox.db holds every sandbox account's balance
            result = self.sync()
            with self.store.begin() as conn:
                act.record(conn, after={"provider_payouts": made, "new": result.new, "postings": result.postings,
                                        "breaches": len(result.breaches)})
            return result

    def why_none(self) -> str:
        """Why there are no payouts yet, said when the list is empty: when each provider pays out, when they
        were last read, and for the sandbox how to pay out now."""
        status = self.store.component_status()
        reasons = []
        for name, account in self.settings.accounts.items():
            if not self.providers(name).capabilities.payouts:
                continue
            last = status.get(f"payouts:{name}", {}).get("last_ok_at")
            read = f"read {last:%Y-%m-%d %H:%M} UTC" if last else "not read yet"
            if account.provider == "sandbox":
                reasons.append(f"{name}: the sandbox pays out each day's settled payments after midnight UTC, and "
                               f"nothing is waiting from before today ({read}); 'ledgerlink payouts pay-out-now' "
                               "pays out today's now")
            else:
                reasons.append(f"{name}: {account.provider} has paid nothing out since the agent started reading "
                               f"({read}); it pays out on its own schedule, days after a payment settles")
        return "no payouts yet. " + ("; ".join(reasons) if reasons else "No account's provider pays out.")

    # ------------------------------------------------------------------ reading

    def listing(self, account: str | None = None) -> list[PayoutView]:
        query = select(payouts).order_by(payouts.c.created_at.desc(), payouts.c.id)
        if account:
            query = query.where(payouts.c.account == account)
        with self.store.read() as conn:
            return [_view(r) for r in conn.execute(query).mappings()]

    def show(self, payout: str) -> PayoutView:
        """One payout by our id or the provider's, with its items; a refund item names our refund and its actor."""
        with self.store.read() as conn:
            row = conn.execute(select(payouts).where((payouts.c.id == payout) | (payouts.c.payout_ref == payout))
                               ).mappings().first()
            if row is None:
                raise RuleError(f"no payout {payout!r}; 'ledgerlink payouts list' shows them")
            lines = conn.execute(select(payout_items).where(payout_items.c.payout_id == row["id"])
                                 .order_by(payout_items.c.line)).mappings().all()
            refs = [r["ref"] for r in lines if r["kind"] == PayoutItemKind.REFUND]
            found = {r["provider_ref"]: f"{r['id']} by {r['actor']}: {r['reason']}"
                     for r in conn.execute(select(refunds).where(refunds.c.provider_ref.in_(refs))).mappings()}
        items = [PayoutLine(r["kind"], r["amount"], r["payment_ref"], r["ref"], r["raw_type"], found.get(r["ref"]))
                 for r in lines]
        return _view(row, items)

    def breaches(self) -> list[Breach]:
        with self.store.read() as conn:
            return open_breaches(conn)

    def clear(self, actor: Actor, payout: str, note: str) -> None:
        """A person confirms the shortfall was transferred back to the trust account: a money action, audited as
        payout.clear with the shortfall and the note (a refusal too)."""
        with audit.attempt(self.store, actor, "payout.clear", "payout", payout) as act:
            if not note.strip():
                raise RuleError("say how the shortfall was made good (--note), e.g. the transfer's bank reference")
            with self.store.begin() as conn:
                row = conn.execute(select(payouts).where(
                    (payouts.c.id == payout) | (payouts.c.payout_ref == payout), payouts.c.shortfall.is_not(None),
                    payouts.c.breach_cleared_at.is_(None)).with_for_update()).mappings().first()
                if row is None:
                    raise RuleError(f"payout {payout!r} has no open breach; 'ledgerlink payouts list' shows them")
                conn.execute(update(payouts).where(payouts.c.id == row["id"]).values(
                    breach_cleared_at=utcnow(), breach_note=note.strip()))
                act.target("payout", row["id"])
                act.record(conn, before={"payout": row["payout_ref"], "shortfall": row["shortfall"],
                                         "currency": row["currency"], "cleared": False},
                           after={"cleared": True, "note": note.strip()})
