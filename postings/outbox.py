"""The postings outbox: confirmed payments written back into the firm's database exactly once.

A posting moves through pending -> posting -> posted (or retrying / failed); incomplete ones wait for a person to
reallocate them, removed ones were handled by hand. Exactly once rests on three rules:

* the local row is marked ``posting`` (committed) before the target is touched, and ``posted`` only after the
  target's transaction committed;
* the target's own transaction checks the reference before writing (Connector.write_posting), so a second write
  of the same reference does nothing;
* a posting that may already have reached the target (left in ``posting`` by a crash, or tried before) is first
  looked up in the target with posting_exists.

One Outbox instance (the service's) works a state store at a time; ``posting`` rows older than the instance are
what a crashed predecessor left behind.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, bindparam, insert, or_, select
from tenacity import RetryCallState, Retrying, wait_random_exponential

from agent.core.errors import DataError, LedgerlinkError, RuleError, TransientError
from agent.core.model import Actor, to_minor
from agent.core.retry import MAX_WAIT
from agent.state import StateStore, audit
from agent.state.schema import Row, firm_statements, payments, postings
from agent.state.statuses import PostingState as P
from agent.state.statuses import move
from agent.state.store import utcnow
from connectors.database.contract import Connector, posting_context
from connectors.database.errors import NotReady
from mappings.format import FilePostings, MappingFile
from postings.allocation import allocate, trust_shares, unusable
from postings.filedrop import FileDrop
from postings.queries import POSTING_DETAILS

log = logging.getLogger("ledgerlink.postings")

REVERSAL_SUFFIX = ":R"
WITHDRAWN = "collected after all: reversal withdrawn"
MARK_GROUP = 200
AUDITED = ("state", "amount", "currency", "statement_key", "matter_key", "attempts", "note")  # a posting's audit view
Clock = Callable[[], dt.datetime]


# ------------------------------------------------------------------------------------------- enqueueing


def _insert(conn: Connection, now: dt.datetime, **values: Any) -> int:
    values = {"attempts": 0, "created_at": now, "updated_at": now, **values}
    primary_key = conn.execute(insert(postings).values(**values)).inserted_primary_key
    assert primary_key is not None, "an INSERT's result has the new row's key"
    posting_id: int = primary_key[0]
    return posting_id


def _enqueue_shares(conn: Connection, payment: Row, now: dt.datetime, trust: bool, tag: str = "") -> list[int]:
    """A payment's postings: its shares of the link's statements, or for a trust (client) account one deposit on
    account to the matter's client ledger (section trust), never allocated to an office bill."""
    ids = []
    shares = trust_shares(conn, payment) if trust else allocate(conn, payment)
    for share in shares:
        suffix = ("trust" if trust else share.statement_key) if share.note is None else "unallocated"
        ids.append(_insert(conn, now, payment_id=payment["id"], reference=f"{payment['payment_ref']}:{suffix}{tag}",
                           kind="payment", statement_key=share.statement_key, matter_key=share.matter_key,
                           amount=share.amount, currency=payment["currency"], section="trust" if trust else None,
                           account=payment["account"],
                           state=P.PENDING if share.note is None else P.INCOMPLETE, note=share.note))
    return ids


def _payment(conn: Connection, payment_id: str) -> Row:
    payment = conn.execute(select(payments).where(payments.c.id == payment_id)).mappings().first()
    if payment is None:
        raise DataError(f"payment {payment_id} is not in the state store")
    return payment


def enqueue_payment(conn: Connection, payment_id: str, *, trust: bool = False) -> list[int]:
    """Allocate a confirmed payment into postings (inside the caller's transaction); a repeat creates nothing.
    ``trust``: the payment reached a trust account, so it is one deposit on the matter's client ledger."""
    if conn.execute(select(postings.c.id).where(postings.c.payment_id == payment_id,
                                                postings.c.kind == "payment").limit(1)).first():
        return []
    return _enqueue_shares(conn, _payment(conn, payment_id), utcnow(), trust)


def enqueue_payout_posting(conn: Connection, payout_id: str, section: str, reference: str, account: str,
                           amount: Decimal, currency: str) -> int | None:
    """A payout's fees, deposit or transfer request (inside the caller's transaction); a repeat creates nothing."""
    if conn.execute(select(postings.c.id).where(postings.c.reference == reference)).first():
        return None
    return _insert(conn, utcnow(), payment_id=None, payout_id=payout_id, reference=reference, kind=section,
                   section=section, account=account, amount=amount, currency=currency, state=P.PENDING)


