"""``/settings/accounts/{name}`` (admin): an account's message, disclaimer, reminders and expiry.

Written with agent.engine.configuration, the same audited writer as ``ledgerlink accounts set``, so the admin's
comments stay and the change is on the audit trail.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException

from agent.api.auth import ActorDep, RuntimeDep
from agent.api.schemas import AccountSettings
from agent.engine.configuration import change_account
from agent.runtime import Runtime

from .common import MISSING

log = logging.getLogger("ledgerlink.api")
router = APIRouter(tags=["admin"])


def _current(rt: Runtime, name: str) -> AccountSettings:
    if name not in rt.settings.accounts:
        raise HTTPException(404, f"unknown merchant account {name!r}; configured: {sorted(rt.settings.accounts)}")
    return AccountSettings.model_validate(rt.settings.accounts[name])


@router.get("/settings/accounts/{name}", response_model=AccountSettings, responses=MISSING)
def get_account_settings(rt: RuntimeDep, name: str) -> AccountSettings:
    return _current(rt, name)


@router.put("/settings/accounts/{name}", response_model=AccountSettings, responses=MISSING)
def put_account_settings(rt: RuntimeDep, actor: ActorDep, name: str, body: AccountSettings) -> AccountSettings:
    """Change an account's message, disclaimer, reminders or expiry in the config file.

    The running agent hot-reloads the file; the change is in force from then on.
    """
    _current(rt, name)
    changes = body.model_dump(exclude_none=True)
    account, _kept = change_account(rt.store, rt.settings.config_path, actor, name, changes)
    log.info("account %s settings changed through the API: %s", name, sorted(changes))
    return AccountSettings.model_validate(account)
