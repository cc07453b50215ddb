"""Post a home's outbox until nothing is left, killing itself (SIGKILL) at random right after the firm's system
committed a payment and before the state store marked it posted: the moment a second write would come from.

    python kill_worker.py HOME PROBABILITY SEED
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.runtime import Runtime


def main(home: str, probability: float, seed: int) -> None:
    rng = random.Random(seed)
    rt = Runtime.for_home(Path(home))
    rt.outbox.reversal_wait = dt.timedelta(0)  # a timedelta: 0 made a deferred reversal raise TypeError
    write = rt.connector.write_posting

    def write_then_maybe_die(params: Mapping[str, Any]) -> bool:
        written = write(params)
        if rng.random() < probability:
            os.kill(os.getpid(), signal.SIGKILL)
        return written

    # patched in this worker process only (mypy refuses any assignment to a method)
    rt.connector.write_posting = write_then_maybe_die  # type: ignore[method-assign]
    while rt.outbox.run_once():
        pass
    rt.close()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
