"""Ledgerlink agent: the service, CLI, configuration, state store and link engine.

Data flow (one line per hop; each hop is one module):

    firm DB -> connectors (mapping.py)   -> agent.sync        -> state store (agent.state)
    state store -> agent.links (rules)   -> connectors.providers (payment links)
    provider events -> agent.payments    -> postings.outbox   -> connectors (mapping postings) -> firm DB
"""

__version__ = "0.1.0"