def enqueue_payout_reversal(conn: Connection, payout_id: str, reason: str) -> list[int]:
    """A payout came back from the bank: reverse its bank deposit (inside the caller's transaction, once). Its
    fees and transfer request stand: the provider took the fees all the same, and its money comes back in a later
    payout as one line (Stripe's payout_failure transaction), fees already deducted."""
    now = utcnow()
    rows = conn.execute(select(postings).where(postings.c.payout_id == payout_id, postings.c.kind != "reversal",
                                               postings.c.section == "deposits", postings.c.state != P.REMOVED)
                        ).mappings().all()
    return [_reversing(conn, now, row, row["reference"] + REVERSAL_SUFFIX, row["amount"], reason) for row in rows
            if not conn.execute(select(postings.c.id).where(
                postings.c.reference == row["reference"] + REVERSAL_SUFFIX)).first()]


def is_posted(conn: Connection, payment_id: str) -> bool:
    """Whether the outbox holds the payment as posted (or to be posted): a live posting not reversed."""
    rows = conn.execute(select(postings.c.reference, postings.c.kind, postings.c.state)
                        .where(postings.c.payment_id == payment_id)).all()
    reversed_refs = {r.reference.removesuffix(REVERSAL_SUFFIX) for r in rows
                     if r.kind == "reversal" and r.state != P.REMOVED}
    return any(r.kind == "payment" and r.state != P.REMOVED and r.reference not in reversed_refs for r in rows)


def enqueue_repost(conn: Connection, payment_id: str, *, trust: bool = False) -> list[int]:
    """A reversed payment was collected after all (a retried Direct Debit, a dispute won): post it again, once.

    A reversal the outbox has not tried yet is simply withdrawn, so the original posting stands; otherwise the
    payment is allocated anew under references of a new round (``<ref>:P2``), which its own reversal can follow.
    """
    now = utcnow()
    withdrawn = move(conn, postings, P.REMOVED, postings.c.payment_id == payment_id, postings.c.kind == "reversal",
                     postings.c.attempts == 0, postings.c.last_error.is_(None), from_=(P.PENDING,),
                     note=WITHDRAWN, updated_at=now)
    if withdrawn and is_posted(conn, payment_id):
        return []
    payment = _payment(conn, payment_id)
    refs = conn.execute(select(postings.c.reference).where(postings.c.payment_id == payment_id,
                                                           postings.c.kind == "payment")).scalars().all()
    rounds = {ref.rsplit(":P", 1)[1] for ref in refs if ":P" in ref and ref.rsplit(":P", 1)[1].isdigit()}
    return _enqueue_shares(conn, payment, now, trust, f":P{len(rounds) + 2}")


def enqueue_reversal(conn: Connection, payment_id: str, reason: str) -> list[int]:
    """A payment failed or was charged back: undo its postings (inside the caller's transaction), idempotently.

    Postings that certainly never reached the firm database (incomplete, or pending and never tried) are simply
    removed. Every other one gets a reversing posting; the outbox writes it only once the original is known to
    be in the firm database, and drops it if the original never got there.
    """
    now = utcnow()
    created = []
    rows = conn.execute(select(postings).where(postings.c.payment_id == payment_id,
                                               postings.c.kind == "payment")).mappings().all()
    for row in rows:
        untried = row["state"] == P.PENDING and row["attempts"] == 0 and row["last_error"] is None
        if row["state"] == P.INCOMPLETE or untried:
            cancelled = move(conn, postings, P.REMOVED, postings.c.id == row["id"], from_=(P(row["state"]),),
                             note=f"{reason} before it was posted", updated_at=now)
            if cancelled:
                continue  # else the outbox claimed it meanwhile: reverse it like any other
        elif row["state"] == P.REMOVED:
            continue  # handled by hand, so its reversal is too
        reference = row["reference"] + REVERSAL_SUFFIX
        existing = conn.execute(select(postings.c.id, postings.c.note).where(postings.c.reference == reference)).first()
        if existing is not None:
            if existing.note == WITHDRAWN:  # failed again after a withdrawn reversal: the reversal stands again
                move(conn, postings, P.PENDING, postings.c.id == existing.id, from_=(P.REMOVED,), note=reason,
                     updated_at=now)
                created.append(existing.id)
            continue
        created.append(_reversing(conn, now, row, reference, row["amount"], reason))
    return created


