"""The Direct Debit contract kit (connectors/testkit/directdebit.py), run for the sandbox, and for GoCardless and
Stripe's saved cards against their local fake APIs."""

from __future__ import annotations

import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.gocardless_api import FakeGoCardless
from fakes.stripe_api import SECRET, FakeStripe

from agent.core.model import MerchantAccount
from connectors.providers import sandbox
from connectors.providers.contract import MandateSetup
from connectors.providers.gocardless import GoCardlessProvider
from connectors.providers.sandbox import SandboxPayServer, SandboxProvider
from connectors.providers.stripe import StripeProvider
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

    def decline_next(self) -> None:
        raise AssertionError("the sandbox holds collections: its bank refuses a submitted one (fail)")

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

    def decline_next(self) -> None:
        raise AssertionError("GoCardless holds payments: the payer's bank fails a submitted one (fail)")

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


# --- Stripe's saved cards against the fake API --------------------------------------------------------------


class StripeDirectDebitWorld:
    """The fake Stripe's payer (a setup-mode Checkout Session), the firm's dashboard and the card networks
    (tests/fakes/stripe_api.py). A card is charged when its PaymentIntent is confirmed, so there is nothing to
    submit or confirm afterwards; what follows a charge is a dispute, and the balance's payout."""

    def __init__(self, api: FakeStripe) -> None:
        self.api = api

    def authorise(self, setup: MandateSetup) -> str:
        """The payer enters a card on the setup session: the mandate is the SetupIntent it made (seti_...)."""
        return self.api.complete_setup(setup.ref)

    def cancel_mandate(self, mandate_ref: str) -> None:
        """The payer asks the firm to forget the card: ``POST /v1/payment_methods/{id}/detach``, which Stripe
        announces as payment_method.detached; the card can be charged no more (stripe-python _payment_method.py
        ``detach``: "Detachment is permanent and irreversible")."""
        self.api.detach(self.api.setup_intents[mandate_ref]["payment_method"])

    def submit(self, collection_ref: str) -> None:
        raise AssertionError("a card charge has no stage at the bank: the PaymentIntent is collected when made")

    def confirm(self, collection_ref: str) -> None:
        raise AssertionError("a card charge has no stage at the bank: the PaymentIntent is collected when made")

    def fail(self, collection_ref: str) -> None:
        raise AssertionError("a card charge is declined when it is made (decline_next), not afterwards")

    def decline_next(self) -> None:
        """The card's bank declines the next charge: 402 card_declined (docs.stripe.com/declines)."""
        self.api.decline_next()

    def pay_out(self, collection_ref: str) -> None:
        """Stripe pays the balance out (an automatic payout carrying the charge's balance transaction); the
        PaymentIntent itself does not change."""
        self.api.settle()

    def charge_back(self, collection_ref: str) -> None:
        """The payer disputes the charge: charge.dispute.created, the funds withdrawn."""
        self.api.charge_back(collection_ref)

    def set_mandate_status(self, mandate_ref: str, status: str) -> None:
        """A succeeded SetupIntent is active until its card is detached; it never moves back, nor to another
        status (stripe-python _setup_intent.py ``cancel``: only requires_* SetupIntents can be canceled)."""
        card = self.api.payment_methods[self.api.setup_intents[mandate_ref]["payment_method"]]
        if status == "cancelled":
            self.api.detach(card["id"])
        else:
            assert status == "active" and card["customer"] is not None, f"a saved card is never made {status}"

    def set_collection_status(self, collection_ref: str, status: str) -> None:
        """Stripe's record of the PaymentIntent, in its own words (stripe-python _payment_intent.py ``status``;
        docs.stripe.com/payments/paymentintents/lifecycle): collected is succeeded, at the network processing,
        declined requires_payment_method with its last_payment_error, waiting for the payer's authentication
        requires_action, cancelled canceled; charged back is a succeeded one whose charge is disputed."""
        if status == "charged_back":
            self.api.charge_back(collection_ref)
            return
        words = {"confirmed": "succeeded", "submitted": "processing", "failed": "requires_payment_method",
                 "pending_customer_approval": "requires_action", "cancelled": "canceled"}
        assert status in words, f"a card PaymentIntent has no status for {status}"
        self.api.set_intent_status(collection_ref, words[status])
        if status == "failed":
            with self.api.lock:
                self.api.payment_intents[collection_ref]["last_payment_error"] = {
                    "type": "card_error", "code": "card_declined", "decline_code": "generic_decline"}

    def setup_count(self) -> int:
        return sum(1 for session in self.api.sessions.values() if session["mode"] == "setup")

    def collection_count(self) -> int:
        """PaymentIntents made otherwise than by a Checkout Session (a paid link's)."""
        of_links = {session["payment_intent"] for session in self.api.sessions.values()}
        return sum(1 for ref in self.api.payment_intents if ref not in of_links)


class TestStripeDirectDebit(DirectDebitContract):
    @pytest.fixture
    def api(self) -> Iterator[FakeStripe]:
        server = FakeStripe().start()
        yield server
        server.stop()

    @pytest.fixture
    def provider(self, api: FakeStripe) -> StripeProvider:
        account = MerchantAccount(name="operating", provider="stripe", api_base=api.url)
        return StripeProvider(account, "sk_test_fake", webhook_secret=SECRET, timeout=2)

    @pytest.fixture
    def world(self, api: FakeStripe) -> StripeDirectDebitWorld:
        return StripeDirectDebitWorld(api)
