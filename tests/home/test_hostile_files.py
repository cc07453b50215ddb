"""Hostile and careless files (issue 14, items 7 and 8): a YAML bomb is refused before it expands, a TOML syntax
error is a configuration error naming file and line, and the reload watcher survives every bad edit, says so in
/status and applies the next good one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests_support import bearer

from agent.api import app as api
from agent.cli.main import main
from agent.core.errors import ConfigurationError
from agent.home.settings import load_settings
from agent.runtime import Runtime
from agent.service.reload import COMPONENT, ConfigWatcher
from mappings.format import MAX_ALIASES, MAX_DEPTH, MAX_MAPPING_BYTES, MappingErrors, load_mapping

# The classic "billion laughs": 318 bytes, nine levels of nine aliases, a billion strings once expanded.
BOMB = 'version: 1\na: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]\n" for prev, cur in zip("abcdefgh", "bcdefghi", strict=True))


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def rt(home: Path) -> Iterator[Runtime]:
    runtime = Runtime.for_home(home)
    yield runtime
    runtime.close()


# ------------------------------------------------------------------------------------------- YAML


def test_yaml_bomb_is_refused_in_milliseconds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 400
    started = time.monotonic()
    with pytest.raises(MappingErrors, match="aliases are expanded"):
        load_mapping(bomb)
    assert main(["mapping", "check", str(bomb)]) == 2
    assert time.monotonic() - started < 2
    err = capsys.readouterr().err
    assert "aliases are expanded" in err and "Traceback" not in err


def test_too_many_aliases_too_deep_or_too_big_is_refused_unexpanded(tmp_path: Path) -> None:
    many = tmp_path / "many.yaml"
    many.write_text("version: 1\nx: &x 1\ny: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n")
    with pytest.raises(MappingErrors, match=f"more than {MAX_ALIASES} aliases"):
        load_mapping(many)
    deep = tmp_path / "deep.yaml"
    deep.write_text("version: 1\nx: " + "[" * (MAX_DEPTH * 100) + "]" * (MAX_DEPTH * 100) + "\n")
    with pytest.raises(MappingErrors, match=f"nested more than {MAX_DEPTH} levels"):
        load_mapping(deep)
    big = tmp_path / "big.yaml"
    big.write_text("version: 1\n" + "#" * MAX_MAPPING_BYTES + "\n")
    with pytest.raises(MappingErrors, match="larger than"):
        load_mapping(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"version: 1\nname: Caf\xe9\n")
    with pytest.raises(MappingErrors, match=r"latin.yaml:2: \(file\): not UTF-8"):
        load_mapping(latin)


def test_a_few_anchors_are_still_fine(home: Path) -> None:
    mapping_file = home / "mapping.yaml"
    text = mapping_file.read_text().replace("name: Demo firm", "name: &firm Demo firm\ndescription: *firm", 1)
    mapping_file.write_text(text)
    assert "*firm" in mapping_file.read_text()
    with pytest.raises(MappingErrors) as refused:
        load_mapping(mapping_file)
    assert "description: unknown key" in str(refused.value)  # validated as usual: the alias itself passed


# ------------------------------------------------------------------------------------------- TOML


def break_toml(home: Path) -> None:
    config = home / "ledgerlink.toml"
    config.write_text(config.read_text() + "\nsandbox_port = = 8765\n")


def test_toml_syntax_error_names_file_line_and_problem(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    break_toml(home)
    line = len((home / "ledgerlink.toml").read_text().splitlines())
    with pytest.raises(ConfigurationError, match=rf"ledgerlink.toml, line {line}, column \d+: not valid TOML"):
        load_settings(home)
    assert main(["--home", str(home), "check"]) == 2
    err = capsys.readouterr().err
    assert f"ledgerlink.toml, line {line}" in err and "Invalid value" in err and "Traceback" not in err


def test_watcher_survives_a_toml_syntax_error_reports_it_and_applies_the_next_good_edit(rt: Runtime) -> None:
    config = rt.settings.config_path
    good = config.read_text()
    watcher = ConfigWatcher(rt, debounce=0.2).start()
    server = api.serve_api(rt, "127.0.0.1", 0)
    try:
        break_toml(rt.settings.home)
        assert wait_for(lambda: watcher.refusals >= 1)
        status = httpx.get(f"{server.url}/status", timeout=10,
                           headers={"Authorization": f"Bearer {bearer(rt.store)}"}).json()
        error = status["components"][COMPONENT]["last_error"]
        assert "not valid TOML" in error and "line" in error and "running one is kept" in error
        assert not watcher.ensure_alive()  # nothing died
        config.write_text(good.replace("Demo Legal LLP", "After the typo"))
        assert wait_for(lambda: watcher.reloads >= 1)
        assert rt.settings.service_name == "After the typo"
        assert rt.store.component_status()[COMPONENT]["last_ok_at"] is not None
    finally:
        server.stop()
        watcher.stop()


def test_watcher_survives_an_unforeseen_error_and_a_dead_reload_thread(rt: Runtime,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.service.reload as reload

    def broken(_home: Path) -> None:
        raise RuntimeError("disk on fire")

    watcher = ConfigWatcher(rt, debounce=0.2).start()
    try:
        with monkeypatch.context() as m:
            m.setattr(reload, "load_settings", broken)
            assert watcher.reload() is False
        assert "RuntimeError: disk on fire" in rt.store.component_status()[COMPONENT]["last_error"]
        watcher._stop.set()  # simulate the debounce thread dying: it sleeps until an edit, so wake it to end
        watcher._edited.set()
        watcher._timer.join(timeout=10)
        assert not watcher._timer.is_alive()
        watcher._stop.clear()
        assert watcher.ensure_alive()
        config = rt.settings.config_path
        config.write_text(config.read_text().replace("Demo Legal LLP", "Back again"))
        assert wait_for(lambda: rt.settings.service_name == "Back again")
    finally:
        watcher.stop()
