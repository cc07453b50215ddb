"""``ledgerlink run`` as a process: one instance per state store, SIGTERM exits cleanly, JSON logs carry no secret."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from tests_support import STAFF

from agent.engine.links import LinkRequest
from agent.engine.payments import EventPoller
from agent.engine.sync import Syncer
from agent.home.demo import init_home
from agent.home.logs import setup_logging
from agent.runtime import Runtime
from agent.service.loop import Service, Wakeup, default_jobs, post_and_refresh
from agent.state.lock import AlreadyRunning
from agent.state.schema import postings
from agent.state.search import search_matters
from connectors.providers import sandbox
from connectors.testkit.databases import TempDatabase

LEDGERLINK = Path(sys.executable).with_name("ledgerlink")
API_LINE = re.compile(r"local API on (http://127\.0\.0\.1:\d+)")


def test_second_lock_on_the_same_home_is_refused_while_the_first_holds_it(home: Path) -> None:
    first, second = Runtime.for_home(home).store.instance_lock(), Runtime.for_home(home).store.instance_lock()
    first.acquire()
    try:
        assert (home / "state.db.lock").read_text().strip() == f"pid {os.getpid()} on {socket.gethostname()}"
        with pytest.raises(AlreadyRunning, match=re.escape(
                f"another ledgerlink is already running on the state store sqlite:///{home / 'state.db'} "
                f"(pid {os.getpid()} on ")):
            second.acquire()
    finally:
        first.release()
    second.acquire()  # released: the next agent may start
    second.release()


def test_an_agent_from_another_home_on_the_same_sqlite_store_is_refused(home: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock belongs to the store: a second home pointed at the first one's state.db must not run too."""
    first = Runtime.for_home(home)
    other = tmp_path / "other-home"
    init_home(other)
    monkeypatch.setenv("LEDGERLINK_STATE_URL", f"sqlite:///{home / 'state.db'}")
    second = Runtime.for_home(other)
    lock_one, lock_two = first.store.instance_lock(), second.store.instance_lock()
    lock_one.acquire()
    try:
        with pytest.raises(AlreadyRunning, match="already running on the state store"):
            lock_two.acquire()
    finally:
        lock_one.release()
        first.close()
        second.close()


def test_postgres_state_store_uses_an_advisory_lock(home: Path, pg_db: TempDatabase,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERLINK_STATE_URL", pg_db.url.render_as_string(hide_password=False))
    rt_one, rt_two = Runtime.for_home(home), Runtime.for_home(home)
    first, second = rt_one.store.instance_lock(), rt_two.store.instance_lock()
    try:
        first.acquire()
        with pytest.raises(AlreadyRunning, match=rf"already running on the state store .* \(pid {os.getpid()} on "):
            second.acquire()
        with rt_two.store.engine.connect() as conn:  # the refusal left no transaction open
            assert conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in%' "
                                     "AND datname = current_database()")).scalar_one() == 0
        first.release()
        second.acquire()
        second.release()
        assert not list(home.glob("*.lock"))
    finally:
        rt_one.close()
        rt_two.close()


