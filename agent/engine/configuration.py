"""Configuration changes made by a person, audited: one implementation for the CLI and the API.

The account's settings file is replaced inside the audit entry's transaction, so the entry is committed only
when the file was written, and a refused change (an invalid value) is one ``failed`` entry instead.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from agent.core.model import Actor, MerchantAccount
from agent.home.accounts import set_account
from agent.state import StateStore, audit


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