def _reversing(conn: Connection, now: dt.datetime, row: Row, reference: str, amount: Decimal, reason: str,
               state: P = P.PENDING) -> int:
    """The reversing posting of ``amount`` of ``row``: the outbox writes it once the original is posted."""
    return _insert(conn, now, payment_id=row["payment_id"], payout_id=row["payout_id"], reference=reference,
                   kind="reversal",
                   statement_key=row["statement_key"], matter_key=row["matter_key"], amount=-amount,
                   currency=row["currency"], section=row["section"], account=row["account"], state=state,
                   note=reason)


def original_reference(reference: str) -> str:
    """The posting a reversal undoes: ``<ref>:R`` (failed, charged back) or ``<ref>:R<refund id>`` (refunded)."""
    return reference.rsplit(REVERSAL_SUFFIX, 1)[0]


def _refundable_postings(conn: Connection, payment_id: str) -> list[tuple[Row, Decimal]]:
    """The payment's live postings, newest first, each with what is left of it after earlier refunds.

    Client money always has a way home: a trust payment whose one posting waits for a matter (incomplete) or was
    taken out to be posted by hand (removed) is still refunded against that posting."""
    rows = conn.execute(select(postings).where(postings.c.payment_id == payment_id)
                        .order_by(postings.c.id.desc())).mappings().all()
    taken: dict[str, Decimal] = {}
    for r in rows:
        if r["kind"] == "reversal" and r["state"] != P.REMOVED:
            original = original_reference(r["reference"])
            taken[original] = taken.get(original, Decimal(0)) - r["amount"]
    live = [r for r in rows if r["kind"] == "payment" and r["state"] not in (P.REMOVED, P.INCOMPLETE)]
    if not live:
        live = [r for r in rows if r["kind"] == "payment" and r["section"] == "trust"][:1]
    return [(r, r["amount"] - taken.get(r["reference"], Decimal(0))) for r in live]


def refund_room(conn: Connection, payment_id: str) -> Decimal:
    """How much of the payment's posted (or to be posted) money a refund can still reverse."""
    return sum((left for _, left in _refundable_postings(conn, payment_id)), Decimal(0))


def enqueue_refund(conn: Connection, payment_id: str, refund_id: str, amount: Decimal, reason: str) -> list[int]:
    """A refund of ``amount``: reversing postings over the payment's postings, newest first (inside the caller's
    transaction, once per refund: the references carry the refund's id). A refund never removes the original,
    since part of it may stand; its reversal waits for the original like any other."""
    tag = f"{REVERSAL_SUFFIX}{refund_id}"
    if conn.execute(select(postings.c.id).where(postings.c.payment_id == payment_id,
                                                postings.c.reference.endswith(tag, autoescape=True)).limit(1)).first():
        return []
    now = utcnow()
    created = []
    remaining = amount
    for row, left in _refundable_postings(conn, payment_id):
        take = min(left, remaining)
        if take <= 0:
            continue
        state, note = P.PENDING, reason
        if row["state"] == P.INCOMPLETE:  # client money with no matter yet: the reversal goes with it
            state, note = P.INCOMPLETE, f"{reason}; follows its payment's posting {row['id']} to a client ledger"
        elif row["state"] == P.REMOVED:
            state, note = P.INCOMPLETE, (f"{reason}; its payment was posted by hand (posting {row['id']} "
                                         "removed): post this refund by hand on the same client ledger, then "
                                         "remove this posting")
        created.append(_reversing(conn, now, row, f"{row['reference']}{tag}", take, note, state))
        remaining -= take
    if remaining > 0:
        raise RuleError(f"payment {payment_id}: {remaining} of the refund is on no posting (an unallocated "
                        "posting?); reallocate the payment's postings first")
    return created


# ------------------------------------------------------------------------------------------- parameters




POSTING_UUIDS = uuid.uuid5(uuid.NAMESPACE_OID, "ledgerlink.postings")


def posting_uuid(reference: str) -> uuid.UUID:
    """One UUID per posting, derived from its reference: every statement of its transaction (and every retry)
    binds the same value, so a later statement can find the row an earlier one inserted."""
    return uuid.uuid5(POSTING_UUIDS, reference)


