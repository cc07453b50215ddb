"""The long exactly-once run: workers SIGKILLed at random moments (some right after the target's commit) until
every posting is posted; prints lost and doubled postings (both must be 0).

    .venv/bin/python bench/crash.py --kills 1000 --db postgresql [--payments 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# bench/ itself must not be on the path: bench/postings.py would shadow the postings package.
sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crash_worker import drive, outbox_states, plan, read_firm, seed_crash_run

from connectors.testkit.databases import temp_database


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=1000, help="at least this many SIGKILLs by the driver")
    ap.add_argument("--db", choices=("sqlite", "postgresql", "mariadb"), default="sqlite")
    ap.add_argument("--payments", type=int, default=1000)
    ap.add_argument("--commit-kill-probability", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledgerlink-crash-") as tmp, temp_database(args.db, Path(tmp)) as db:
        state_url = f"sqlite:///{Path(tmp) / 'state.db'}"
        balances, paid = seed_crash_run(state_url, db.url, args.payments, args.seed)
        result = drive(state_url, db.url, Path(tmp), min_kills=args.kills, delay=(0.005, 0.08),
                       commit_probability=args.commit_kill_probability, seed=args.seed, timeout=3600)
        firm = read_firm(db.url)
        by_statement, _ = plan(args.payments, args.seed)
        expected = {f"{ref}:{key}": pence for key, pays in by_statement.items() for ref, pence in pays}
        lost = len(expected.keys() - firm.receipts.keys())
        doubled = firm.duplicates + len(firm.receipts.keys() - expected.keys())
        wrong_amounts = sum(firm.receipts[r] != p for r, p in expected.items() if r in firm.receipts)
        moved = {k: sum(p for _, p in pays) for k, pays in by_statement.items()}
        wrong_balances = sum(balances[k] - firm.balances[k] != moved[k] for k in balances)
        states = outbox_states(state_url)
    print(f"database {args.db}: {args.payments} payments, {result.runs} worker runs, {result.kills} kills by the "
          f"driver + {result.commit_kills} between target commit and local mark, {result.seconds:.1f}s")
    print(f"lost {lost}  doubled {doubled}  wrong amounts {wrong_amounts}  wrong balances {wrong_balances}  "
          f"total {sum(firm.receipts.values())} of {paid} pence  outbox {states}")
    ok = lost == doubled == wrong_amounts == wrong_balances == 0 and states == {"posted": args.payments}
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
