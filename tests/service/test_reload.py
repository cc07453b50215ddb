"""Hot reload: valid edits take effect without a restart; broken ones are refused and the old config kept."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests_support import demo_runtime

from agent.runtime import Runtime
from agent.service.reload import ConfigWatcher


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with demo_runtime(tmp_path / "home", sync=False) as runtime:
        yield runtime


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_valid_edit_applies_and_broken_edit_is_refused(rt: Runtime, polling: bool,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    mapping_file = rt.settings.mapping_path
    assert rt.mapping.name == "Demo firm"
    old_connector = rt.connector
    watcher = ConfigWatcher(rt, polling=polling, debounce=0.3).start()
    try:
        mapping_file.write_text(mapping_file.read_text().replace("name: Demo firm", "name: Renamed firm"))
        assert wait_for(lambda: rt.mapping.name == "Renamed firm")
        assert rt.connector is not old_connector  # rebuilt from the new mapping
        refused = watcher.refusals  # a poll may have caught the file half-written: that is refused too
        with caplog.at_level(logging.ERROR, logger="ledgerlink.reload"):
            mapping_file.write_text(mapping_file.read_text().replace("key: id", "key_column: id", 1))
            assert wait_for(lambda: watcher.refusals > refused)
        assert rt.mapping.name == "Renamed firm"  # the old, valid mapping is kept
        assert "entities.clients.key_column: unknown key" in caplog.text
        assert "running configuration is kept" in caplog.text
    finally:
        watcher.stop()


def test_bursts_are_debounced(rt: Runtime) -> None:
    config = rt.settings.config_path
    watcher = ConfigWatcher(rt, debounce=0.5).start()
    try:
        for i in range(10):
            config.write_text(config.read_text().replace("Demo Legal LLP", f"Firm {i}", 1)
                              .replace(f"Firm {i - 1}", f"Firm {i}", 1))
            time.sleep(0.02)
        assert wait_for(lambda: rt.settings.service_name == "Firm 9")
        time.sleep(0.8)
        assert watcher.reloads == 1
    finally:
        watcher.stop()


def test_dead_watcher_is_restarted(rt: Runtime) -> None:
    watcher = ConfigWatcher(rt, debounce=0.2).start()
    try:
        assert not watcher.ensure_alive()
        observer = watcher._observer
        assert observer is not None  # started
        observer.stop()  # simulate the observer thread dying
        observer.join()
        assert watcher.ensure_alive()
        config = rt.settings.config_path
        config.write_text(config.read_text().replace("Demo Legal LLP", "After Restart"))
        assert wait_for(lambda: rt.settings.service_name == "After Restart")
    finally:
        watcher.stop()


def test_a_mapping_naming_a_missing_column_is_refused_on_reload(rt: Runtime,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Valid YAML, valid schema, but the firm database has no such column: refused, the old mapping kept."""
    mapping_file = rt.settings.mapping_path
    original = rt.mapping
    watcher = ConfigWatcher(rt, debounce=0.3)
    mapping_file.write_text(mapping_file.read_text().replace("amount_pence, received_at", "amount_pense, received_at"))
    with caplog.at_level(logging.ERROR, logger="ledgerlink.reload"):
        assert watcher.reload() is False
    assert rt.mapping is original and watcher.refusals == 1
    assert "postings.statements.0" in caplog.text and "amount_pense" in caplog.text
    mapping_file.write_text(mapping_file.read_text().replace("amount_pense", "amount_pence")
                            .replace("name: Demo firm", "name: Fixed firm"))
    assert watcher.reload() is True and rt.mapping.name == "Fixed firm"
