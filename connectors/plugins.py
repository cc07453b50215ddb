"""Entry-point discovery for connector and provider plugins, each checked against its contract when loaded.

A third party ships a plugin by declaring it under ``ledgerlink.connectors`` or ``ledgerlink.providers`` in its
own package's metadata. What it registers must be a subclass of the contract (connectors.database.contract's
``Connector``, connectors.providers.contract's ``Provider``); anything else is refused at once with a message
that names the plugin, rather than failing later inside a job.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

from agent.core.errors import ConfigurationError

CONNECTOR_GROUP = "ledgerlink.connectors"
PROVIDER_GROUP = "ledgerlink.providers"
T = TypeVar("T")


def available(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def load(group: str, name: str, contract: type[T]) -> type[T]:
    """The plugin class registered as ``name``, verified to implement ``contract``."""
    found = available(group)
    if name not in found:
        raise ConfigurationError(
            f"no plugin {name!r} in {group}; installed: {', '.join(sorted(found)) or 'none'}"
        )
    plugin = found[name].load()
    if not (isinstance(plugin, type) and issubclass(plugin, contract)):
        raise ConfigurationError(f"plugin {name!r} in {group} ({found[name].value}) is not a {contract.__name__}: "
                                 "it must subclass the contract and pass connectors.testkit")
    return plugin
