"""The link engine: every rule of the Instant Bank Pay flow and the Send for Payment guide, in one place.

Rules (each has its own test in tests/engine/test_links.py):
* amount defaults to what is owed (agent.state.owed): the mirror's open balance, minus Direct Debit collections
  that will still take money, minus payments received but not yet in the books, plus refunds not yet in them;
* existing-link check: a debt with an outstanding link gets that link back (marked existing). The unique
  ``outstanding_key`` column makes this hold across threads and processes; a link whose creation was cut off
  (status ``creating``) is resumed with the same idempotency key, so the provider never holds two;
* description defaults to the service name and today's date in the firm's zone;
* the payer must have an email before anything reaches the provider, even if the link will go by text;
* Cancel & Create New cancels at the provider first and creates only once that is confirmed;
* a link never outlives its debt (``review_outstanding``), and expires per merchant account.
Creating a link never writes to the firm database.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, func, select, update
from sqlalchemy.exc import IntegrityError

from agent.core.addresses import check_email
from agent.core.errors import ConfigurationError, DataError, NotFound, RuleError
from agent.core.model import Actor, Matter, MatterStatus, MerchantAccount, Statement, check_decimals, to_decimal
from agent.core.retry import call
from agent.home.settings import Settings
from agent.state import StateStore, audit
from agent.state.accounts import kind_changes
from agent.state.mirror import get_matter, get_payer, get_statement, matter_number, open_statements
from agent.state.owed import matter_owed
from agent.state.schema import Row, firm_clients, firm_statements, link_items, links
from agent.state.statuses import LINK_CREATING, LINK_OPEN, LinkState, move
from agent.state.store import utcnow
from connectors.providers.contract import CancelRefused, LinkSpec, LinkStatus, Provider, ProviderLink

log = logging.getLogger("ledgerlink.links")
# what the audit trail keeps of a link: its money and its state, never the payer's contact beyond the email
AUDITED = ("status", "amount", "currency", "description", "account", "matter_key", "invoice_number", "payer_email",
           "provider_ref", "status_reason", "replaces")


def audited(row: Row) -> dict[str, Any]:
    """A link's audited values, for the before and after of its audit entries."""
    return {name: row[name] for name in AUDITED}


def _request_target(request: LinkRequest) -> tuple[str, str]:
    """What a create is for, before there is a link: the matter, else the quick link's invoice or payer."""
    if request.matter is not None:
        return "matter", request.matter
    return ("invoice", request.invoice) if request.invoice else ("payer", request.email or request.name or "")


def new_id(prefix: str = "lnk") -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass(frozen=True)
class LinkRequest:
    """A request from the CLI, API, request table or bulk file. Either matter or quick-link fields."""

    matter: str | None = None
    statements: Mapping[str, Decimal] = field(default_factory=dict)  # statement number/key -> amount
    amount: Decimal | None = None
    description: str | None = None
    account: str | None = None
    # quick link (no matter needed)
    name: str | None = None
    email: str | None = None
    invoice: str | None = None
    due_date: dt.date | None = None
    message: str | None = None  # the firm's own words to the payer, in the email above the link (bulk files)
    request_key: str | None = None  # an API client's Idempotency-Key: a quick link asked for again is the same one


@dataclass(frozen=True)
class Link:
    id: str
    status: str
    url: str | None
    amount: Decimal
    currency: str
    description: str
    account: str
    matter_key: str | None
    payer_name: str | None
    payer_email: str | None
    expires_at: dt.datetime
    created_at: dt.datetime
    provider_ref: str | None
    invoice_number: str | None = None
    message: str | None = None
    status_reason: str | None = None
    flagged: str | None = None
    replaces: str | None = None
    existing: bool = False
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Row, **extra: Any) -> Link:
        names = cls.__dataclass_fields__.keys() - {"existing", "warnings"}
        return cls(**{n: row[n] for n in names}, **extra)


