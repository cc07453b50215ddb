"""A production home for a firm (``ledgerlink init --firm URL``): settings with one office account and the mapping
the assistant proposed, no demo accounts, no demo database."""

from __future__ import annotations

import json
from pathlib import Path

from agent.core.errors import ConfigurationError
from agent.home.settings import CONFIG_NAME

__all__ = ["firm_config", "init_firm_home"]


def firm_config(name: str, currency: str) -> str:
    """Settings for a firm starting out: the offline sandbox until the admin names their provider."""
    return f"""\
# Ledgerlink agent settings for {name}. Environment variables LEDGERLINK_<NAME> override these (nested: __).
mapping = "mapping.yaml"
firm_timezone = "Europe/London"
service_name = {json.dumps(name, ensure_ascii=False)}
# secrets_backend = "auto"   # auto | file (headless servers) | env (containers)

# The office (operating) account. The sandbox takes no real money: try the agent on it first, then set provider
# to "gocardless" or "stripe" and credentials = "secret:NAME" (stored with 'ledgerlink secrets set NAME').
# A client-money account is its own [accounts.NAME] with kind = "client"; its payments need postings.trust in the
# mapping (mappings/README.md).
[accounts.operating]
provider = "sandbox"
currency = "{currency}"
expiry_days = 7
disclaimer = ""
"""


def init_firm_home(home: Path, mapping_text: str, *, name: str, currency: str, force: bool = False) -> list[Path]:
    """Write ``ledgerlink.toml`` and ``mapping.yaml`` into ``home``; a home already set up is left alone unless
    ``force``, since its settings, accounts and mapping are the firm's own work."""
    config, mapping = home / CONFIG_NAME, home / "mapping.yaml"
    existing = [p for p in (config, mapping) if p.exists()]
    if existing and not force:
        raise ConfigurationError(f"{home} is already set up ({', '.join(p.name for p in existing)}); choose an "
                                 "empty folder with --home, or add --force to replace them")
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(firm_config(name, currency), encoding="utf-8")
    mapping.write_text(mapping_text, encoding="utf-8")
    return [config, mapping]
