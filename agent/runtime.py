"""The composition root: settings -> secrets, mapping, state store, connector, providers and the engines.

Only the interfaces (agent.cli, agent.api, agent.service) import this. Each engine is built here once, from the
parts it needs, and built again after a hot reload swaps the configuration.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigurationError, LedgerlinkError
from agent.core.scrub import ScrubFilter
from agent.engine.directdebit import DirectDebit
from agent.engine.export import Exporter
from agent.engine.links import LinkEngine
from agent.engine.payouts import Payouts
from agent.engine.plan_reminders import PlanReminders
from agent.engine.plans import Plans
from agent.engine.refunds import Refunds
from agent.engine.reminders import Reminders
from agent.engine.sending import Sender
from agent.engine.sync import Syncer
from agent.home.secrets import Secrets
from agent.home.settings import Settings, load_settings
from agent.state import StateStore
from agent.state.accounts import stamp_kinds
from agent.state.anchor import CHECKPOINTS, SECRET, Checkpoint, Checkpoints, Latest, Seal, firm_latest
from connectors.database.contract import Connector
from connectors.plugins import CONNECTOR_GROUP, PROVIDER_GROUP, available, load
from connectors.providers.contract import Provider
from mappings.format import MappingFile, load_mapping
from postings.outbox import Outbox

log = logging.getLogger("ledgerlink")


def resolve_relative(mapping: MappingFile, folder: Path) -> MappingFile:
    """A relative SQLite path in source.url is relative to the mapping file's folder, not the working dir."""
    url = mapping.source.url
    if url and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:" and not Path(path).is_absolute():
            source = mapping.source.model_copy(update={"url": f"sqlite:///{(folder / path).resolve()}"})
            return mapping.model_copy(update={"source": source})
    return mapping


def check_plugins(settings: Settings, mapping: MappingFile) -> None:
    """Every plugin the configuration names, loaded and verified, and its options read: a broken plugin or a
    mistyped option is refused when the configuration is read (start, check, hot reload), not at first use."""
    load(CONNECTOR_GROUP, mapping.source.connector, Connector).options_of(mapping.source)
    for account in settings.accounts.values():
        load(PROVIDER_GROUP, account.provider, Provider).options_of(account)


def connector_options() -> dict[str, dict[str, Any]]:
    """Each installed connector's name and the JSON Schema of its ``source.options``, for the mapping schema."""
    return {name: load(CONNECTOR_GROUP, name, Connector).Options.model_json_schema()
            for name in available(CONNECTOR_GROUP)}


def open_connector(mapping: MappingFile, secrets: Secrets) -> Connector:
    cls = load(CONNECTOR_GROUP, mapping.source.connector, Connector)
    password = secrets.get(mapping.source.password_secret) if mapping.source.password_secret else None
    return cls(mapping, password)


