"""A small firm, its mapping and state-store fixtures for the postings tests, plus the crash-test worker and driver.

The worker runs ``Outbox.run_once`` in a loop until every posting is posted. Starting Python and importing the
agent takes about a second, so the driver does not exec a fresh interpreter per run: it starts this file once as a
*zygote* that imports everything and then forks one worker per run, kills it with SIGKILL after the delay the
driver chose, and reports how it ended. Each worker is still a separate process with its own connections, killed
without warning; only the imports are shared. The zygote does the killing because only the parent can be sure the
pid still names its own (possibly zombie) child.

Test-only hook: LEDGERLINK_CRASH_AFTER_TARGET_COMMIT=<probability> makes the worker SIGKILL itself right after
write_posting returned, i.e. after the target committed and before the outbox marked the posting posted.

Refunds: with LEDGERLINK_CRASH_SANDBOX=<folder> the worker first finishes the refunds left requested
(Refunds.resume, against the sandbox in that folder, or with LEDGERLINK_CRASH_PROVIDER="<gocardless|stripe> <url>"
against that fake provider server), and the same hook also kills it right after the provider refunded and before
the state store recorded it.

    python tests/crash_worker.py zygote STATE_URL FIRM_URL MARKER_FILE BATCH_SIZE
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, create_engine, func, select
from sqlalchemy.engine import URL

from agent.core.model import Actor, MerchantAccount
from agent.engine.refunds import Refunds
from agent.state import StateStore
from agent.state.schema import firm_matters, firm_statements, link_items, links, payments, postings, refunds
from agent.state.store import utcnow
from connectors.database.sql import SQLAlchemyConnector
from connectors.providers.contract import PayoutProvider, Provider, Refund
from connectors.providers.gocardless import GoCardlessProvider
from connectors.providers.sandbox import SandboxProvider, settled
from connectors.providers.stripe import StripeProvider
from connectors.testkit.provider import make_spec
from mappings.format import MappingFile, parse_mapping
from postings.outbox import enqueue_payment

CRASH_ENV = "LEDGERLINK_CRASH_AFTER_TARGET_COMMIT"
SANDBOX_ENV = "LEDGERLINK_CRASH_SANDBOX"
PROVIDER_ENV = "LEDGERLINK_CRASH_PROVIDER"

# ------------------------------------------------------------------------------------------ the firm database

firm_meta = MetaData()
firm_statements_table = Table(
    "statements", firm_meta,
    Column("id", String(40), primary_key=True),
    Column("matter_id", String(40), nullable=False),
    Column("balance_pence", BigInteger, nullable=False),
)
receipts_table = Table(
    "receipts", firm_meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reference", String(191), nullable=False, unique=True),
    Column("statement_id", String(40), nullable=False),
    Column("amount_pence", BigInteger, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("method", String(16), nullable=False),
)

POSTINGS_SQL = """\
postings:
  kind: sql
  exists: SELECT 1 FROM receipts WHERE reference = :reference
  statements:
    - >-
      INSERT INTO receipts (reference, statement_id, amount_pence, received_at, method)
      VALUES (:reference, :statement_key, :amount_minor, :paid_at, :method)
    - UPDATE statements SET balance_pence = balance_pence - :amount_minor WHERE id = :statement_key
"""


def url_text(url: URL | str) -> str:
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)


def firm_mapping(url: URL | str, postings_yaml: str = POSTINGS_SQL, options: str = "{}") -> MappingFile:
    """The test firm's mapping: the demo-style receipt INSERT plus the balance UPDATE, in one transaction."""
    text = f"""\
version: 1
name: crash firm
source: {{url: "{url_text(url)}", options: {options}}}
entities:
  matters: {{table: statements, key: matter_id, columns: {{number: matter_id}}}}
  statements:
    table: statements
    key: id
    money: minor_units
    columns: {{number: id, matter_key: matter_id, amount: balance_pence, balance: balance_pence}}
{postings_yaml}"""
    return parse_mapping(text, Path("crash-firm.yaml"))


def create_firm(url: URL | str, balances: Mapping[str, int]) -> None:
    """The firm's tables with one statement per key (balance in pence)."""
    engine = create_engine(url)
    try:
        firm_meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(firm_statements_table.insert(),
                         [{"id": k, "matter_id": f"M-{k}", "balance_pence": v} for k, v in balances.items()])
    finally:
        engine.dispose()


@dataclass(frozen=True)
class FirmState:
    receipts: dict[str, int]  # reference -> amount_pence
    duplicates: int  # rows beyond one per reference (only possible without the UNIQUE key)
    balances: dict[str, int]


