"""The firm's PostgreSQL goes away for 60 s while payments keep arriving: the agent stays up, says so in its status,
and afterwards posts every payment exactly once.

The database is a cluster of its own, made with initdb in a temporary folder and stopped with ``pg_ctl stop``, so
the shared server on 5432 is never touched. PostgreSQL refuses to run as root: as root the cluster runs as the
``postgres`` OS user (runuser), otherwise as the current user.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select
from tests_support import STAFF, require

from agent.engine.links import LinkRequest
from agent.runtime import Runtime
from agent.state.schema import postings
from connectors.providers import sandbox

pytestmark = [pytest.mark.outage, pytest.mark.timeout(600)]

PG_BIN = Path(os.environ.get("LEDGERLINK_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
LEDGERLINK = Path(sys.executable).with_name("ledgerlink")
OUTAGE_SECONDS = 60
MATTERS = {f"M-{i}": f"payer{i}@example.com" for i in range(1, 7)}  # a new link per payment, never the open one
OPENING_BALANCE = Decimal("5000.00")

SCHEMA = """
CREATE TABLE clients (id serial PRIMARY KEY, name text NOT NULL, email text,
                      updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE matters (id serial PRIMARY KEY, matter_no text NOT NULL UNIQUE, title text, client_id int
                      REFERENCES clients, state text NOT NULL DEFAULT 'OPEN', updated_at timestamptz NOT NULL
                      DEFAULT now());
CREATE TABLE statements (id serial PRIMARY KEY, number text NOT NULL UNIQUE, matter_id int NOT NULL REFERENCES matters,
                         issued_on date NOT NULL, amount numeric(12, 2) NOT NULL, balance numeric(12, 2) NOT NULL,
                         currency char(3) NOT NULL DEFAULT 'GBP', updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE receipts (id serial PRIMARY KEY, reference text NOT NULL UNIQUE, statement_id int NOT NULL
                       REFERENCES statements, amount numeric(12, 2) NOT NULL, received_at timestamp NOT NULL,
                       method text);
"""

MAPPING = """\
version: 1
name: Outage firm (PostgreSQL)
source:
  connector: sqlalchemy
  url: postgresql+psycopg://postgres@127.0.0.1:{port}/firm
  options: {{connect_args: {{connect_timeout: 3}}}}
currency: GBP
timezone: UTC
entities:
  clients:
    table: clients
    key: id
    watermark: {{column: updated_at}}
    columns: {{name: name, email: email}}
  matters:
    table: matters
    key: id
    watermark: {{column: updated_at}}
    columns: {{number: matter_no, name: title, client_key: client_id, status: state}}
    status_values: {{open: [OPEN], closed: [CLOSED]}}
  statements:
    table: statements
    key: id
    watermark: {{column: updated_at}}
    columns: {{number: number, matter_key: matter_id, issue_date: issued_on, amount: amount, balance: balance,
               currency: currency}}
postings:
  kind: sql
  exists: SELECT 1 FROM receipts WHERE reference = :reference
  statements:
    - >-
      INSERT INTO receipts (reference, statement_id, amount, received_at, method)
      VALUES (:reference, :statement_key, :amount, :paid_at, :method)
    - UPDATE statements SET balance = balance - :amount WHERE id = :statement_key
"""

CONFIG = """\
mapping = "mapping.yaml"
secrets_backend = "file"
[accounts.operating]
provider = "sandbox"
currency = "GBP"
expiry_days = 7
"""


@dataclass
class Cluster:
    """A private PostgreSQL cluster: initdb'd in ``folder``, listening on 127.0.0.1:``port``."""

    folder: Path
    port: int
    as_user: list[str]

    def pg_ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), *args],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-o", options, "-l", str(self.folder / "server.log"), "-w", "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")

    def connect(self, dbname: str = "firm") -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True)


