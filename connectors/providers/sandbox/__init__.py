"""The embedded offline provider: links, payments, events in ``<home>/sandbox.db``, paid on a local page.

It lets a firm try Ledgerlink end to end without a provider account, and gives the tests a provider whose every
state can be produced on demand. provider.py is what the agent talks to, world.py the simulated provider's state
and the payer's and banks' moves, money.py its fees, payouts and refunds, paypage.py the local pay page.
"""

from connectors.providers.contract import ProviderError
from connectors.providers.sandbox.paypage import SandboxPayServer
from connectors.providers.sandbox.provider import SandboxProvider
from connectors.providers.sandbox.world import (
    DB_NAME,
    DEFAULT_BASE,
    charge_back,
    confirm_payment,
    expire_due,
    fail_payment,
    fail_payout,
    pay,
    pay_out,
    resubmit_collection,
    set_collection,
    set_mandate,
    settled,
)

__all__ = [
    "DB_NAME",
    "DEFAULT_BASE",
    "ProviderError",
    "SandboxPayServer",
    "SandboxProvider",
    "charge_back",
    "confirm_payment",
    "expire_due",
    "fail_payment",
    "fail_payout",
    "pay",
    "pay_out",
    "resubmit_collection",
    "set_collection",
    "set_mandate",
    "settled",
]
