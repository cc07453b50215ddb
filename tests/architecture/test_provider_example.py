"""A provider written outside the package from docs/adding-a-provider.md passes the kits (issue 29): the Acme Pay
example (docs/examples/acmepay: a plugin package of its own, its fake built on the testkit) is copied out of the
repository and its tests run there, as a third party would run them, its entry point made visible by a generated
dist-info (no pip install into this environment)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "acmepay"


@pytest.mark.timeout(300)
def test_the_acme_pay_example_passes_the_provider_kit_from_outside_the_repository(tmp_path: Path) -> None:
    outside = tmp_path / "acme-run"
    shutil.copytree(EXAMPLE, outside, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    env = {**os.environ, "PYTHONPATH": str(outside)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-W", "error",
                          "tests"], cwd=outside, env=env, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) >= 20, run.stdout[-2000:]
    skips = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("declares no webhooks (Capabilities.webhooks)" in line for line in skips), skips
