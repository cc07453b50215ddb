"""One agent of an active/standby pair for tests/service/test_failover.py: it stands by on the PostgreSQL state store's
lease, and once it holds it, works the postings outbox into the firm database until it is stopped, killed,
paused or fenced out.

It appends ``standby <unix time>`` to its marker file when it starts waiting and ``active <unix time>`` the moment
it takes the lease over, so the driver knows a standby is there and can measure the gap without an active agent.

    python tests/failover_worker.py STATE_URL FIRM_URL MARKER_FILE LEASE_SECONDS
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from crash_worker import firm_mapping

from agent.state import StateStore
from agent.state.lock import Fenced, StoreLock, active_agent
from connectors.database.sql import SQLAlchemyConnector
from postings.outbox import Outbox

FENCED_EXIT = 3


def mark(marker: Path, what: str) -> None:
    with open(marker, "a", encoding="ascii") as out:
        out.write(f"{what} {time.time():.3f}\n")
        out.flush()
        os.fsync(out.fileno())


def main(state_url: str, firm_url: str, marker: Path, lease_seconds: float) -> int:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    store = StateStore(state_url)
    lock = StoreLock(store, lease_seconds=lease_seconds)
    mark(marker, "standby")
    if not lock.wait(stopping, poll=0.2):
        return 0
    lock.on_lost = stopping.set
    mark(marker, "active")
    mapping = firm_mapping(firm_url)
    connector = SQLAlchemyConnector(mapping)
    outbox = Outbox(store, connector, mapping, batch_size=20, backoff_initial=0.05)
    try:
        while not stopping.is_set():
            if not outbox.run_once():
                stopping.wait(0.02)
    except Fenced:
        return FENCED_EXIT
    except Exception:
        # Woken from a pause, its session may have been ended by the server: fenced all the same if the lease
        # moved on meanwhile (the renewer may not have noticed yet).
        holder = active_agent(store)
        if lock.lost.is_set() or holder is None or holder["token"] != lock.token:
            return FENCED_EXIT
        raise
    finally:
        connector.close()
        lock.release()
        store.close()
    return FENCED_EXIT if lock.lost.is_set() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])))
