"""A process that submits a payment plan's due instalments, killed by tests/engine/test_plans.py:
``python plans_kill_worker.py HOME YYYY-MM-DD P`` runs the plan job as on that day and exits 0 once nothing is due.

With probability P it SIGKILLs itself right after the provider made a collection and before the state store
knew (the worst moment: the money is asked for, our record says 'creating'); the test kills it at random too.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

from agent.engine.plans import Plans
from agent.runtime import Runtime
from connectors.providers.contract import DirectDebitProvider


def main(home: Path, day: dt.date, probability: float) -> int:
    rt = Runtime.for_home(home)
    provider = rt.provider("operating")
    assert isinstance(provider, DirectDebitProvider)
    create = provider.create_collection

    def create_then_maybe_die(*args: Any, **kwargs: Any) -> Any:
        made = create(*args, **kwargs)
        if random.random() < probability:
            os.kill(os.getpid(), signal.SIGKILL)
        return made

    # patched in this worker process only (mypy refuses any assignment to a method)
    provider.create_collection = create_then_maybe_die  # type: ignore[method-assign]
    try:
        rt.directdebit.schedule_collections(day)  # finishes a collection a kill left 'creating'
        Plans(rt.settings, rt.store, rt.directdebit, today=lambda: day).submit_due()
        return 0
    finally:
        rt.close()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), dt.date.fromisoformat(sys.argv[2]), float(sys.argv[3])))
