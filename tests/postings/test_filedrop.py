"""File-drop postings: CSV and fixed-width batches, atomic drops, and no payment dropped twice after a crash."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select
from test_outbox import Env

from agent.state.schema import file_drops
from postings.outbox import Outbox


def file_yaml(folder: Path, fmt: str = "csv") -> str:
    widths = fmt == "fixed"
    return f"""\
postings:
  kind: file
  folder: "{folder}"
  format: {fmt}
  filename: "ledgerlink-{{batch}}.{'txt' if widths else 'csv'}"
  columns:
    - {{name: Reference, param: reference{', width: 10' if widths else ''}}}
    - {{name: Statement, param: statement_number{', width: 4' if widths else ''}}}
    - {{name: Amount, param: amount{', width: 9' if widths else ''}}}
    - {{name: Method, param: method{', width: 5' if widths else ''}}}
"""


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    return tmp_path / "import"


def make_env(tmp_path: Path, drop: Path, fmt: str = "csv") -> Env:
    env = Env(tmp_path, file_yaml(drop, fmt))
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    env.pay("p2", "20.50", [("S2", "20.50", True)])
    return env


def recorded(env: Env) -> list[tuple[str, list[str]]]:
    with env.store.read() as conn:
        return [(Path(f).name, json.loads(r)) for f, r in conn.execute(select(file_drops.c.filename,
                                                                               file_drops.c.references))]


def test_csv_batch_is_one_file_with_a_record_of_what_it_holds(tmp_path: Path, drop: Path) -> None:
    env = make_env(tmp_path, drop)
    assert env.outbox().run_once() == {"posted": 2}
    (path,) = drop.iterdir()  # one file, no temporary left behind
    assert path.name.startswith("ledgerlink-") and path.suffix == ".csv"
    assert path.read_bytes() == b"Reference,Statement,Amount,Method\r\np1:S1,S1,30.00,bank\r\np2:S2,S2,20.50,bank\r\n"
    assert recorded(env) == [(path.name, ["p1:S1", "p2:S2"])]
    assert set(env.states().values()) == {"posted"}
    assert env.outbox().run_once() == {}


def test_fixed_width_layout_and_a_value_too_wide_fails_only_its_posting(tmp_path: Path, drop: Path) -> None:
    env = make_env(tmp_path, drop, "fixed")
    env.pay("long-reference", "1.00", [("S1", "1.00", True)])
    assert env.outbox().run_once() == {"posted": 2, "failed": 1}
    (path,) = drop.iterdir()
    assert path.read_bytes() == (b"p1:S1     S1      30.00bank \r\n"
                                  b"p2:S2     S2      20.50bank \r\n")
    failed = env.posting("long-reference:S1")
    assert failed["state"] == "failed" and "wider than 10 characters" in failed["last_error"]


class Crash(BaseException):
    """The process dying: nothing after this point runs, not even clean-up."""


def crash_at(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
    def die(*_: object, **__: object) -> None:
        raise Crash

    monkeypatch.setattr(target, name, die)
    monkeypatch.setattr(Outbox, "_release", lambda self, rows: None)


def rerun(env: Env, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    monkeypatch.undo()
    env.clock.advance(1)
    return env.outbox().run_once()


def test_crash_between_record_and_rename_finishes_the_rename(tmp_path: Path, drop: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(tmp_path, drop)
    crash_at(monkeypatch, os, "replace")  # filedrop's os.replace
    with pytest.raises(Crash):
        env.outbox().run_once()
    (temp,) = drop.iterdir()
    assert temp.name.startswith(".") and temp.name.endswith(".tmp")
    assert set(env.states().values()) == {"posting"}
    assert rerun(env, monkeypatch) == {"already": 2}
    (path,) = drop.iterdir()
    assert recorded(env) == [(path.name, ["p1:S1", "p2:S2"])]
    assert set(env.states().values()) == {"posted"}


def test_crash_after_rename_never_drops_again_even_once_imported(tmp_path: Path, drop: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(tmp_path, drop)
    crash_at(monkeypatch, Outbox, "_posted")
    with pytest.raises(Crash):
        env.outbox().run_once()
    (path,) = drop.iterdir()
    path.unlink()  # the matter system imported and moved the file before the agent came back
    assert rerun(env, monkeypatch) == {"already": 2}
    assert list(drop.iterdir()) == []
    assert len(recorded(env)) == 1


def test_crash_before_the_record_writes_the_batch_again(tmp_path: Path, drop: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(tmp_path, drop)
    outbox = env.outbox()
    begin = env.store.begin
    calls: list[int] = []

    def begin_until_the_record() -> object:
        calls.append(1)
        if len(calls) > 1:  # the first write transaction is the claim, the second the file_drops record
            raise Crash
        return begin()

    crash_at(monkeypatch, env.store, "begin")
    monkeypatch.setattr(env.store, "begin", begin_until_the_record)
    with pytest.raises(Crash):
        outbox.run_once()
    assert [p.name.endswith(".tmp") for p in drop.iterdir()] == [True]
    assert rerun(env, monkeypatch) == {"posted": 2}
    (path,) = drop.iterdir()  # the orphaned temporary file is gone, the batch dropped once
    assert not path.name.startswith(".")
    assert recorded(env) == [(path.name, ["p1:S1", "p2:S2"])]