@dataclass(frozen=True)
class Defaults:
    """What the popup shows before a link is created."""

    matter_key: str
    open_balance: Decimal
    pending_collections: Decimal
    unposted_payments: Decimal
    unposted_reversals: Decimal  # refunds, failures and charge-backs the mirror does not show yet
    amount: Decimal
    currency: str
    description: str
    statements: list[Statement]
    payer_name: str | None
    payer_email: str | None
    existing: Link | None


@dataclass(frozen=True)
class _Plan:
    """A matter link that passed every rule, ready to be reserved."""

    account: MerchantAccount
    defaults: Defaults
    items: dict[str, Decimal]
    amount: Decimal
    description: str
    warnings: list[str]


def _get(conn: Connection, link_id: str) -> Row:
    row = conn.execute(select(links).where(links.c.id == link_id)).mappings().first()
    if row is None:
        raise NotFound(f"unknown link {link_id!r}")
    return row


def _paying_for(conn: Connection, row: Row) -> tuple[str, tuple[str, ...]]:
    """The matter number and invoice numbers a link pays, as the payer knows them: numbers, never keys (a
    statement gone from the mirror meanwhile is left out rather than shown by its key)."""
    invoices = tuple(conn.execute(
        select(firm_statements.c.number).join(link_items, link_items.c.statement_key == firm_statements.c.key)
        .where(link_items.c.link_id == row["id"])
        .order_by(firm_statements.c.issue_date, firm_statements.c.number)).scalars())
    if not invoices and row["invoice_number"]:
        invoices = (row["invoice_number"],)
    matter = matter_number(conn, row["matter_key"]) if row["matter_key"] else None
    return matter or "", invoices


def matter_debt(matter_key: str, account: str) -> str:
    """A matter's debt in one account: one outstanding link each, so a trust link never hands back the office's."""
    return f"matter:{matter_key}/{account}"


def _open_for(conn: Connection, debt: str) -> Row | None:
    return conn.execute(select(links).where(links.c.outstanding_key == debt)).mappings().first()