def read_firm(url: URL | str) -> FirmState:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(receipts_table.c.reference, receipts_table.c.amount_pence)).all()
            balances = {k: v for k, v in conn.execute(select(firm_statements_table.c.id,
                                                             firm_statements_table.c.balance_pence))}
    finally:
        engine.dispose()
    receipts = {ref: int(amount) for ref, amount in rows}
    return FirmState(receipts, len(rows) - len(receipts), {k: int(v) for k, v in balances.items()})


# ------------------------------------------------------------------------------------------ state-store fixtures


def add_statement(conn: Any, key: str, balance: Decimal, *, issue_date: dt.date | None = None,
                  status: str = "open", deleted: bool = False, matter_key: str | None = None,
                  currency: str = "GBP") -> None:
    """A statement (and its matter) in the state store's mirror."""
    matter_key = matter_key or f"M-{key}"
    if conn.execute(select(firm_matters.c.key).where(firm_matters.c.key == matter_key)).first() is None:
        conn.execute(firm_matters.insert().values(key=matter_key, number=matter_key, name="", status="open",
                                                  deleted=False))
    conn.execute(firm_statements.insert().values(
        key=key, number=key, matter_key=matter_key, issue_date=issue_date or dt.date(2026, 1, 1), due_date=None,
        amount=balance, balance=balance, currency=currency, status=status, deleted=deleted))


def add_payment(conn: Any, ref: str, amount: Decimal, items: Iterable[tuple[str, Decimal, bool]] | None,
                *, method: str = "bank", currency: str = "GBP", enqueue: bool = True,
                matter_key: str | None = None) -> str:
    """A confirmed payment through a link with ``items`` (statement, amount, explicit); None: no link at all."""
    now = utcnow()
    link_id = None
    if items is not None:
        link_id = f"lnk_{ref}"[:32]
        conn.execute(links.insert().values(
            id=link_id, account="operating", provider="sandbox", status="payment_received", amount=amount,
            currency=currency, description=f"Payment {ref}", matter_key=matter_key, created_at=now,
            expires_at=now + dt.timedelta(days=7), idempotency_key=f"idem-{ref}"))
        for key, item_amount, explicit in items:
            conn.execute(link_items.insert().values(link_id=link_id, statement_key=key, amount=item_amount,
                                                    explicit=explicit))
    payment_id = f"pay_{ref}"[:32]
    conn.execute(payments.insert().values(
        id=payment_id, account="operating", provider="sandbox", payment_ref=ref, link_id=link_id, amount=amount,
        currency=currency, status="confirmed", method=method, status_at=now, confirmed_at=now, created_at=now))
    if enqueue:
        enqueue_payment(conn, payment_id)
    return payment_id


