"""What the tests against real accounting systems share: paying a matter through the sandbox and posting it, and
posting with workers killed at random."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from money_support import ADMIN, post_all

from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.engine.sync import Syncer
from agent.home.firm import init_firm_home
from agent.runtime import Runtime
from agent.state.mirror import get_matter
from agent.state.owed import matter_owed
from connectors.providers import sandbox
from postings.queries import posting_rows

KILL_WORKER = Path(__file__).with_name("kill_worker.py")


def firm_runtime(home: Path, mapping_text: str) -> Runtime:
    """A production home (``init --firm``) on the system's database with this mapping, synced once."""
    init_firm_home(home, mapping_text, name="Lovelace & Co", currency="GBP")
    runtime = Runtime.for_home(home)
    runtime.links.retry_initial = 0.01
    Syncer(runtime.store, runtime.connector).sync()
    return runtime


def debts(rt: Runtime, matter: str) -> dict[str, Decimal]:
    """What the agent would still ask for on a matter, by invoice number."""
    with rt.store.read() as conn:
        owed = matter_owed(conn, get_matter(conn, matter).key)
    return {s.number: s.balance for s in owed.statements}


def poll(rt: Runtime) -> None:
    EventPoller(rt.store, rt.provider(), "operating", retry_initial=0.01).poll()


def paid_link(rt: Runtime, matter: str, amount: str | None = None, statements: dict[str, str] | None = None) -> str:
    """A link on ``matter`` (its whole balance, ``amount``, or the named statements), paid at the sandbox and read
    back: the payment's reference, its postings queued."""
    link = rt.links.create(ADMIN, LinkRequest(matter=matter, amount=Decimal(amount) if amount else None,
                                              statements={k: Decimal(v) for k, v in (statements or {}).items()}))
    assert link.provider_ref is not None
    ref = sandbox.pay(rt.settings.home, link.provider_ref)
    poll(rt)
    return ref


def pay(rt: Runtime, matter: str, amount: str | None = None, statements: dict[str, str] | None = None) -> str:
    """``paid_link``, then every posting written and the mirror read again."""
    ref = paid_link(rt, matter, amount, statements)
    post_all(rt)
    Syncer(rt.store, rt.connector).sync()
    return ref


def post_while_killing(rt: Runtime, *, seed: int = 1207, runs: int = 60) -> int:
    """Post the queued postings with worker processes killed at random: by this function at any moment, or by
    themselves right after the firm's system committed and before the state store knew. Returns how many were
    killed; every posting is posted at the end."""
    rng = random.Random(seed)
    killed = 0
    for run in range(1, runs + 1):
        worker = subprocess.Popen([sys.executable, str(KILL_WORKER), str(rt.settings.home), "0.3", str(run)])
        try:
            worker.wait(timeout=rng.uniform(0.8, 3.0))
        except subprocess.TimeoutExpired:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        assert worker.returncode in (0, -signal.SIGKILL), f"worker {run} failed: exit {worker.returncode}"
        killed += worker.returncode == -signal.SIGKILL
        with rt.store.read() as conn:
            if not posting_rows(conn, ["pending", "posting", "retrying"]):
                break
    with rt.store.read() as conn:
        assert {row["state"] for row in posting_rows(conn)} == {"posted"}
    return killed
