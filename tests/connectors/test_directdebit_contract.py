"""The Direct Debit contract kit (connectors/testkit/directdebit.py), run for the sandbox and for GoCardless
against the local fake API."""

from __future__ import annotations

import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.gocardless_api import FakeGoCardless

from agent.core.model import MerchantAccount
from connectors.providers import sandbox
from connectors.providers.contract import MandateSetup
from connectors.providers.gocardless import GoCardlessProvider
from connectors.providers.sandbox import SandboxPayServer, SandboxProvider
from connectors.testkit.directdebit import DirectDebitContract

# --- the sandbox --------------------------------------------------------------------------------------------


class SandboxDirectDebitWorld:
    """The sandbox's payer (its mandate page, over HTTP) and its banks (connectors/providers/sandbox/world.py)."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def authorise(self, setup: MandateSetup) -> str:
        """The payer presses "Set up Direct Debit" on the page the setup's URL shows; the mandate keeps its ref."""
        with urllib.request.urlopen(urllib.request.Request(setup.url, data=b"", method="POST"), timeout=5) as page:
            assert b"Your Direct Debit is set up" in page.read()
        return setup.ref

    def cancel_mandate(self, mandate_ref: str) -> None:
        sandbox.set_mandate(self.home, mandate_ref, "cancelled")

    def submit(self, collection_ref: str) -> None:
        sandbox.set_collection(self.home, collection_ref, "submitted")

    def confirm(self, collection_ref: str) -> None:
        sandbox.set_collection(self.home, collection_ref, "confirmed")

    def pay_out(self, collection_ref: str) -> None:
        sandbox.set_collection(self.home, collection_ref, "paid_out")

    def fail(self, collection_ref: str) -> None:
        sandbox.set_collection(self.home, collection_ref, "failed")

    def charge_back(self, collection_ref: str) -> None:
        sandbox.set_collection(self.home, collection_ref, "charged_back")

    def set_mandate_status(self, mandate_ref: str, status: str) -> None:
        sandbox.set_mandate(self.home, mandate_ref, status)

    def set_collection_status(self, collection_ref: str, status: str) -> None:
        """Written into sandbox.db: set_collection moves only along the lifecycle, and some documented statuses
        (pending_customer_approval, customer_approval_denied) are never reached by a sandbox collection."""
        with sqlite3.connect(self.home / sandbox.DB_NAME) as conn:
            assert conn.execute("UPDATE collections SET status = ? WHERE ref = ?",
                                (status, collection_ref)).rowcount == 1

    def setup_count(self) -> int:
        return self._count("mandates")

    def collection_count(self) -> int:
        return self._count("collections")

    def _count(self, table: str) -> int:
        with sqlite3.connect(self.home / sandbox.DB_NAME) as conn:
            count: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            return count


class TestSandboxDirectDebit(DirectDebitContract):
    @pytest.fixture
    def home(self, tmp_path: Path) -> Path:
        return tmp_path / "home"

    @pytest.fixture
    def server(self, home: Path) -> Iterator[SandboxPayServer]:
        srv = SandboxPayServer(home).start()
        yield srv
        srv.stop()

    @pytest.fixture
    def provider(self, home: Path, server: SandboxPayServer) -> Iterator[SandboxProvider]:
        made = SandboxProvider(MerchantAccount(name="operating", api_base=server.url), None, home=str(home))
        yield made
        made.close()

    @pytest.fixture
    def world(self, home: Path) -> SandboxDirectDebitWorld:
        return SandboxDirectDebitWorld(home)


# --- GoCardless against the fake API ------------------------------------------------------------------------


class GoCardlessDirectDebitWorld:
    """The fake GoCardless's payer (the Billing Request Flow) and back office (tests/fakes/gocardless_api.py)."""

    def __init__(self, api: FakeGoCardless) -> None:
        self.api = api

    def authorise(self, setup: MandateSetup) -> str:
        """The payer finishes the flow: GoCardless makes a mandate of its own (MD...) from the billing request."""
        return self.api.complete_mandate_flow(setup.ref)

    def cancel_mandate(self, mandate_ref: str) -> None:
        self.api.set_mandate(mandate_ref, "cancelled")

    def submit(self, collection_ref: str) -> None:
        self.api.set_payment(collection_ref, "submitted")

    def confirm(self, collection_ref: str) -> None:
        self.api.set_payment(collection_ref, "confirmed")

    def pay_out(self, collection_ref: str) -> None:
        self.api.set_payment(collection_ref, "paid_out")

    def fail(self, collection_ref: str) -> None:
        self.api.fail(collection_ref)

    def charge_back(self, collection_ref: str) -> None:
        self.api.charge_back(collection_ref)

    def set_mandate_status(self, mandate_ref: str, status: str) -> None:
        self.api.set_mandate(mandate_ref, status)

    def set_collection_status(self, collection_ref: str, status: str) -> None:
        with self.api.lock:
            self.api.payments[collection_ref]["status"] = status

    def setup_count(self) -> int:
        return sum(1 for br in self.api.billing_requests.values() if br["mandate_request"])

    def collection_count(self) -> int:
        return sum(1 for p in self.api.payments.values() if p["links"].get("mandate"))


class TestGoCardlessDirectDebit(DirectDebitContract):
    @pytest.fixture
    def api(self) -> Iterator[FakeGoCardless]:
        server = FakeGoCardless().start()
        yield server
        server.stop()

    @pytest.fixture
    def provider(self, api: FakeGoCardless) -> GoCardlessProvider:
        account = MerchantAccount(name="operating", provider="gocardless", api_base=api.url)
        return GoCardlessProvider(account, "sandbox_token", timeout=2)

    @pytest.fixture
    def world(self, api: FakeGoCardless) -> GoCardlessDirectDebitWorld:
        return GoCardlessDirectDebitWorld(api)