class PostingParams(Mapping[str, Any]):
    """The values a mapping may bind (mappings.format.POSTING_PARAMS) for a posting row joined with POSTING_DETAILS,
    plus the mapping's own ``params`` constants (a posting value wins over a constant of the same name); local times
    are in the mapping's timezone (UTC without one). Each value is made when a statement first names it: a
    posting's transaction binds a handful of the thirty-odd, and making them all for every posting cost about a
    twentieth of the outbox's time (bench/postings.py)."""

    def __init__(self, row: Mapping[str, Any], mapping: MappingFile | None = None) -> None:
        self.row = row
        self.constants: Mapping[str, Any] = mapping.params if mapping else {}
        self.zone = ZoneInfo(mapping.timezone) if mapping else dt.UTC
        self._made: dict[str, Any] = {}
        self._uid: uuid.UUID | None = None

    def __getitem__(self, name: str) -> Any:
        try:
            return self._made[name]
        except KeyError:
            pass
        make = _MAKERS.get(name)
        if make is None:
            return self.constants[name]  # KeyError: neither a posting value nor a constant
        value = self._made[name] = make(self)
        return value

    def _names(self) -> dict[str, None]:
        return dict.fromkeys([*self.constants, *_MAKERS])

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def paid_at(self) -> dt.datetime:
        """When it was paid (or the payout made), naive UTC."""
        return cast(dt.datetime, self["paid_at"])

    def local(self) -> dt.datetime:
        return cast(dt.datetime, self["paid_at_local"])

    def uid(self) -> uuid.UUID:
        if self._uid is None:
            self._uid = posting_uuid(self.row["reference"])
        return self._uid


def _when(p: PostingParams) -> dt.datetime:
    r = p.row
    paid = (r["confirmed_at"] if r["kind"] == "payment" else None) or r["status_at"] or r["payout_at"]
    return cast(dt.datetime, paid)


def _column(name: str) -> Callable[[PostingParams], Any]:
    return lambda p: p.row[name]


_MAKERS: dict[str, Callable[[PostingParams], Any]] = {
    **{name: _column(name) for name in ("reference", "provider", "kind", "amount", "currency", "statement_key",
                                        "statement_number", "matter_key", "matter_number", "method", "description",
                                        "link_id", "section", "account", "bank_reference", "payer_name")},
    "payment_id": _column("payment_ref"),
    "payout_id": _column("payout_ref"),
    "from_account": _column("fees_account"),
    "amount_abs": lambda p: abs(p.row["amount"]),
    "amount_minor": lambda p: to_minor(p.row["amount"], p.row["currency"]),
    "amount_text": lambda p: format(p.row["amount"], "f"),
    "client_key": lambda p: p.row["client_key"] or p.row["link_client"],
    "paid_at": lambda p: _when(p).astimezone(dt.UTC).replace(tzinfo=None),
    "paid_on": lambda p: p.paid_at().date(),
    "paid_at_local": lambda p: _when(p).astimezone(p.zone).replace(tzinfo=None),
    "paid_on_local": lambda p: p.local().date(),
    "posting_uuid": lambda p: str(p.uid()),
    "posting_uuid_hex": lambda p: p.uid().hex,
    "account_kind": lambda p: p.row["account_kind"] or ("trust" if p.row["section"] == "trust" else "operating"),
}


def posting_params(row: Mapping[str, Any], mapping: MappingFile | None = None) -> PostingParams:
    """What a posting binds: see PostingParams."""
    return PostingParams(row, mapping)


def backoff(attempt: int, initial: float, retry_after: float | None = None) -> float:
    """Seconds before the next try: the shared policy's jittered exponential backoff, capped at 60 s.

    The outbox persists the schedule in next_attempt_at instead of sleeping, so the wait is computed from
    tenacity's own strategy rather than run through a tenacity loop.
    """
    if retry_after is not None:
        return min(float(retry_after), MAX_WAIT)
    state = RetryCallState(Retrying(), None, (), {})  # a state needs its controller; the wait reads only attempt_number
    state.attempt_number = attempt
    return wait_random_exponential(multiplier=initial, max=MAX_WAIT)(state)


# ------------------------------------------------------------------------------------------- the outbox

# Due: pending or retrying whose time has come, or left in ``posting`` by a predecessor (older than this Outbox).
_DUE = or_(
    and_(postings.c.state.in_((P.PENDING, P.RETRYING)),
         or_(postings.c.next_attempt_at.is_(None), postings.c.next_attempt_at <= bindparam("now"))),
    and_(postings.c.state == P.POSTING, postings.c.updated_at < bindparam("started")),
)
_ANY_DUE = select(postings.c.id).where(_DUE).limit(1)


