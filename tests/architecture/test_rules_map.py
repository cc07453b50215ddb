"""docs/rules.md maps each product rule to its code and its test: every file and test it names must exist, so the
map cannot drift from the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_module_and_test_the_rules_map_names_exists() -> None:
    text = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    last_file = None
    named = 0
    for ref in re.findall(r"`([^`]+)`", text):
        path, _, test = ref.partition("::")
        if path.startswith("::"):
            path, test = "", ref[2:]
        if (path.endswith(".py") or path.endswith("/")) and not path.startswith("../"):  # ../: beside the repo
            assert (ROOT / path).exists(), ref
            if path.startswith("tests/"):  # a bare ::test_name is in the test file named last
                last_file = ROOT / path
            named += 1
        if test:
            assert last_file is not None, ref
            assert re.search(rf"^def {re.escape(test)}\(", last_file.read_text(encoding="utf-8"), re.M), ref
            named += 1
    assert named > 40
