"""Plugins: firm-database connectors (source and sink) and payment providers.

Both kinds are found through entry points (``ledgerlink.connectors`` and ``ledgerlink.providers``), so a third
party ships one by declaring it in its own package's metadata; each must pass the contract kit in
``connectors.testkit``.
"""
