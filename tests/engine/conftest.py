"""The engine tests' one ``rt``: a runtime on the demo ``home`` (tests/conftest.py), the mirror synced, links
retrying at once. A module that needs another firm or provider defines its own fixture of the same name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import demo_runtime

from agent.runtime import Runtime


@pytest.fixture
def rt(home: Path) -> Iterator[Runtime]:
    with demo_runtime(home) as runtime:
        yield runtime