def cluster_unavailable() -> str | None:
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL server binaries are not in {PG_BIN} (set LEDGERLINK_TEST_PG_BIN)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root, and runuser is missing to start PostgreSQL as the postgres user"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    require(cluster_unavailable())
    folder = Path(tempfile.mkdtemp(prefix="ll-outage-"))  # not pytest's tmp_path: its parents are private to root
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    made = Cluster(folder, free_port(), as_user)
    try:
        subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(folder / "data"), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        made.start()
        with made.connect("postgres") as conn:
            conn.execute("CREATE DATABASE firm")
        yield made
    finally:
        subprocess.run([*as_user, str(PG_BIN / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def seed(cluster: Cluster) -> None:
    with cluster.connect() as conn:
        conn.execute(SCHEMA)
        for i, (number, email) in enumerate(MATTERS.items(), start=1):
            conn.execute("INSERT INTO clients (name, email) VALUES (%s, %s)", (f"Client {i}", email))
            conn.execute("INSERT INTO matters (matter_no, title, client_id) VALUES (%s, %s, %s)",
                         (number, f"Matter {i}", i))
            conn.execute("INSERT INTO statements (number, matter_id, issued_on, amount, balance) "
                         "VALUES (%s, %s, %s, %s, %s)", (f"S-{i}", i, dt.date(2026, 1, i), OPENING_BALANCE,
                                                         OPENING_BALANCE))


def wait_for(what: str, check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes],
             log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the agent exited ({proc.returncode}):\n{log.read_text()[-4000:]}"
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-4000:]}")


def test_agent_rides_out_a_60_second_database_outage_and_posts_every_payment_once(
        cluster: Cluster, tmp_path: Path) -> None:
    seed(cluster)
    home = tmp_path / "home"
    home.mkdir()
    (home / "ledgerlink.toml").write_text(CONFIG)
    (home / "mapping.yaml").write_text(MAPPING.format(port=cluster.port))
    env = {**os.environ, "LEDGERLINK_HOME": str(home), "LEDGERLINK_SANDBOX_PORT": "0", "LEDGERLINK_API_PORT": "0",
           "LEDGERLINK_INTERVALS__SYNC": "1", "LEDGERLINK_INTERVALS__PAYMENTS": "0.5",
           "LEDGERLINK_INTERVALS__POSTINGS": "0.5"}
    console = home / "console.log"
    with open(console, "wb") as out:
        proc = subprocess.Popen([str(LEDGERLINK), "run"], env=env, stdout=out, stderr=out)
    rt = Runtime.for_home(home)
    paid: list[tuple[str, Decimal]] = []  # (matter, amount)

    def pay_one() -> None:
        n = len(paid)
        matter = list(MATTERS)[n % len(MATTERS)]
        amount = Decimal("10.00") + Decimal(n) + Decimal(n % 7) / 100  # distinct pennies: a lost or doubled one shows
        link = rt.links.create(STAFF, LinkRequest(matter=matter, amount=amount))
        assert not link.existing, f"{matter} still had an open link"
        assert link.provider_ref is not None
        sandbox.pay(home, link.provider_ref)
        paid.append((matter, amount))

    def posted() -> int:
        with rt.store.read() as conn:
            return len(conn.execute(select(postings.c.id).where(postings.c.state == "posted")).all())

    def status(component: str) -> dict[str, Any]:
        return rt.store.component_status().get(component, {})

    try:
        wait_for("the first sync", lambda: bool(status("sync").get("last_ok_at")), 60, proc, console)
        for _ in range(4):
            pay_one()
        wait_for("the first payments to be posted", lambda: posted() == 4, 30, proc, console)

        cluster.stop()
        down_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        outage_end = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_end:  # payments keep arriving while the firm database is down
            pay_one()
            time.sleep(4)
            assert proc.poll() is None, console.read_text()[-4000:]

        # The agent noticed: the sync job's status carries the error, the new postings wait with theirs.
        sync = status("sync")
        assert sync["last_error_at"] is not None and sync["last_error_at"].replace(tzinfo=None) > down_at
        assert "connection" in sync["last_error"].lower() or "connect" in sync["last_error"].lower(), sync
        with rt.store.read() as conn:
            waiting = conn.execute(select(postings.c.state, postings.c.last_error)
                                   .where(postings.c.state != "posted")).all()
        gave_up = [error for state, error in waiting if state == "failed"]
        assert not gave_up, f"the outbox gave up on {len(gave_up)} posting(s) during a {OUTAGE_SECONDS} s outage: " \
                            f"{gave_up[0]}"
        assert waiting and {state for state, _ in waiting} <= {"pending", "retrying", "posting"}, waiting
        assert any(error for _, error in waiting), waiting
        assert posted() == 4

        cluster.start()
        up_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        wait_for("every payment to be posted after the outage", lambda: posted() == len(paid), 150, proc, console)
        wait_for("sync to recover", lambda: (status("sync").get("last_ok_at") or down_at).replace(tzinfo=None)
                 > up_at, 30, proc, console)
        time.sleep(2)  # a doubled write would land here, after the count was reached
        assert proc.poll() is None

        with rt.store.read() as conn:
            states = conn.execute(select(postings.c.reference, postings.c.state)).all()
        assert len(states) == len(paid)
        assert {state for _, state in states} == {"posted"}
        with cluster.connect() as firm:
            receipts = firm.execute("SELECT reference, amount FROM receipts ORDER BY id").fetchall()
            balances: dict[str, Decimal] = dict(firm.execute("SELECT m.matter_no, s.balance FROM statements s "
                                                             "JOIN matters m ON m.id = s.matter_id").fetchall())
        assert sorted(ref for ref, _ in receipts) == sorted(ref for ref, _ in states)  # each payment once
        assert sorted(amount for _, amount in receipts) == sorted(amount for _, amount in paid)
        assert sum(amount for _, amount in receipts) == sum(amount for _, amount in paid)
        for matter in MATTERS:
            assert balances[matter] == OPENING_BALANCE - sum(a for m, a in paid if m == matter)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        rt.close()
