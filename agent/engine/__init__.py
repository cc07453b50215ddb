"""The flow, one module per stage, in the order money moves (README "How it fits together"):

1. ``sync``        firm DB -> connector (mapping) -> the state store's mirror
2. ``links``       what is owed (agent.state.owed: the mirror's balance less pending collections and money not
                   yet in the books) -> payment links at a provider, by the rules of the Instant Bank Pay and
                   Send for Payment articles
3. ``directdebit`` mandates and automatic collections on the due date (the Direct Debit article)
4. ``sending``     delivery of links by email and SMS; ``reminders`` follow-ups on each account's schedule
5. ``bulk``, ``intake``  links asked for by a bulk file, the firm's request table or the inbox folder
6. ``payments``    provider events -> payments -> the postings outbox (``postings``), written back to the firm DB
                   (a trust account's payment to the matter's client ledger, never to an office bill)
7. ``payouts``     the provider's payouts and their items -> fees (office expense) and one bank deposit each; a
                   trust payout net of fees is a client-money breach; ``refunds`` money back, reversed once
8. ``export``      Sent Pages, Manage Postings, payouts and the audit trail to Excel or CSV

``configuration`` changes accounts and credentials; every engine that changes money or configuration appends to
the audit trail (agent.state.audit) in the change's own transaction, under the Actor it is given.

Each engine takes its dependencies (store, settings, connector, provider lookup, clock) explicitly; the
composition root, agent.runtime, builds them. No engine imports the runtime or an interface.
"""
