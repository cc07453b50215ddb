"""Fixtures for the kits (docs/adding-a-provider.md, "4. Run the kit"), and the package's entry point made visible
to importlib.metadata without a pip install."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from acmepay_ledgerlink import AcmePayProvider
from acmepay_ledgerlink.fake import API_KEY, AcmeFake

from agent.core.model import MerchantAccount

PACKAGE = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A minimal ``acmepay_ledgerlink-0.1.dist-info`` on sys.path, its entry points read from pyproject.toml, so
    ``connectors.plugins.load`` finds the plugin as it would after ``pip install``. It is written to a temporary
    directory, never into the package's folder."""
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    site = tmp_path_factory.mktemp("site")
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = [f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
             for group, points in project["entry-points"].items()]
    (info / "entry_points.txt").write_text("\n".join(lines))
    sys.path.insert(0, str(site))
    yield info
    sys.path.remove(str(site))


@pytest.fixture
def acme_fake() -> Iterator[AcmeFake]:
    fake = AcmeFake().start()
    yield fake
    fake.stop()


@pytest.fixture
def account(acme_fake: AcmeFake) -> MerchantAccount:
    # timeout: the kit's slow answers come after 1.5 s, so the client must give up well before.
    return MerchantAccount(name="acme", provider="acmepay", currency="GBP", api_base=acme_fake.url,
                           options={"timeout": 0.5})


@pytest.fixture
def provider(account: MerchantAccount) -> Iterator[AcmePayProvider]:
    acme = AcmePayProvider(account, API_KEY)
    yield acme
    acme.close()


@pytest.fixture
def payer(acme_fake: AcmeFake) -> AcmeFake:
    return acme_fake  # the World: pay, fail, charge_back, expire, payer_view, link_count


@pytest.fixture
def faults(acme_fake: AcmeFake) -> AcmeFake:
    return acme_fake  # FakeAPI itself keeps the Faults protocol (fail_next, slow_next)


@pytest.fixture
def webhook() -> None:
    return None  # AcmePayProvider.capabilities.webhooks is False