class Outbox:
    """Works due postings into the firm database (or a file drop) and offers Manage Postings' operations."""

    def __init__(self, store: StateStore, connector: Connector | None, mapping: MappingFile, *,
                 batch_size: int = 100, attempts: int = 20, clock: Clock = utcnow, backoff_initial: float = 1.0,
                 reversal_wait: float = 1.0, ready_wait: float = 15.0) -> None:
        if mapping.postings is None:
            raise RuleError("the mapping has no postings section, so payments cannot be written back")
        self.store = store
        self.connector = connector
        self.batch_size = batch_size
        self.attempts = attempts
        self.clock = clock
        self.backoff_initial = backoff_initial
        self.reversal_wait = dt.timedelta(seconds=reversal_wait)
        self.files = FileDrop(mapping.postings) if isinstance(mapping.postings, FilePostings) else None
        self.mapping = mapping
        self.ready_wait = ready_wait
        self.started = clock()

    # ------------------------------------------------------------------ one pass

    def run_once(self) -> dict[str, int]:
        """Process one batch of due postings; returns counts per outcome (posted, already, retrying, ...)."""
        counts: Counter[str] = Counter()
        claimed = self._claim()
        unfinished = {c["id"]: c for c in claimed}
        # Local marks are written in groups: each only after its target commit, and one state-store commit per
        # group instead of per posting. A crash before a group's commit leaves its postings to the recovery check.
        written: list[tuple[int, str]] = []
        try:
            ready = []
            for row in claimed:
                if row["kind"] == "reversal" and not self._reversal_ready(row, counts):
                    unfinished.pop(row["id"])
                else:
                    ready.append(row)
            if self.files is not None:
                self._drop(ready, counts)
                unfinished.clear()
            else:
                for i, row in enumerate(ready):
                    try:
                        outcome = self._post(row, counts)
                    except NotReady as exc:
                        waiting = ready[i:]
                        self._not_ready(waiting, exc, counts)
                        for r in waiting:
                            unfinished.pop(r["id"])
                        break
                    unfinished.pop(row["id"])
                    if outcome:
                        written.append((row["id"], outcome))
                    if len(written) >= MARK_GROUP:
                        self._mark(written, counts)
        finally:
            self._mark(written, counts)
            if unfinished:  # an unexpected error: hand the rest back, to be checked against the target
                self._release(list(unfinished.values()))
        return dict(counts)

    def _mark(self, written: list[tuple[int, str]], counts: Counter[str]) -> None:
        for outcome, note in (("posted", None), ("already", "already in the firm database")):
            ids = [i for i, o in written if o == outcome]
            if ids:
                self._posted(ids, note)
                counts[outcome] += len(ids)
        written.clear()

    def _claim(self) -> list[dict[str, Any]]:
        now = self.clock()
        p = postings.c
        due, values = _DUE, {"now": now, "started": self.started}
        with self.store.read() as conn:  # idle passes take no write lock (and, built once, compile nothing)
            if conn.execute(_ANY_DUE, values).first() is None:
                return []
        with self.store.begin() as conn:
            was = dict(conn.execute(select(p.id, p.state).where(due).order_by(p.id).limit(self.batch_size),
                                    values).all())
            # One UPDATE claims the batch: still due inside this write transaction, so each row is claimed once.
            move(conn, postings, P.POSTING, p.id.in_(list(was)), due, params=values, updated_at=now)
            details = conn.execute(POSTING_DETAILS.where(p.id.in_(list(was)), p.state == P.POSTING)
                                   .order_by(p.id)).mappings().all()
        return [{**d, "recovering": was[d["id"]] == "posting" or d["attempts"] > 0 or d["last_error"] is not None}
                for d in details]

    def _reversal_ready(self, row: Mapping[str, Any], counts: Counter[str]) -> bool:
        """A reversal goes out only after its original is in the firm database; dropped if it never got there."""
        original = self._get(original_reference(row["reference"]))
        state = original["state"]
        if state == P.POSTED:
            return True
        now = self.clock()
        if state in ("pending", "posting", "retrying"):
            wake = max(original["next_attempt_at"] or now, now) + self.reversal_wait
            self._move(row["id"], P.PENDING, next_attempt_at=wake)
            counts["deferred"] += 1
            return False
        try:
            reached = self._reached(original["reference"], original["section"])
        except TransientError as exc:
            self._transient(row, exc, counts)
            return False
        if reached:
            with self.store.begin() as conn:
                move(conn, postings, P.POSTED, postings.c.id == original["id"], from_=(P.FAILED,), posted_at=now,
                     updated_at=now, note="found in the firm database after it had failed")
            return True
        with self.store.begin() as conn:
            move(conn, postings, P.REMOVED, postings.c.id == original["id"], from_=(P.FAILED,), updated_at=now,
                 note=f"never posted; {row['note']}")
            move(conn, postings, P.REMOVED, postings.c.id == row["id"], updated_at=now,
                 note=f"nothing to reverse: {original['reference']} never reached the firm database")
        counts["removed"] += 1
        return False

    def _reached(self, reference: str, section: str | None) -> bool:
        if self.files is not None:
            return FileDrop.dropped(self.store, reference)
        assert self.connector is not None
        return self.connector.posting_exists(reference, section)

    def _post(self, row: Mapping[str, Any], counts: Counter[str]) -> str | None:
        """Write one posting; returns 'posted' or 'already' once the target has it, None when it did not go."""
        reference = row["reference"]
        assert self.connector is not None
        try:
            if row["recovering"] and self.connector.posting_exists(reference, row["section"]):
                return "already"
            return "posted" if self.connector.write_posting(posting_params(row, self.mapping)) else "already"
        except NotReady:
            raise  # the whole batch waits: run_once hands it back as retrying
        except TransientError as exc:
            self._transient(row, exc, counts)
        except LedgerlinkError as exc:
            if isinstance(exc, DataError) and self._exists_quietly(reference, row["section"]):
                return "already"  # a unique-key clash on the reference: someone else's write got there first
            self._failed(row, str(exc), counts)
        return None

    def _exists_quietly(self, reference: str, section: str | None) -> bool:
        try:
            return self._reached(reference, section)
        except LedgerlinkError:
            return False

    def _drop(self, rows: list[dict[str, Any]], counts: Counter[str]) -> None:
        assert self.files is not None
        recovering = [r["reference"] for r in rows if r["recovering"]]
        done = self.files.recover(self.store, recovering) if recovering else set()
        already = [r["id"] for r in rows if r["reference"] in done]
        if already:
            self._posted(already, "already in a dropped file")
            counts["already"] += len(already)
        lines, batch_rows = [], []
        for row in rows:
            if row["reference"] in done:
                continue
            params = posting_params(row, self.mapping)
            try:
                lines.append(self.files.render_row(params))
                batch_rows.append(row)
            except LedgerlinkError as exc:
                self._failed(row, f"{posting_context(params)}: {exc}", counts)
        if not batch_rows:
            return
        batch = f"{self.clock():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"
        try:
            path = self.files.drop(self.store, batch, [r["reference"] for r in batch_rows],
                                   self.files.render(lines, batch, self.clock()), self.clock())
        except OSError as exc:
            for row in batch_rows:
                self._transient(row, TransientError(f"writing the posting file: {exc}"), counts)
            return
        self._posted([r["id"] for r in batch_rows], None)
        counts["posted"] += len(batch_rows)
        log.info("dropped %d posting(s) in %s", len(batch_rows), path)

    # ------------------------------------------------------------------ state changes

    def _move(self, posting_id: int, target: P, **values: Any) -> None:
        with self.store.begin() as conn:
            move(conn, postings, target, postings.c.id == posting_id, updated_at=self.clock(), **values)

    def _posted(self, ids: list[int], note: str | None) -> None:
        now = self.clock()
        extra: dict[str, Any] = {"note": note} if note else {}
        with self.store.begin() as conn:
            move(conn, postings, P.POSTED, postings.c.id.in_(ids), from_=(P.POSTING,), posted_at=now, updated_at=now,
                 next_attempt_at=None, attempts=postings.c.attempts + 1, **extra)

    def _transient(self, row: Mapping[str, Any], exc: TransientError, counts: Counter[str]) -> None:
        attempts = row["attempts"] + 1
        if attempts >= self.attempts:
            self._failed(row, f"gave up after {attempts} attempts: {exc}", counts)
            return
        wait = backoff(attempts, self.backoff_initial, exc.retry_after)
        log.warning("posting %s: %s; retrying in %.1fs", row["reference"], exc, wait)
        self._move(row["id"], P.RETRYING, attempts=attempts, last_error=str(exc),
                  next_attempt_at=self.clock() + dt.timedelta(seconds=wait))
        counts["retrying"] += 1

    def _not_ready(self, rows: list[dict[str, Any]], exc: NotReady, counts: Counter[str]) -> None:
        """The firm database said "not now": every posting left in the batch waits as retrying with the reason.
        Its attempts are not used up: a book can be open for hours without anything being wrong."""
        wake = self.clock() + dt.timedelta(seconds=self.ready_wait)
        reason = str(exc)
        log.info("%d posting(s) wait: %s", len(rows), reason)
        with self.store.begin() as conn:
            move(conn, postings, P.RETRYING, postings.c.id.in_([r["id"] for r in rows]), from_=(P.POSTING,),
                 last_error=reason, next_attempt_at=wake, updated_at=self.clock())
        counts["waiting"] += len(rows)

    def _failed(self, row: Mapping[str, Any], error: str, counts: Counter[str]) -> None:
        log.error("posting %s failed: %s", row["reference"], error)
        self._move(row["id"], P.FAILED, attempts=row["attempts"] + 1, last_error=error, next_attempt_at=None)
        counts["failed"] += 1

    def _release(self, rows: list[Mapping[str, Any]]) -> None:
        with self.store.begin() as conn:
            for row in rows:
                move(conn, postings, P.RETRYING, postings.c.id == row["id"], from_=(P.POSTING,),
                     next_attempt_at=self.clock(), updated_at=self.clock(),
                     last_error="interrupted by an unexpected error; will check the target")

    # ------------------------------------------------------------------ Manage Postings operations

    def _get(self, reference: str | None = None, posting_id: int | None = None) -> Row:
        where = postings.c.reference == reference if posting_id is None else postings.c.id == posting_id
        with self.store.read() as conn:
            row = conn.execute(select(postings).where(where)).mappings().first()
        if row is None:
            raise RuleError(f"no posting {posting_id if posting_id is not None else reference}")
        return row

    def retry(self, actor: Actor, posting_id: int) -> None:
        """failed (or retrying) -> pending with a fresh set of attempts, after the cause has been fixed."""
        with audit.attempt(self.store, actor, "posting.retry", "posting", str(posting_id)) as act:
            with self.store.begin() as conn:
                before = _audited(conn, posting_id)
                done = move(conn, postings, P.PENDING, postings.c.id == posting_id, from_=(P.FAILED, P.RETRYING),
                            attempts=0, next_attempt_at=None, updated_at=self.clock())
                if done:
                    act.record(conn, before=before, after=_audited(conn, posting_id))
            if not done:
                raise RuleError(f"posting {posting_id} is {self._get(posting_id=posting_id)['state']}; "
                                "only failed or retrying postings can be retried")

    def retry_failed(self, actor: Actor) -> int:
        """Every failed posting back to pending: one posting.retry entry for each."""
        with self.store.begin() as conn:
            ids = list(conn.execute(select(postings.c.id).where(postings.c.state == P.FAILED)).scalars())
            for posting_id in ids:
                before = _audited(conn, posting_id)
                move(conn, postings, P.PENDING, postings.c.id == posting_id, from_=(P.FAILED,), attempts=0,
                     next_attempt_at=None, updated_at=self.clock())
                audit.record(conn, actor, "posting.retry", "posting", str(posting_id), before=before,
                             after=_audited(conn, posting_id))
            return len(ids)

    def reallocate(self, actor: Actor, posting_id: int, amounts: Mapping[str, Decimal]) -> list[int]:
        """Split an incomplete posting over statements a person chose; they must add up to its amount exactly."""
        with audit.attempt(self.store, actor, "posting.reallocate", "posting", str(posting_id),
                           before={"amounts": dict(amounts)}) as act:
            return self._reallocate(posting_id, amounts, act)

    def _reallocate(self, posting_id: int, amounts: Mapping[str, Decimal], act: audit.Attempt) -> list[int]:
        with self.store.begin() as conn:
            row = conn.execute(select(postings).where(postings.c.id == posting_id)).mappings().first()
            if row is None or row["state"] != P.INCOMPLETE:
                raise RuleError(f"posting {posting_id} is {row['state'] if row else 'not there'}; "
                                "only incomplete postings can be reallocated")
            if row["section"] == "trust":
                raise RuleError(f"posting {posting_id} is client money: it belongs on a matter's client ledger, "
                                "never on office statements; remove it and post it to the ledger by hand")
            if not amounts or any(a <= 0 for a in amounts.values()):
                raise RuleError("give each statement a positive amount")
            total = sum(amounts.values(), Decimal(0))
            if total != row["amount"]:
                raise RuleError(f"the amounts add up to {total}, the posting is {row['amount']} {row['currency']}")
            payment_ref = conn.execute(select(payments.c.payment_ref)
                                       .where(payments.c.id == row["payment_id"])).scalar_one()
            found = {r["key"]: r for r in conn.execute(select(firm_statements)
                                                        .where(firm_statements.c.key.in_(list(amounts)))).mappings()}
            now = self.clock()
            ids = []
            for key, amount in amounts.items():
                reason = unusable(found.get(key), key, row["currency"])
                if reason:
                    raise RuleError(f"cannot reallocate to {key}: {reason}")
                reference = f"{payment_ref}:{key}"
                if conn.execute(select(postings.c.id).where(postings.c.reference == reference)).first():
                    reference = f"{reference}:{posting_id}"
                ids.append(_insert(conn, now, payment_id=row["payment_id"], reference=reference, kind="payment",
                                   statement_key=key, matter_key=found[key]["matter_key"], amount=amount,
                                   currency=row["currency"], state=P.PENDING,
                                   note=f"reallocated from posting {posting_id}"))
            split = ", ".join(f"{k} {v}" for k, v in amounts.items())
            move(conn, postings, P.REMOVED, postings.c.id == posting_id, from_=(P.INCOMPLETE,), updated_at=now,
                 note=f"reallocated to {split}; was: {row['note']}")
            act.record(conn, before={name: row[name] for name in AUDITED},
                       after={"state": "removed", "postings": dict(zip(ids, amounts.items(), strict=True))})
        return ids

    def assign(self, actor: Actor, posting_id: int, matter_key: str) -> int:
        """Put client money that came through no matter (a trust quick link) on a matter's client ledger, with any
        refund of it waiting there; returns the new posting's id. Audited as posting.assign."""
        with audit.attempt(self.store, actor, "posting.assign", "posting", str(posting_id),
                           before={"matter": matter_key}) as act, self.store.begin() as conn:
            row = conn.execute(select(postings).where(postings.c.id == posting_id)).mappings().first()
            if row is None or row["state"] != P.INCOMPLETE or row["section"] != "trust" or row["kind"] != "payment":
                raise RuleError(f"posting {posting_id} is not client money waiting for a matter; only an "
                                "incomplete trust posting can be put on a matter's client ledger")
            before = _audited(conn, posting_id)
            now = self.clock()
            reference = f"{row['reference'].rsplit(':', 1)[0]}:trust"
            if conn.execute(select(postings.c.id).where(postings.c.reference == reference)).first():
                reference = f"{reference}:{posting_id}"
            new_id = _insert(conn, now, payment_id=row["payment_id"], reference=reference, kind="payment",
                             statement_key=None, matter_key=matter_key, amount=row["amount"],
                             currency=row["currency"], section="trust", account=row["account"], state=P.PENDING,
                             note=f"assigned from posting {posting_id}")
            waiting = conn.execute(select(postings).where(
                postings.c.payment_id == row["payment_id"], postings.c.kind == "reversal",
                postings.c.state == P.INCOMPLETE,
                postings.c.reference.startswith(f"{row['reference']}{REVERSAL_SUFFIX}", autoescape=True))).mappings()
            for reversal in waiting.all():
                move(conn, postings, P.PENDING, postings.c.id == reversal["id"], from_=(P.INCOMPLETE,),
                     matter_key=matter_key, updated_at=now,
                     reference=reference + reversal["reference"][len(row["reference"]):])
            move(conn, postings, P.REMOVED, postings.c.id == posting_id, from_=(P.INCOMPLETE,), updated_at=now,
                 note=f"put on the client ledger of matter {matter_key} as posting {new_id}; was: {row['note']}")
            act.record(conn, before=before, after={"state": "removed", "posting": new_id,
                                                   "new_posting": _audited(conn, new_id)})
        return new_id

    def remove(self, actor: Actor, posting_id: int, reason: str) -> None:
        """Take a posting out of the outbox because a person handles it by hand in the matter system."""
        with audit.attempt(self.store, actor, "posting.remove", "posting", str(posting_id),
                           before={"reason": reason}) as act:
            if not reason.strip():
                raise RuleError("say why the posting is removed (--reason)")
            with self.store.begin() as conn:
                before = _audited(conn, posting_id)
                done = move(conn, postings, P.REMOVED, postings.c.id == posting_id,
                            from_=(P.PENDING, P.RETRYING, P.FAILED, P.INCOMPLETE), note=reason.strip(),
                            next_attempt_at=None, updated_at=self.clock())
                if done:
                    act.record(conn, before=before, after=_audited(conn, posting_id))
            if not done:
                raise RuleError(f"posting {posting_id} is {self._get(posting_id=posting_id)['state']}; only pending, "
                                "retrying, failed or incomplete postings can be removed")


def _audited(conn: Connection, posting_id: int) -> dict[str, Any] | None:
    """A posting's audited values (None when there is no such posting)."""
    row = conn.execute(select(*(postings.c[name] for name in AUDITED)).where(postings.c.id == posting_id)
                       ).mappings().first()
    return dict(row) if row else None