class LinkEngine:
    def __init__(self, settings: Settings, store: StateStore, providers: Callable[[str | None], Provider],
                 *, today: Callable[[], dt.date] | None = None, retry_initial: float = 0.5) -> None:
        self.settings = settings
        self.store = store
        self.providers = providers
        self.today = today or (lambda: dt.datetime.now(settings.zone).date())
        self.retry_initial = retry_initial

    # ------------------------------------------------------------------------------------------- reading

    def description(self) -> str:
        return self.settings.description_template.format(service=self.settings.service_name, date=self.today())

    def defaults(self, matter_ref: str, account: str | None = None) -> Defaults:
        """What a link on the matter would be for; ``existing`` is its outstanding link in ``account``."""
        with self.store.read() as conn:
            matter = get_matter(conn, matter_ref)
            owing = matter_owed(conn, matter.key)
            statements = owing.statements
            payer = get_payer(conn, matter.payer_key)
            name, email = (payer.name, payer.email) if payer else self._client_contact(conn, matter.client_key)
            existing = _open_for(conn, matter_debt(matter.key, self.settings.account(account).name))
        currency = statements[0].currency if statements else self.settings.account(None).currency
        owed = owing.figures
        return Defaults(
            matter_key=matter.key, open_balance=owed.open_balance, pending_collections=owed.pending_collections,
            unposted_payments=owed.unposted_payments, unposted_reversals=owed.unposted_reversals,
            amount=owed.amount, currency=currency, description=self.description(),
            statements=statements, payer_name=name, payer_email=email,
            existing=Link.from_row(existing, existing=True) if existing else None,
        )

    @staticmethod
    def _client_contact(conn: Connection, client_key: str | None) -> tuple[str | None, str | None]:
        if client_key is None:
            return None, None
        row = conn.execute(select(firm_clients).where(firm_clients.c.key == client_key)).mappings().first()
        return (row["name"], row["email"]) if row else (None, None)

    def get(self, link_id: str) -> Link:
        with self.store.read() as conn:
            return Link.from_row(_get(conn, link_id))

    def find(self, statuses: list[str] | None = None, matter: str | None = None) -> list[Link]:
        query = select(links).order_by(links.c.created_at.desc())
        with self.store.read() as conn:
            if statuses:
                query = query.where(links.c.status.in_(statuses))
            if matter:
                query = query.where(links.c.matter_key == get_matter(conn, matter).key)
            return [Link.from_row(r) for r in conn.execute(query).mappings()]

    # ------------------------------------------------------------------------------------------- creating

    def create(self, actor: Actor, request: LinkRequest) -> Link:
        """Validate, reserve (or find) the debt's link, then create it at the provider; audited as link.create
        (an existing link handed back changes nothing and is not)."""
        kind, ident = _request_target(request)
        with audit.attempt(self.store, actor, "link.create", kind, ident) as act:
            return self._create(request, act)

    def _create(self, request: LinkRequest, act: audit.Attempt, replaces: str | None = None) -> Link:
        if request.matter is None:
            return self._create_quick(request, act)
        with self.store.read() as conn:
            matter = get_matter(conn, request.matter)
            existing = _open_for(conn, matter_debt(matter.key, self.settings.account(request.account).name))
        if existing is not None and existing["status"] != LINK_CREATING:
            return Link.from_row(existing, existing=True)
        plan = self._plan(request, matter)
        row = self._reserve(
            debt=matter_debt(matter.key, plan.account.name), account=plan.account, amount=plan.amount,
            description=plan.description,
            matter_key=matter.key, client_key=matter.client_key, payer_name=plan.defaults.payer_name,
            payer_email=plan.defaults.payer_email, invoice=None, due_date=None, items=plan.items,
            explicit=bool(request.statements),
        )
        if row["status"] != LINK_CREATING:  # a concurrent request created it a moment ago
            act.unchanged()
            return Link.from_row(row, existing=True)
        # A 'creating' row that is not ours was cut off (or is being created right now): finishing it with its
        # own idempotency key yields the provider's one link either way.
        return self._finish(row, plan.warnings, act, replaces)

    def _plan(self, request: LinkRequest, matter: Matter) -> _Plan:
        """Every rule a matter link must pass, checked against the current balances; nothing is written."""
        if matter.status != MatterStatus.OPEN:
            raise RuleError(f"matter {matter.number} is {matter.status}; links are only for open matters")
        account = self._account(request.account)
        defaults = self.defaults(matter.key, account.name)
        if not defaults.payer_email:
            who = f"payer {defaults.payer_name!r}" if defaults.payer_name else "no payer"
            raise RuleError(
                f"matter {matter.number}: {who} has no email address. Add one in the matter system first; "
                "the link needs it even if you will send it by text"
            )
        items = self._items(request, defaults, account)
        if request.statements:
            amount = sum(items.values(), Decimal(0))
        else:
            amount = defaults.amount if request.amount is None else request.amount
        amount = self._check_amount(amount, account.currency, field="amount")
        warnings: list[str] = []
        if amount > defaults.amount:
            message = (f"{amount} is more than the {defaults.amount} {defaults.currency} owing on {matter.number} "
                       f"after pending collections and unposted payments")
            if self.settings.over_balance == "refuse":
                raise RuleError(message)
            warnings.append(message)
        if not request.statements:
            items = self._oldest_first(defaults.statements, amount)
        return _Plan(account, defaults, items, amount, request.description or defaults.description, warnings)

    def _check_amount(self, amount: Decimal, currency: str, field: str) -> Decimal:
        amount = to_decimal(amount, field=field)
        if amount <= 0:
            raise RuleError(f"{field} must be more than zero (got {amount})")
        try:
            return check_decimals(amount, currency, field=field)
        except DataError as exc:
            raise RuleError(str(exc)) from None

    def _items(self, request: LinkRequest, defaults: Defaults, account: MerchantAccount) -> dict[str, Decimal]:
        if not request.statements:
            if defaults.statements and defaults.currency != account.currency:
                raise RuleError(f"the matter bills in {defaults.currency} but account {account.name!r} takes "
                                f"{account.currency}; choose an account in {defaults.currency}")
            return {}
        by_ref = {s.number: s for s in defaults.statements} | {s.key: s for s in defaults.statements}
        items: dict[str, Decimal] = {}
        for ref, raw in request.statements.items():
            st = by_ref.get(ref)
            if st is None:
                with self.store.read() as conn:
                    other = get_statement(conn, ref)
                hint = "it is not open" if other and other.matter_key == defaults.matter_key else "it is not on it"
                raise RuleError(f"statement {ref!r} cannot be paid on this matter: {hint}")
            if st.currency != account.currency:
                raise RuleError(f"statement {st.number} is in {st.currency}; account {account.name!r} takes "
                                f"{account.currency}")
            amount = self._check_amount(raw, st.currency, field=f"amount for {st.number}")
            if amount > st.balance and self.settings.over_balance == "refuse":
                raise RuleError(f"{amount} is more than the {st.balance} owing on statement {st.number}")
            items[st.key] = amount
        return items

    @staticmethod
    def _oldest_first(statements: list[Statement], amount: Decimal) -> dict[str, Decimal]:
        items: dict[str, Decimal] = {}
        left = amount
        for st in statements:
            if left <= 0:
                break
            if st.balance <= 0:
                continue
            take = min(st.balance, left)
            items[st.key] = take
            left -= take
        return items

    def _account(self, name: str | None) -> MerchantAccount:
        """The account a new link goes to, refused while its kind was changed under links or payments in flight
        (they would be posted as the other kind of money)."""
        account = self.settings.account(name)
        with self.store.read() as conn:
            changed = kind_changes(conn, {account.name: account.kind})
        if changed:
            raise ConfigurationError(changed[0].message)
        return account

    def _create_quick(self, request: LinkRequest, act: audit.Attempt) -> Link:
        account = self._account(request.account)
        if request.email:  # none when staff copy the link and send it themselves (the guide's manual delivery)
            check_email(request.email)
        if not request.name:
            raise RuleError("a quick link needs the recipient's name")
        if request.amount is None:
            raise RuleError("a quick link needs an amount")
        amount = self._check_amount(request.amount, account.currency, field="amount")
        if request.invoice:
            self._refuse_paid_invoice(account.name, request.invoice)
        debt = (f"quick:{account.name}:{request.invoice}" if request.invoice
                else f"request:{request.request_key}" if request.request_key else None)
        row = self._reserve(
            debt=debt, account=account, amount=amount, description=request.description or self.description(),
            matter_key=None, client_key=None, payer_name=request.name, payer_email=request.email,
            invoice=request.invoice, due_date=request.due_date, items={}, explicit=False, message=request.message,
        )
        if row["status"] != LINK_CREATING:
            act.unchanged()
            return Link.from_row(row, existing=True)
        return self._finish(row, [], act)

    def _refuse_paid_invoice(self, account: str, invoice: str) -> None:
        """A paid debt is never offered again, whichever path asks (a bulk file dropped twice, the request table)."""
        with self.store.read() as conn:
            paid = conn.execute(select(links.c.id, links.c.closed_at).where(
                links.c.account == account, links.c.invoice_number == invoice,
                links.c.status == LinkStatus.PAYMENT_RECEIVED.value)).first()
        if paid is not None:
            when = f" on {paid.closed_at:%Y-%m-%d}" if paid.closed_at else ""
            raise RuleError(f"invoice {invoice} was paid{when} through link {paid.id}; no new link is made for it")

    def _reserve(self, *, debt: str | None, account: MerchantAccount, amount: Decimal, description: str,
                 matter_key: str | None, client_key: str | None, payer_name: str | None, payer_email: str | None,
                 invoice: str | None, due_date: dt.date | None, items: dict[str, Decimal],
                 explicit: bool, replaces: str | None = None, message: str | None = None) -> Row:
        """Insert the link row as ``creating``; if the debt already has one (a concurrent request), return it."""
        provider = self.providers(account.name)
        now = utcnow()
        expiry = min(dt.timedelta(days=account.expiry_days), provider.capabilities.max_expiry)
        link_id = new_id()
        values = dict(
            id=link_id, account=account.name, provider=provider.name, status=LINK_CREATING, amount=amount,
            currency=account.currency, description=description, matter_key=matter_key, client_key=client_key,
            payer_name=payer_name, payer_email=payer_email, invoice_number=invoice, due_date=due_date,
            created_at=now, expires_at=now + expiry, outstanding_key=debt, idempotency_key=secrets.token_hex(16),
            replaces=replaces, account_kind=account.kind, message=message,
        )
        try:
            with self.store.begin() as conn:
                if debt is not None and (existing := _open_for(conn, debt)) is not None:
                    return existing
                conn.execute(links.insert().values(**values))
                if items:
                    bills = dict(conn.execute(select(firm_statements.c.key, firm_statements.c.amount)
                                              .where(firm_statements.c.key.in_(list(items)))).all())
                    conn.execute(link_items.insert(), [
                        {"link_id": link_id, "statement_key": k, "amount": v, "explicit": explicit,
                         "statement_amount": bills.get(k)}
                        for k, v in items.items()
                    ])
                return _get(conn, link_id)
        except IntegrityError:
            with self.store.read() as conn:
                existing = _open_for(conn, debt) if debt else None
            if existing is None:
                raise
            return existing

    def _finish(self, row: Row, warnings: list[str], act: audit.Attempt | None, replaces: str | None = None) -> Link:
        """Create the reserved link at the provider (idempotent by the row's key) and record the result, with
        its audit entry when a person or job asked for it (``act``)."""
        if act is not None:
            act.target("link", row["id"])
        provider = self.providers(row["account"])
        with self.store.read() as conn:
            matter, invoices = _paying_for(conn, row)
        spec = LinkSpec(
            link_id=row["id"], amount=row["amount"], currency=row["currency"], description=row["description"],
            payer_name=row["payer_name"] or "", payer_email=row["payer_email"] or "", expires_at=row["expires_at"],
            idempotency_key=row["idempotency_key"], reference=", ".join(invoices) or matter,
            metadata={"link_id": row["id"], **({"matter": matter} if matter else {})},
            firm_name=self.settings.service_name, matter_number=matter, invoice_numbers=invoices,
            disclaimer=self.settings.account(row["account"]).disclaimer,
        )
        try:
            created: ProviderLink = call(provider.create_link, spec, initial=self.retry_initial)
        except Exception:
            # The row stays 'creating' with its idempotency key: the next request for this debt resumes it and
            # the provider returns the same link if it had in fact made one. Quick links without a debt key
            # cannot be found again, so they are marked failed.
            if row["outstanding_key"] is None:
                with self.store.begin() as conn:
                    move(conn, links, LinkState.FAILED, links.c.id == row["id"], from_=(LinkState.CREATING,))
            raise
        replacing: dict[str, Any] = {"replaces": replaces} if replaces else {}
        with self.store.begin() as conn:
            move(conn, links, LinkState.OUTSTANDING, links.c.id == row["id"], from_=(LinkState.CREATING,),
                 provider_ref=created.ref, url=created.url, expires_at=created.expires_at or row["expires_at"],
                 **replacing)
            result = _get(conn, row["id"])
            if act is not None:
                act.record(conn, after=audited(result))
        log.info("link %s created for %s %s (%s)", row["id"], row["amount"], row["currency"], row["account"])
        return Link.from_row(result, warnings=tuple(warnings))

    def resume(self, link_id: str) -> Link:
        """Finish a link whose creation was cut off (crash or provider outage)."""
        with self.store.read() as conn:
            row = _get(conn, link_id)
        if row["status"] != LINK_CREATING:
            return Link.from_row(row, existing=True)
        return self._finish(row, [], None)

    # ------------------------------------------------------------------------------------------- closing

    def _close(self, conn: Connection, link_id: str, status: LinkState, reason: str | None) -> None:
        move(conn, links, status, links.c.id == link_id, closed_at=utcnow(), outstanding_key=None,
             status_reason=reason)

    def cancel(self, actor: Actor, link_id: str, reason: str = "cancelled by staff") -> Link:
        """Cancel at the provider first; the local link changes only once the provider confirmed. Audited as
        link.cancel, a refusal (the provider's or ours) too."""
        with audit.attempt(self.store, actor, "link.cancel", "link", link_id) as act:
            return self._cancel(link_id, reason, act)

    def _cancel(self, link_id: str, reason: str, act: audit.Attempt) -> Link:
        with self.store.read() as conn:
            row = _get(conn, link_id)
        if row["status"] == LINK_CREATING:
            self.resume(link_id)
            with self.store.read() as conn:
                row = _get(conn, link_id)
        if row["status"] != LinkStatus.OUTSTANDING.value:
            raise RuleError(f"link {link_id} is {row['status']}, not outstanding; nothing to cancel")
        provider = self.providers(row["account"])
        try:
            result: ProviderLink = call(provider.cancel_link, row["provider_ref"], initial=self.retry_initial)
        except CancelRefused as exc:
            if exc.link is not None and exc.link.status == LinkStatus.PAYMENT_RECEIVED:
                raise RuleError(f"link {link_id} was paid before it could be cancelled; "
                                "no new link was created and the payment will be posted") from None
            raise RuleError(f"the provider would not cancel link {link_id}: {exc}") from None
        with self.store.begin() as conn:
            self._close(conn, link_id, LinkState(result.status) if result.status != LinkStatus.OUTSTANDING
                        else LinkState.CANCELLED, reason)
            closed = _get(conn, link_id)
            act.record(conn, before=audited(row), after=audited(closed))
            return Link.from_row(closed)

    def recreate(self, actor: Actor, link_id: str, request: LinkRequest | None = None) -> Link:
        """Cancel & Create New: cancel confirmed first, then a fresh link with the old link's amount (or statement
        split) and description, unless ``request`` changes them; both are checked again against the balances.
        Audited as the old link's link.cancel and the new link's link.recreate (a refusal: on the old link)."""
        with audit.attempt(self.store, actor, "link.recreate", "link", link_id) as act:
            old = self.get(link_id)
            fresh = self._replacement(old, request or LinkRequest())
            if fresh.matter is not None:
                with self.store.read() as conn:
                    self._plan(fresh, get_matter(conn, fresh.matter))  # refused here, the old link still stands
            # the old link's own link.cancel entry on success; a refusal is this action's one failed entry
            self._cancel(link_id, "replaced (Cancel & Create New)", audit.Attempt(actor, "link.cancel", "link", link_id,
                                                                                  None))
            act.before = {"replaces": link_id}
            link = self._create(fresh, act, replaces=link_id)
            if link.existing:  # a concurrent request made the debt's new link: it replaces the old one all the same
                with self.store.begin() as conn:
                    conn.execute(update(links).where(links.c.id == link.id).values(replaces=link_id))
        return self.get(link.id)

    def _replacement(self, old: Link, changes: LinkRequest) -> LinkRequest:
        """What the clerk asked for last time, with what they change now (seed 000: "the current amount and
        description"). An amount the debt no longer owes is brought down to what it does owe."""
        description = changes.description or old.description
        account = changes.account or old.account
        if old.matter_key is None:
            return LinkRequest(amount=changes.amount or old.amount, name=old.payer_name, email=old.payer_email,
                               invoice=old.invoice_number, account=account, description=description)
        statements = dict(changes.statements)
        if not statements and changes.amount is None:
            with self.store.read() as conn:
                statements = {r.statement_key: r.amount for r in conn.execute(select(link_items).where(
                    link_items.c.link_id == old.id, link_items.c.explicit.is_(True)))}
        amount = changes.amount
        if amount is None and not statements:
            amount = min(old.amount, self.defaults(old.matter_key, old.account).amount)
        return LinkRequest(matter=old.matter_key, statements=statements, amount=amount, description=description,
                           account=account)

    def create_remainder(self, actor: Actor, link_id: str) -> Link | None:
        """After a partial payment (single-use link closed): a fresh link for what is still owing."""
        old = self.get(link_id)
        if old.matter_key is None or self.defaults(old.matter_key, old.account).amount <= 0:
            return None
        return self.create(actor, LinkRequest(matter=old.matter_key, account=old.account, description=old.description))

    def expire_due(self, now: dt.datetime | None = None) -> int:
        """Outstanding links past their expiry become expired (after asking the provider, which may know better)."""
        now = now or utcnow()
        with self.store.read() as conn:
            due = conn.execute(select(links).where(
                links.c.status == LinkStatus.OUTSTANDING.value, links.c.expires_at <= now)).mappings().all()
        count = 0
        for row in due:
            try:
                state = call(self.providers(row["account"]).get_link, row["provider_ref"], initial=self.retry_initial)
            except Exception as exc:  # one bad provider must not stop expiring the others
                log.warning("could not check link %s at the provider: %s", row["id"], exc)
                continue
            if state.status == LinkStatus.PAYMENT_RECEIVED:
                continue  # the payment event will close it
            with self.store.begin() as conn:
                self._close(conn, row["id"], LinkState.EXPIRED, "passed its expiry")
            count += 1
        return count

    def review_outstanding(self, actor: Actor) -> list[str]:
        """A link never outlives its debt: voided/paid-elsewhere statements cancel or flag it (stale_link)."""
        problems: list[tuple[str, str]] = []
        with self.store.read() as conn:
            rows = conn.execute(select(links).where(links.c.status == LinkStatus.OUTSTANDING.value,
                                                    links.c.matter_key.is_not(None))).mappings().all()
            for row in rows:
                reason = self._stale_reason(conn, row)
                if reason and reason != row["flagged"]:
                    problems.append((row["id"], reason))
        done = []
        for link_id, reason in problems:
            if self.settings.stale_link == "cancel":
                try:
                    self.cancel(actor, link_id, reason=reason)
                except RuleError as exc:
                    log.warning("stale link %s not cancelled: %s", link_id, exc)
                    continue
            else:
                with self.store.begin() as conn:
                    conn.execute(update(links).where(links.c.id == link_id).values(flagged=reason))
            done.append(link_id)
        return done

    def _stale_reason(self, conn: Connection, row: Row) -> str | None:
        items = conn.execute(select(link_items).where(link_items.c.link_id == row["id"])).mappings().all()
        for item in items:
            st = get_statement(conn, item["statement_key"])
            if st is None or st.deleted or st.status == "void":
                return f"statement {st.number if st else item['statement_key']} was voided or removed"
            if st.matter_key != row["matter_key"]:
                return f"statement {st.number} was moved to another matter"
            then = item["statement_amount"]
            if then is not None and st.amount > then:
                return (f"statement {st.number} was raised from {then} to {st.amount} after the link was made "
                        f"for {row['amount']}")
            if st.balance < item["amount"]:
                return f"statement {st.number} now owes {st.balance}, less than the link's {item['amount']}"
        balance = sum((s.balance for s in open_statements(conn, row["matter_key"])), Decimal(0))
        if balance < row["amount"]:
            return f"the matter now owes {balance}, less than the link's {row['amount']}"
        return None


def sent_markers(conn: Connection, matter_keys: list[str]) -> dict[str, int]:
    """Matters showing 'payment link sent': count of outstanding links per matter."""
    if not matter_keys:
        return {}
    rows = conn.execute(
        select(links.c.matter_key, func.count()).where(and_(links.c.matter_key.in_(matter_keys),
                                                            links.c.status.in_(LINK_OPEN)))
        .group_by(links.c.matter_key)
    )
    return {k: n for k, n in rows}

