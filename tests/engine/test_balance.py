"""What is owed, as the popup and ``links defaults`` offer it: a paid debt is never offered again, not even in the
moment between the write-back and the next sync (issue 13, item 1: reproduced on the demo)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from tests_support import STAFF

from agent.core.errors import RuleError
from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.runtime import Runtime
from connectors.database.contract import Batch
from connectors.providers import sandbox

MATTER = "M-2026-0010"  # Okafor probate: INV-1001 (644.30) + INV-1002 (1443.75)


def test_defaults_are_zero_the_moment_the_postings_are_posted(rt: Runtime) -> None:
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    assert link.amount == Decimal("2088.05")
    assert link.provider_ref is not None
    sandbox.pay(rt.settings.home, link.provider_ref)
    EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
    assert rt.outbox.run_once().get("posted") == 2
    # The firm's rows now say 0.00, but the mirror has not read them again: the paid money still counts.
    assert rt.links.defaults(MATTER).open_balance == Decimal("2088.05")
    assert rt.links.defaults(MATTER).amount == Decimal("0.00")
    with pytest.raises(RuleError):
        rt.links.create(STAFF, LinkRequest(matter=MATTER))  # nothing owed: no new link for a paid debt
    rt.syncer.sync()  # a pass that began after the postings: the mirror shows the paid statements
    after = rt.links.defaults(MATTER)
    assert (after.open_balance, after.unposted_payments, after.amount) == (Decimal(0), Decimal(0), Decimal(0))


def test_a_sync_pass_begun_before_the_posting_does_not_count_as_seeing_it(rt: Runtime,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass that read the statements before the write-back must not make the paid amount vanish."""
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    assert link.provider_ref is not None
    sandbox.pay(rt.settings.home, link.provider_ref)
    EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
    real_read = rt.connector.read

    def read_then_post(*args: Any, **kwargs: Any) -> Iterator[Batch]:
        batches = list(real_read(*args, **kwargs))  # read as the firm has it now: unpaid
        rt.outbox.run_once()  # ... and the write-back lands while this pass is still storing
        return iter(batches)

    with monkeypatch.context() as patched:  # this pass only
        patched.setattr(rt.connector, "read", read_then_post)
        rt.syncer.sync(["statements"])
    assert rt.links.defaults(MATTER).amount == Decimal("0.00")


def test_the_service_reads_the_statements_again_right_after_a_write_back(rt: Runtime) -> None:
    """Issue 13 item 1: after the postings job writes, the mirror shows the firm's new balance at once."""
    from agent.service.loop import default_jobs

    link = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    assert link.provider_ref is not None
    sandbox.pay(rt.settings.home, link.provider_ref)
    EventPoller(rt.store, rt.provider("operating"), "operating", retry_initial=0.01).poll()
    postings_job = next(job for job in default_jobs(rt) if job.name == "postings")
    ran = postings_job.run()
    assert isinstance(ran, dict) and ran["posted"] == 2
    after = rt.links.defaults(MATTER)  # no sync job has run since
    assert (after.open_balance, after.unposted_payments, after.amount) == (Decimal(0), Decimal(0), Decimal(0))