def plan(n: int, seed: int) -> tuple[dict[str, list[tuple[str, int]]], dict[str, int]]:
    """n payments spread over n/3 statements: statement -> [(payment_ref, pence)], and opening balances."""
    rng = random.Random(seed)
    keys = [f"S{i:04d}" for i in range(max(1, n // 3))]
    by_statement: dict[str, list[tuple[str, int]]] = {k: [] for k in keys}
    for i in range(n):
        by_statement[rng.choice(keys)].append((f"P{i:05d}", rng.randrange(100, 50_000)))
    balances = {k: sum(p for _, p in pays) + 10_000 for k, pays in by_statement.items()}
    return by_statement, balances


def seed_crash_run(state_url: str, firm_url: URL | str, n: int, seed: int = 1) -> tuple[dict[str, int], int]:
    """Firm and state store for a crash run; returns the opening balances and the total paid in pence."""
    by_statement, balances = plan(n, seed)
    create_firm(firm_url, balances)
    store = StateStore(state_url)
    try:
        with store.begin() as conn:
            for key, balance in balances.items():
                add_statement(conn, key, Decimal(balance).scaleb(-2))
            for key, pays in by_statement.items():
                for ref, pence in pays:
                    amount = Decimal(pence).scaleb(-2)
                    add_payment(conn, ref, amount, [(key, amount, True)])
    finally:
        store.close()
    return balances, sum(p for pays in by_statement.values() for _, p in pays)


def refund_provider(sandbox_home: str, fake: str | None) -> Provider:
    """The provider refunds are asked of: the sandbox in ``sandbox_home``, or the fake server ``fake`` names
    ("<gocardless|stripe> <url>")."""
    if not fake:
        return SandboxProvider(MerchantAccount(name="operating"), None, home=sandbox_home)
    kind, url = fake.split()
    account = MerchantAccount(name="operating", provider=kind, api_base=url)
    if kind == "gocardless":
        return GoCardlessProvider(account, "crash_token", timeout=5)
    return StripeProvider(account, "sk_test_crash", timeout=5)


def seed_refunds(state_url: str, sandbox_home: Path, every: int = 3, fake: tuple[str, Any] | None = None
                 ) -> dict[str, int]:
    """Every ``every``-th seeded payment settled at the provider and refunded in part, left requested as a crash
    right after asking would leave it; returns refund id -> pence refunded. ``fake``: (its PROVIDER_ENV value, the
    fake server), where each payment is made by paying a link and the state store takes the fake's ref."""
    provider = refund_provider(str(sandbox_home), fake[0] if fake else None)
    store = StateStore(state_url, migrate=False)
    engine = Refunds(store, lambda _name: provider)
    out: dict[str, int] = {}
    try:
        with store.read() as conn:
            rows = conn.execute(select(payments.c.payment_ref, payments.c.amount).order_by(payments.c.id)).all()
        for ref, amount in rows[::every]:
            if fake is None:
                settled(sandbox_home, "operating", ref, amount, "GBP")
            else:
                at_fake = fake[1].pay(provider.create_link(make_spec(provider, amount=amount)).ref, None, True)
                with store.begin() as conn:
                    conn.execute(payments.update().where(payments.c.payment_ref == ref).values(payment_ref=at_fake))
                ref = at_fake
            part = (amount / 2).quantize(Decimal("0.01"))
            out[engine.request(ref, part, "crash test", Actor("system", "crash"))] = int(part * 100)
    finally:
        store.close()
        provider.close()
    return out


def refund_states(state_url: str) -> dict[str, int]:
    store = StateStore(state_url, migrate=False)
    try:
        with store.read() as conn:
            return {s: n for s, n in conn.execute(select(refunds.c.status, func.count()).group_by(refunds.c.status))}
    finally:
        store.close()


def _unposted(state_url: str) -> int:
    return (sum(n for s, n in outbox_states(state_url).items() if s != "posted")
            + refund_states(state_url).get("requested", 0))


def outbox_states(state_url: str) -> dict[str, int]:
    store = StateStore(state_url, migrate=False)
    try:
        with store.read() as conn:
            return {s: n for s, n in conn.execute(select(postings.c.state, func.count()).group_by(postings.c.state))}
    finally:
        store.close()


# ------------------------------------------------------------------------------------------ worker and zygote


def work(state_url: str, firm_url: str, marker: str, batch_size: int) -> int:
    """Post until nothing is left; exit code 0 when all are posted, 3 when some failed."""
    from postings.outbox import Outbox

    store = StateStore(state_url, migrate=False)
    mapping = firm_mapping(firm_url)
    connector = SQLAlchemyConnector(mapping)
    probability = float(os.environ.get(CRASH_ENV, "0") or 0)
    if probability > 0:
        write = connector.write_posting

        def write_then_maybe_die(params: Mapping[str, Any]) -> bool:
            written = write(params)
            if random.random() < probability:
                fd = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                os.write(fd, f"{params['reference']}\n".encode())
                os.kill(os.getpid(), signal.SIGKILL)
            return written

        # patched in this worker process only (mypy refuses any assignment to a method)
        connector.write_posting = write_then_maybe_die  # type: ignore[method-assign]
    outbox = Outbox(store, connector, mapping, batch_size=batch_size, attempts=1000, backoff_initial=0.01,
                    reversal_wait=0.005)
    refunder = _refunder(store, marker, probability)
    while True:
        if refunder is not None and refunder.resume():
            continue
        if outbox.run_once():
            continue
        with store.read() as conn:
            left = {s: n for s, n in conn.execute(select(postings.c.state, func.count()).where(
                postings.c.state.in_(("pending", "posting", "retrying", "failed"))).group_by(postings.c.state))}
        if not left and not (refunder is not None and refund_states(state_url).get("requested")):
            return 0
        if set(left) == {"failed"}:
            return 3
        time.sleep(0.005)  # a retry is scheduled a few ms ahead


def _refunder(store: StateStore, marker: str, probability: float) -> Refunds | None:
    """The refund engine over the sandbox named by SANDBOX_ENV, killed at random right after the provider
    refunded (before the state store knows); None without one."""
    home = os.environ.get(SANDBOX_ENV)
    if not home:
        return None
    provider = refund_provider(home, os.environ.get(PROVIDER_ENV))
    assert isinstance(provider, PayoutProvider)
    refund = provider.refund

    def refund_then_maybe_die(payment_ref: str, amount: Decimal, currency: str, reason: str,
                              idempotency_key: str) -> Refund:
        done = refund(payment_ref, amount, currency, reason, idempotency_key)
        if random.random() < min(1.0, probability * 6):  # few refunds: kill often enough to land some here
            fd = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, f"refund {idempotency_key}\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)
        return done

    # patched in this worker process only (mypy refuses any assignment to a method)
    provider.refund = refund_then_maybe_die  # type: ignore[method-assign]
    return Refunds(store, lambda _name: provider, retry_initial=0.01)


def zygote(state_url: str, firm_url: str, marker: str, batch_size: int) -> None:
    """Fork one worker per 'go <seconds>' line; kill it after that delay; report 'exit N', 'selfkill' or 'killed'."""
    for url in (state_url, firm_url):
        create_engine(url).dispose()  # loads the dialect and driver once, here, instead of in every worker
    print("ready", flush=True)
    for line in sys.stdin:
        delay = float(line.split()[1])
        pid = os.fork()
        if pid == 0:
            random.seed()
            code = 1
            try:
                code = work(state_url, firm_url, marker, batch_size)
            finally:
                os._exit(code)
        time.sleep(delay)  # the random moment the driver chose, not a synchronisation
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, signal.SIGKILL)  # still our unreaped child, so the pid cannot name anything else
            _, status = os.waitpid(pid, 0)
            verdict = "killed" if os.WIFSIGNALED(status) else f"exit {os.waitstatus_to_exitcode(status)}"
        elif os.WIFSIGNALED(status):
            verdict = "selfkill"
        else:
            verdict = f"exit {os.waitstatus_to_exitcode(status)}"
        print(verdict, flush=True)


@dataclass
class DriveResult:
    runs: int = 0
    kills: int = 0  # by the driver at a random moment
    commit_kills: int = 0  # by the hook, between the target's commit and the local mark
    seconds: float = 0.0


def drive(state_url: str, firm_url: URL | str, workdir: Path, *, min_kills: int, delay: tuple[float, float],
          commit_probability: float, batch_size: int = 10, max_runs: int = 20_000, seed: int | None = None,
          timeout: float = 600.0, sandbox_home: Path | None = None, fake: str | None = None) -> DriveResult:
    """Start, kill and restart workers until every posting is posted (or a worker reports failures);
    with ``sandbox_home``, every requested refund is finished too (at the fake provider ``fake`` names, if any)."""
    rng = random.Random(seed)
    marker = workdir / "commit-kills.txt"
    env = {**os.environ, CRASH_ENV: str(commit_probability)}
    if sandbox_home is not None:
        env[SANDBOX_ENV] = str(sandbox_home)
    if fake is not None:
        env[PROVIDER_ENV] = fake
    log = open(workdir / "zygote.log", "ab")  # noqa: SIM115 - lives as long as the zygote
    proc = subprocess.Popen(
        [sys.executable, __file__, "zygote", state_url, url_text(firm_url), str(marker), str(batch_size)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    result = DriveResult()
    start = time.monotonic()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the crash zygote did not start; see {workdir / 'zygote.log'}")
        high = delay[1]
        remaining = total = _unposted(state_url)
        selfkills = most = 0
        while result.runs < max_runs and time.monotonic() - start < timeout:
            # Kill right at the start while, at the most one run has done so far, the work would run out before
            # the kills we owe (the average understates a run that went on until a self-kill).
            pace = max((total - remaining) / max(result.runs, 1), most, 1.0)
            owed = min_kills - result.kills - selfkills  # a self-kill after a commit counts as one of the kills
            short = owed > 0 and owed * pace * 1.5 > remaining
            low, top = (delay[0], delay[0] * 2) if short else (delay[0], high)
            proc.stdin.write(f"go {rng.uniform(low, top):.4f}\n")
            proc.stdin.flush()
            verdict = proc.stdout.readline().strip()
            result.runs += 1
            if verdict == "exit 0":
                break
            if verdict not in ("killed", "selfkill"):
                raise RuntimeError(f"crash worker ended with {verdict!r}; see {workdir / 'zygote.log'}")
            result.kills += verdict == "killed"
            selfkills += verdict == "selfkill"
            before, remaining = remaining, _unposted(state_url)
            most = max(most, before - remaining)
            if not short:
                # A worker needs a while to connect before it posts anything (longer on a loaded machine): widen
                # the window while runs make no progress, so kills keep landing in the middle of real work.
                high = min(high * 1.25, 2.0) if remaining == before else max(delay[1], high * 0.95)
        else:
            raise RuntimeError(f"gave up after {result.runs} runs")
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=30)
        log.close()
    result.commit_kills = len(marker.read_text().splitlines()) if marker.exists() else 0
    result.seconds = time.monotonic() - start
    return result


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "zygote":
        sys.exit(__doc__)
    zygote(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
