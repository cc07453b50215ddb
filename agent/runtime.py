"""Wiring: settings -> secrets, mapping, state store, connector and providers, built once per command."""

from __future__ import annotations

import logging
import threading
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from agent.core.scrub import ScrubFilter
from agent.home.secrets import Secrets
from agent.home.settings import Settings, load_settings
from agent.state import StateStore
from connectors.database.contract import Connector
from connectors.plugins import CONNECTOR_GROUP, PROVIDER_GROUP, load
from connectors.providers.contract import Provider
from mappings.format import Mapping, load_mapping

if TYPE_CHECKING:
    from agent.engine.links import LinkEngine


def resolve_relative(mapping: Mapping, folder: Path) -> Mapping:
    """A relative SQLite path in source.url is relative to the mapping file's folder, not the working dir."""
    url = mapping.source.url
    if url and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:" and not Path(path).is_absolute():
            source = mapping.source.model_copy(update={"url": f"sqlite:///{(folder / path).resolve()}"})
            return mapping.model_copy(update={"source": source})
    return mapping


def open_connector(mapping: Mapping, secrets: Secrets) -> Connector:
    cls = load(CONNECTOR_GROUP, mapping.source.connector)
    password = secrets.get(mapping.source.password_secret) if mapping.source.password_secret else None
    return cls(mapping, password)


class Runtime:
    """Lazily built parts of one agent home; every CLI command and the service share this."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._providers: dict[str, Provider] = {}
        self._swap = threading.Lock()
        logging.getLogger("ledgerlink").addFilter(ScrubFilter())

    @classmethod
    def for_home(cls, home: Path | None = None) -> Runtime:
        return cls(load_settings(home))

    @cached_property
    def secrets(self) -> Secrets:
        return Secrets(self.settings.home, self.settings.secrets_backend)

    @cached_property
    def mapping(self) -> Mapping:
        path = self.settings.mapping_path
        return resolve_relative(load_mapping(path), path.parent)

    @cached_property
    def store(self) -> StateStore:
        return StateStore(self.settings.state_database_url)

    @cached_property
    def connector(self) -> Connector:
        return open_connector(self.mapping, self.secrets)

    @cached_property
    def links(self) -> LinkEngine:
        from agent.engine.links import LinkEngine

        return LinkEngine(self.settings, self.store, self.provider)

    def provider(self, account_name: str | None = None) -> Provider:
        account = self.settings.account(account_name)
        if account.name not in self._providers:
            cls = load(PROVIDER_GROUP, account.provider)
            credentials = self.secrets.resolve(account.credentials)
            extra = {"webhook_secret": self.secrets.resolve(account.webhook_secret)} if account.webhook_secret else {}
            self._providers[account.name] = cls(account, credentials, home=str(self.settings.home), **extra)
        return self._providers[account.name]

    def apply(self, settings: Settings, mapping: Mapping) -> None:
        """Swap in a validated configuration: the next use of connector, links or a provider builds it anew."""
        with self._swap:
            old_connector = self.__dict__.pop("connector", None)
            old_providers, self._providers = self._providers, {}
            self.settings = settings
            self.__dict__["mapping"] = mapping
            self.__dict__.pop("links", None)
            self.__dict__.pop("secrets", None)
        if old_connector is not None:
            old_connector.close()
        for provider in old_providers.values():
            provider.close()

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        if "connector" in self.__dict__:
            self.connector.close()
        if "store" in self.__dict__:
            self.store.close()