@pytest.fixture
def agent(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``ledgerlink run`` on the demo home: free ports, JSON logs, a secret of its own."""
    for name, value in {"LEDGERLINK_HOME": str(home), "LEDGERLINK_SANDBOX_PORT": "0", "LEDGERLINK_API_PORT": "0",
                        "LEDGERLINK_LOG_JSON": "true", "LEDGERLINK_INTERVALS__SYNC": "0.5"}.items():
        monkeypatch.setenv(name, value)
    with open(home / "console.log", "wb") as console:  # a file, not a pipe nobody reads that could fill up
        proc = subprocess.Popen([str(LEDGERLINK), "run"], stdout=console, stderr=console)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def api_url(home: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> str:
    log_file = home / "logs" / "ledgerlink.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, (home / "console.log").read_text()
        found = API_LINE.search(log_file.read_text()) if log_file.exists() else None
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError("the agent never said where its API listens")


def test_run_serves_the_api_refuses_a_second_instance_and_stops_cleanly_on_sigterm(
        home: Path, agent: subprocess.Popen[bytes]) -> None:
    url = api_url(home, agent)
    token = subprocess.run([str(LEDGERLINK), "api", "token", "--user", "admin"], capture_output=True, text=True,
                           timeout=60, check=True).stdout.strip()  # the first admin, made by the first run
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert httpx.get(f"{url}/status").status_code == 401

    second = subprocess.run([str(LEDGERLINK), "run"], capture_output=True, timeout=30)
    assert second.returncode == 2
    assert f"(pid {agent.pid} on {socket.gethostname()})" in second.stderr.decode()
    assert "another ledgerlink is already running on the state store" in second.stderr.decode()

    link = client.post("/links", json={"matter": "M-2026-0010", "amount": "300.00"})
    assert link.status_code == 201
    sandbox.pay(home, link.json()["provider_ref"])
    deadline = time.monotonic() + 10  # the loop reads the payment and posts it back into the firm database
    while client.get("/postings", params={"status": "posted"}).json() == [] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p["amount"] for p in client.get("/postings", params={"status": "posted"}).json()] == ["300.00"]
    assert client.get("/matters", params={"q": token}).json() == []  # the token now sits in the access log's URL
    client.close()

    started = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=10) == 0
    assert time.monotonic() - started < 5

    with sqlite3.connect(home / "state.db") as conn:  # nothing half-written
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM links WHERE status = 'creating'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM postings WHERE state <> 'posted'").fetchone() == (0,)
    lock = Runtime.for_home(home).store.instance_lock()
    lock.acquire()  # the lock went with the process
    lock.release()

    lines = (home / "logs" / "ledgerlink.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [e["message"] for e in entries]
    assert any("received SIGTERM" in m for m in messages) and messages[-1] == "stopped"
    assert any("/matters?q=***" in m for m in messages)
    console_link = next(m for m in messages if "staff console" in m)  # a one-time code: logged whole, usable once
    assert "#code=" in console_link and "***" not in console_link
    assert token not in "\n".join(lines)
    console = (home / "console.log").read_text()
    assert '"message": "stopped"' in console and token not in console


def test_logs_are_json_lines_scrubbed_on_every_handler(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rt = Runtime.for_home(home)
    secret = "s3cr3t-value-for-the-log-test"
    rt.secrets.set("firm-db", secret)
    rt.secrets.get("firm-db")
    setup_logging(settings=rt.settings.model_copy(update={"log_json": True}))
    try:
        log = logging.getLogger("thirdparty.driver")  # not under 'ledgerlink': only handler filters catch it
        log.warning("connect failed with password=%s", secret)
        try:
            raise RuntimeError(f"auth {secret}")
        except RuntimeError:
            log.exception("boom")
    finally:
        setup_logging(verbose=None)
    file_entries = [json.loads(line) for line in (home / "logs" / "ledgerlink.log").read_text().splitlines()]
    console_entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    for entries in (file_entries, console_entries):
        assert [e["message"] for e in entries] == ["connect failed with password=***", "boom"]
        assert "RuntimeError: auth ***" in entries[1]["exception"]
        assert secret not in json.dumps(entries)
    rt.close()


def test_the_reconciliation_sweep_is_scheduled_from_the_last_one_the_store_recorded(home: Path) -> None:
    from agent.service.loop import default_jobs, reconcile_due

    rt = Runtime.for_home(home)
    try:
        day = rt.settings.intervals.reconcile
        assert day == 86400.0  # nightly by default
        assert reconcile_due(rt, day) - time.monotonic() <= 60.0  # a new store: soon
        rt.store.record_ok("reconcile")
        assert reconcile_due(rt, day) - time.monotonic() > day - 60  # just ran: a day from now, restart or not
        assert "reconcile" in [job.name for job in default_jobs(rt)]
    finally:
        rt.close()


def test_a_standby_service_takes_over_within_15_seconds_of_a_sigkill(tmp_path: Path, pg_db: TempDatabase,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two real ``ledgerlink run`` processes, two homes, one PostgreSQL state store, ``standby = true``."""
    env = {"LEDGERLINK_STATE_URL": pg_db.url.render_as_string(hide_password=False), "LEDGERLINK_SANDBOX_PORT": "0",
           "LEDGERLINK_API_PORT": "0", "LEDGERLINK_STANDBY": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    try:
        for name in ("active", "standby"):
            home = tmp_path / name
            init_home(home)
            logs[name] = home / "logs" / "ledgerlink.log"
            with open(home / "console.log", "wb") as console:
                procs[name] = subprocess.Popen([str(LEDGERLINK), "run"], stdout=console, stderr=console,
                                               env={**os.environ, "LEDGERLINK_HOME": str(home)})
            wanted = "took the state store's lease" if name == "active" else "standing by: the active agent is"
            assert wait_for_log(logs[name], wanted, 30), logs[name].read_text() if logs[name].exists() else ""
        killed = time.monotonic()
        procs["active"].kill()
        procs["active"].wait()
        assert wait_for_log(logs["standby"], "took the state store's lease (fencing token 2)", 20)
        assert time.monotonic() - killed < 15
        procs["standby"].send_signal(signal.SIGTERM)
        assert procs["standby"].wait(timeout=15) == 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def wait_for_log(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return True
        time.sleep(0.1)
    return False


def test_a_recorded_payment_wakes_the_outbox_without_waiting_for_its_timer(home: Path) -> None:
    """The postings job's timer is an hour here: the payment can only reach the firm database this run because
    the payments poll that recorded it woke the outbox (Wakeup), the next thing the loop does."""
    config = home / "ledgerlink.toml"
    config.write_text(config.read_text() + "\n[intervals]\nsync = 3600\npayments = 0.2\npostings = 3600\n")
    rt = Runtime.for_home(home)
    Syncer(rt.store, rt.connector).sync()
    with rt.store.read() as conn:
        matters = [m.matter.number for m in search_matters(conn, "M-", limit=100) if m.matter.status == "open"]
    link = next(link for link in (rt.links.create(STAFF, LinkRequest(matter=m, amount=Decimal("1.00"))) for m in matters
                                  if rt.links.defaults(m).payer_email) if link is not None)
    wakeup = Wakeup()
    service = Service(rt, default_jobs(rt, wakeup), wakeup=wakeup)
    service.loop(once=True)  # every job's first run, the outbox's included: its next tick is an hour away
    worker = threading.Thread(target=service.loop, daemon=True)
    worker.start()
    try:
        assert link.provider_ref is not None
        sandbox.pay(home, link.provider_ref)
        deadline = time.monotonic() + 60
        states: list[str] = []
        while time.monotonic() < deadline and states != ["posted"]:
            time.sleep(0.1)
            with rt.store.read() as conn:
                states = list(conn.execute(select(postings.c.state)).scalars())
        assert states == ["posted"]
        job = next(j for j in service.jobs if j.name == "postings")
        assert job.due - time.monotonic() > 3000  # it ran on the wake, not on a tick: the next tick is still far
    finally:
        service.stopping.set()
        worker.join(timeout=10)
        rt.close()


def test_one_postings_run_takes_batch_after_batch_of_a_burst(home: Path) -> None:
    """A burst of payments is written back in one run of the postings job, batch after batch, not one batch per
    run (1,000 payments waited ten runs, p99 15 s); a run that cannot move a batch stops at once."""
    rt = Runtime.for_home(home)
    try:
        Syncer(rt.store, rt.connector).sync()
        with rt.store.read() as conn:
            matters = [m.matter.number for m in search_matters(conn, "M-", limit=100) if m.matter.status == "open"]
        links = [link for link in (rt.links.create(STAFF, LinkRequest(matter=m, amount=Decimal("1.00")))
                                   for m in matters if rt.links.defaults(m).payer_email) if link is not None][:5]
        assert len(links) == 5
        for link in links:
            assert link.provider_ref is not None
            sandbox.pay(home, link.provider_ref)
        EventPoller(rt.store, rt.provider(None), rt.settings.account(None).name, retry_initial=0.01).poll()
        rt.outbox.batch_size = 2
        assert post_and_refresh(rt) == {"posted": 5}  # batches of 2, 2 and 1, in one run
        with rt.store.read() as conn:
            assert list(conn.execute(select(postings.c.state)).scalars()) == ["posted"] * 5
        assert post_and_refresh(rt) == {}  # nothing due: one empty look
    finally:
        rt.close()
