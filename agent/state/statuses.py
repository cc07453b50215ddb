"""Every status vocabulary the state store holds, in one place, so the engines, the API and the exports agree.

The providers' own status sets (connectors.providers.contract) are what a provider reports; these are the values
our tables store, including the internal ones no provider knows (``creating``, ``refused``).
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------------- links
LINK_CREATING = "creating"  # internal: row reserved, the provider has not yet confirmed the link
LINK_OUTSTANDING = "outstanding"
LINK_STATUSES = (LINK_CREATING, LINK_OUTSTANDING, "payment_received", "cancelled", "expired", "failed")
LINK_OPEN = (LINK_CREATING, LINK_OUTSTANDING)  # a debt with one of these has its link: no second one is made

# ------------------------------------------------------------------------------------------------- payments
PAYMENT_UNPOSTED = ("pending", "confirmed")  # money taken or on its way that the firm database may not show yet

# ------------------------------------------------------------------------------------------------- postings
POSTING_STATES = ("pending", "posting", "posted", "retrying", "failed", "incomplete", "removed")
POSTING_IN_FLIGHT = ("pending", "posting", "retrying", "failed")  # allocated, not yet in the firm's books

# ------------------------------------------------------------------------------------------ Direct Debit
COLLECTION_CREATING = "creating"  # internal: row reserved, the provider has not yet confirmed the collection
COLLECTION_REFUSED = "refused"  # internal: the provider refused to create it (note says why); a person decides
COLLECTION_PENDING = ("pending_customer_approval", "pending_submission", "submitted")  # no money moved yet
COLLECTION_LIVE = (COLLECTION_CREATING, *COLLECTION_PENDING)  # will still take money
COLLECTION_CANCELLABLE = ("pending_customer_approval", "pending_submission")

# ------------------------------------------------------------------------------------------------ reminders
REMINDER_DONE = ("sending", "sent", "unknown", "skipped")  # a step in one of these states is never sent (again)
