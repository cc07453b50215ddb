"""The service on the audit trail: a configuration reload (applied or refused) and each start and stop write
exactly one entry, under the system's name, with what changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import demo_runtime

from agent.runtime import Runtime
from agent.service.loop import run_service
from agent.service.reload import ConfigWatcher
from agent.state import audit


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with demo_runtime(tmp_path / "home", sync=False) as runtime:
        yield runtime


def entries(rt: Runtime) -> list[audit.Entry]:
    assert audit.check(rt.store, rt.audit_seal, rt.checkpoint_file).intact
    with rt.store.read() as conn:
        return audit.entries(conn)


def test_a_reload_writes_one_entry_with_the_change_and_a_refused_one_writes_one_failed(rt: Runtime) -> None:
    watcher = ConfigWatcher(rt, debounce=0.3)
    config = rt.settings.config_path
    config.write_text(config.read_text().replace('service_name = "Demo Legal LLP"', 'service_name = "Renamed LLP"'))
    assert watcher.reload() is True
    [applied] = entries(rt)
    assert (applied.actor, applied.action, applied.outcome) == ("system:reload", "config.reload", "ok")
    assert applied.object == f"config:{config}"
    assert applied.before == {"settings": {"service_name": "Demo Legal LLP"}, "mapping": {}}
    assert applied.after == {"settings": {"service_name": "Renamed LLP"}, "mapping": {}}
    config.write_text(config.read_text() + "\nthis is not toml = = =\n")
    assert watcher.reload() is False
    refused = entries(rt)[1:]
    assert [(e.action, e.outcome) for e in refused] == [("config.reload", "failed")]
    assert "toml" in (refused[0].error or "").lower() and refused[0].object == f"config:{config}"
    config.write_text(config.read_text().replace("\nthis is not toml = = =\n", ""))
    # An edit of the mapping is the mapping's entry, applied or refused, not one of ledgerlink.toml.
    mapping = rt.settings.mapping_path
    mapping.write_text(mapping.read_text().replace("name: Demo firm", "name: Demo firm (renamed)"))
    assert watcher.reload() is True
    renamed = entries(rt)[-1]
    assert renamed.object == f"config:{mapping}" and renamed.after == {"settings": {},
                                                                        "mapping": {"name": "Demo firm (renamed)"}}
    mapping.write_text(mapping.read_text() + "\nentities: [\n")
    assert watcher.reload() is False
    assert (entries(rt)[-1].outcome, entries(rt)[-1].object) == ("failed", f"config:{mapping}")


def test_start_and_stop_each_write_one_entry(rt: Runtime) -> None:
    assert run_service(rt, once=True) == 0
    start, stop = entries(rt)
    assert (start.actor, start.action, stop.action) == ("system:service", "service.start", "service.stop")
    assert start.object == stop.object and start.object.startswith("service:")
    assert start.after["once"] is True and start.after["pid"] == stop.after["pid"]
    assert stop.after["reason"] == "one pass"
