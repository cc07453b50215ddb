"""Configuration changes made by a person, audited: one implementation for the CLI and the API.

The account's settings file is replaced inside the audit entry's transaction, so the entry is committed only
when the file was written, and a refused change (an invalid value) is one ``failed`` entry instead. A credential
(a provider's API key, the SMTP password) is configuration too: its name and where it went are audited, never
its value; the keyring has no transactions, so that entry follows the keyring's write.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigurationError
from agent.core.model import Actor, MerchantAccount
from agent.home.accounts import set_account
from agent.home.secrets import Secrets
from agent.state import StateStore, audit
from agent.state.anchor import SECRET as AUDIT_KEYS


def change_account(store: StateStore, config: Path, actor: Actor, name: str,
                   changes: dict[str, Any]) -> tuple[MerchantAccount, bool]:
    """Write one account's changes (agent.home.accounts.set_account) and audit what changed; returns the account
    and whether the file's comments were kept."""
    with audit.attempt(store, actor, "account.change", "account", name, before=changes) as act:
        text = config.read_text(encoding="utf-8") if config.exists() else ""
        before: dict[str, Any] = tomllib.loads(text).get("accounts", {}).get(name, {})
        with store.begin() as conn:
            account, kept = set_account(config, name, changes)
            old, new = audit.changed(before, {**before, **changes})
            act.record(conn, before=old, after=new)
    return account, kept


def _not_audit_keys(name: str) -> None:
    if name == AUDIT_KEYS:
        raise ConfigurationError(f"{AUDIT_KEYS!r} holds the audit trail's keys and is managed by the agent: "
                                 "'ledgerlink audit rotate-key' replaces the key that seals new entries")


def set_secret(store: StateStore, secrets: Secrets, actor: Actor, name: str, value: str) -> None:
    """Store secret ``name`` and audit it as secret.set (a refusal, such as the env backend, too)."""
    with audit.attempt(store, actor, "secret.set", "secret", name) as act:
        if not value:
            raise ConfigurationError("empty secret value; nothing stored")
        _not_audit_keys(name)
        secrets.set(name, value)
        with store.begin() as conn:
            act.record(conn, after={"stored_in": secrets.describe()})


def delete_secret(store: StateStore, secrets: Secrets, actor: Actor, name: str) -> None:
    """Delete secret ``name`` and audit it as secret.delete."""
    with audit.attempt(store, actor, "secret.delete", "secret", name) as act:
        _not_audit_keys(name)
        secrets.delete(name)
        with store.begin() as conn:
            act.record(conn, before={"stored_in": secrets.describe()})
