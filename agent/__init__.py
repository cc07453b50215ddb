"""Ledgerlink agent: the service, CLI, configuration, state store and link engine.

Data flow (one line per hop; each hop is one module):

    firm DB -> connectors (mapping.py)   -> agent.engine.sync        -> state store (agent.state)
    state store -> agent.engine.links (rules)   -> connectors.providers (payment links)
    provider events -> agent.engine.payments    -> postings.outbox   -> connectors (mapping postings) -> firm DB
"""

__version__ = "0.2.0"