# what a hot reload rebuilds: everything built from the settings, the mapping or the connector
ENGINES = ("secrets", "syncer", "outbox", "links", "directdebit", "plans", "sender", "reminders", "plan_reminders",
           "exporter", "payouts", "refunds")


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
    def mapping(self) -> MappingFile:
        path = self.settings.mapping_path
        mapping = resolve_relative(load_mapping(path, self.settings.trust_accounts), path.parent)
        check_plugins(self.settings, mapping)
        return mapping

    @cached_property
    def audit_seal(self) -> Seal:
        """The audit trail's keys, in the secrets backend (agent.state.anchor)."""
        return Seal(lambda: self.secrets.find(SECRET), lambda text: self.secrets.set(SECRET, text))

    @cached_property
    def store(self) -> StateStore:
        store = StateStore(self.settings.state_database_url)
        if store.upgraded:  # rows an older agent made carry no account kind: fix today's, once
            with store.begin() as conn:
                stamp_kinds(conn, self.account_kinds())
        store.seal = self.audit_seal
        try:
            made = self.audit_seal.establish(store)
        except ConfigurationError as exc:  # an environment-only backend cannot store them: doctor says so
            log.warning("the audit trail is not sealed: %s", exc)
        else:
            if made:  # keyed from the next entry; this first checkpoint seals the entries before it as they are
                Checkpoints(store, self.audit_seal, self.checkpoint_file, self._checkpoint_to_firm).write(force=True)
        return store

    @property
    def checkpoint_file(self) -> Path:
        return self.settings.home / CHECKPOINTS

    @cached_property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self.store, self.audit_seal, self.checkpoint_file, self._checkpoint_to_firm)

    def _checkpoint_to_firm(self, checkpoint: Checkpoint) -> None:
        """A copy of each checkpoint in the firm's own database, when the mapping (as it is now) has an audit
        section: somewhere the state store's holder cannot rewrite alone."""
        if self.mapping.audit is not None:
            self.connector.write_checkpoint(checkpoint.fields())

    def firm_checkpoints(self) -> list[Latest]:
        """The newest checkpoint of the firm database's audit table, for ``audit verify`` (none without one)."""
        keys = self.audit_seal.keys
        if self.mapping.audit is None or keys is None:
            return []
        return [firm_latest(self.mapping.audit.table, self.connector.newest_checkpoints(), keys)]

    def account_kinds(self) -> dict[str, str]:
        """Each account's kind as the settings say now (rows keep the kind they were made with)."""
        return {name: account.kind for name, account in self.settings.accounts.items()}

    @cached_property
    def connector(self) -> Connector:
        return open_connector(self.mapping, self.secrets)

    @cached_property
    def links(self) -> LinkEngine:
        return LinkEngine(self.settings, self.store, self.provider)

    @cached_property
    def syncer(self) -> Syncer:
        return Syncer(self.store, self.connector, self.settings.sync_batch_size)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.store, self.connector, self.mapping)

    @cached_property
    def directdebit(self) -> DirectDebit:
        return DirectDebit(self.settings, self.store, self.provider, retry_initial=self.links.retry_initial)

    @cached_property
    def plans(self) -> Plans:
        return Plans(self.settings, self.store, self.directdebit)

    @cached_property
    def payouts(self) -> Payouts:
        return Payouts(self.settings, self.store, self.provider, self.mapping, retry_initial=self.links.retry_initial)

    @cached_property
    def refunds(self) -> Refunds:
        return Refunds(self.store, self.provider, retry_initial=self.links.retry_initial)

    @cached_property
    def sender(self) -> Sender:
        return Sender(self.settings, self.store, self.secrets, self.links)

    @cached_property
    def reminders(self) -> Reminders:
        return Reminders(self.settings, self.store, self.sender)

    @cached_property
    def plan_reminders(self) -> PlanReminders:
        return PlanReminders(self.settings, self.store, self.sender)

    @cached_property
    def exporter(self) -> Exporter:
        return Exporter(self.store, self.settings.zone)

    def provider(self, account_name: str | None = None) -> Provider:
        account = self.settings.account(account_name)
        if account.name not in self._providers:
            cls = load(PROVIDER_GROUP, account.provider, Provider)
            credentials = self.secrets.resolve(account.credentials)
            extra = {"webhook_secret": self.secrets.resolve(account.webhook_secret)} if account.webhook_secret else {}
            self._providers[account.name] = cls(account, credentials, home=str(self.settings.home), **extra)
        return self._providers[account.name]

    def apply(self, settings: Settings, mapping: MappingFile) -> None:
        """Swap in a validated configuration: the next use of connector, links or a provider builds it anew."""
        with self._swap:
            old_connector = self.__dict__.pop("connector", None)
            old_providers, self._providers = self._providers, {}
            self.settings = settings
            self.__dict__["mapping"] = mapping
            for built in ENGINES:
                self.__dict__.pop(built, None)
        if old_connector is not None:
            old_connector.close()
        for provider in old_providers.values():
            provider.close()

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        if "store" in self.__dict__:
            try:  # a command that wrote entries leaves them checkpointed, service running or not
                self.checkpoints.write()
            except (LedgerlinkError, OSError) as exc:
                log.warning("no audit checkpoint written: %s", exc)
            self.store.close()
        if "connector" in self.__dict__:
            self.connector.close()
