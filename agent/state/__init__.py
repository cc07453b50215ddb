"""The agent's own state store: a mirror of the firm's debts, links, payments and the postings outbox."""

from agent.state.store import StateStore

__all__ = ["StateStore"]
