"""Entry-point discovery for connector and provider plugins."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from agent.core.errors import ConfigurationError

CONNECTOR_GROUP = "ledgerlink.connectors"
PROVIDER_GROUP = "ledgerlink.providers"


def available(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=group)}


def load(group: str, name: str) -> Any:
    """The plugin class registered as ``name``; a ConfigurationError naming the installed ones otherwise."""
    found = available(group)
    if name not in found:
        raise ConfigurationError(
            f"no plugin {name!r} in {group}; installed: {', '.join(sorted(found)) or 'none'}"
        )
    return found[name].load()
