"""The flow, one module per stage, in the order money moves (README "How it fits together"):

1. ``sync``        firm DB -> connector (mapping) -> the state store's mirror
2. ``links``       what is owed (mirror balance less pending collections and unposted payments) -> payment links
                   at a provider, by the rules of the Instant Bank Pay and Send for Payment articles
3. ``directdebit`` mandates and automatic collections on the due date (the Direct Debit article)
4. ``sending``     delivery of links by email and SMS; ``reminders`` follow-ups on each account's schedule
5. ``bulk``, ``intake``  links asked for by a bulk file, the firm's request table or the inbox folder
6. ``payments``    provider events -> payments -> the postings outbox (``postings``), written back to the firm DB
7. ``export``      Sent Pages and Manage Postings to Excel or CSV

Each engine takes its dependencies (store, settings, connector, provider lookup, clock) explicitly; the
composition root, agent.runtime, builds them. No engine imports the runtime or an interface.
"""
