"""The state store's disk fills (issue 13 item 9): the agent keeps running, says so in the log and /status, writes
nothing half-done, and carries on by itself once there is room again, every payment posted exactly once.

The disk is real: a small tmpfs mounted for the test holds the state store, and a filler file takes its last free
byte, so SQLite meets ENOSPC as it would on a full server disk (root is needed to mount it; under CI=true a
machine that cannot mount fails the test rather than skipping it)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests_support import STAFF, bearer, require

from agent.api.app import create_app
from agent.engine.links import LinkRequest
from agent.home.demo import init_home
from agent.runtime import Runtime
from agent.service.loop import Service, default_jobs
from agent.state.schema import payments
from connectors.providers import sandbox

MATTER = "M-2026-0010"  # two statements: one payment becomes two postings


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        require("mounting a small tmpfs for the full-disk test needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        require(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Take every free byte of the disk with one file."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def receipts(home: Path) -> tuple[int, int | None]:
    with sqlite3.connect(home / "demo-firm.db") as firm:
        count, pence = firm.execute("SELECT count(*), sum(amount_pence) FROM receipts").fetchone()
    return int(count), pence


def test_a_full_state_store_keeps_the_agent_running_and_it_recovers_by_itself(tmp_path: Path,
                                                                               small_disk: Path) -> None:
    home = tmp_path / "home"
    init_home(home)
    config = home / "ledgerlink.toml"
    config.write_text(f'state_url = "sqlite:///{small_disk / "state.db"}"\n' + config.read_text())
    rt = Runtime.for_home(home)
    rt.links.retry_initial = 0.01
    rt.syncer.sync()
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    assert link.provider_ref is not None
    sandbox.pay(home, link.provider_ref)
    service = Service(rt, default_jobs(rt))
    for job in service.jobs:
        job.interval = 0.0
    token = bearer(rt.store)  # made while there is room: a sign-in writes, reading a token does not
    filler = fill(small_disk)
    service.loop(once=True)  # every job meets the full disk; none stops the agent
    assert rt.store.full is not None and "disk is full" in rt.store.full
    with rt.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(payments)).scalar() == 0  # nothing half-written
    client = TestClient(create_app(rt), base_url="http://127.0.0.1")
    status = client.get("/status", headers={"Authorization": f"Bearer {token}"})
    assert status.status_code == 200 and "disk is full" in status.json()["state_store"]

    filler.unlink()  # room again: nobody restarts anything
    deadline = time.monotonic() + 30  # the payments poll backs off after its failure (5 s)
    while time.monotonic() < deadline and receipts(home)[0] < 2:
        service.loop(once=True)
        time.sleep(0.5)
    assert rt.store.full is None
    service.loop(once=True)
    assert receipts(home) == (2, 208805)  # the payment posted once, to the penny
    rt.close()
