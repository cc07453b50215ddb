"""The engine tests' one ``home`` (the demo home, made fresh) and one ``rt`` (a runtime on it, the mirror synced,
links retrying at once). A module that needs another firm or provider defines its own fixture of the same name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import demo_runtime

from agent.home.demo import init_home
from agent.runtime import Runtime


@pytest.fixture
def home(tmp_path: Path) -> Path:
    made = tmp_path / "home"
    init_home(made)
    return made


@pytest.fixture
def rt(home: Path) -> Iterator[Runtime]:
    with demo_runtime(home) as runtime:
        yield runtime
