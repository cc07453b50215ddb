"""Settings: environment (``LEDGERLINK_*``, nested with ``__``) over ``<home>/ledgerlink.toml`` over defaults."""

from __future__ import annotations

import os
import re
import threading
import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agent.core import system
from agent.core.errors import ConfigurationError
from agent.core.model import MerchantAccount
from agent.home.secrets import Backend

CONFIG_NAME = "ledgerlink.toml"


def default_home() -> Path:
    return system.current().default_home(os.environ, Path.home()).resolve()


class Intervals(BaseModel):
    """Seconds between runs of each service job."""

    model_config = ConfigDict(extra="forbid")

    sync: float = Field(30.0, gt=0)
    payments: float = Field(1.0, gt=0, description="Provider event polling; payment-to-posting latency rides on it.")
    postings: float = Field(1.0, gt=0)
    expiry: float = Field(60.0, gt=0)
    intake: float = Field(5.0, gt=0, description="Request table and inbox folder.")
    reconcile: float = Field(86400.0, gt=0, description="Full reconciliation sweep (every row compared by content, "
                             "deletes noticed); nightly by default.")
    payouts: float = Field(86400.0, gt=0, description="Payouts read from the providers (fees, deposits, client-money "
                           "checks); daily by default, and 'ledgerlink payouts sync' at any time.")


# --- delivery: email (SMTP) and SMS gateway settings (agent/delivery.py) ---


class SmtpSettings(BaseModel):
    """The firm's mail relay. The password is a keyring secret named by ``password_secret``, never a value here."""

    model_config = ConfigDict(extra="forbid")

    host: str = "localhost"
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (port 587), tls (implicit TLS, port 465) or none (a local relay only).")
    user: str | None = None
    password_secret: str | None = Field(None, description="Name of the keyring secret holding the SMTP password.")
    from_address: str | None = Field(None, description="Sender address; required before any email is sent.")
    timeout: float = Field(30.0, gt=0)


class SmsSettings(BaseModel):
    """An HTTP SMS gateway in the shape of Twilio's Messages API; the token is a keyring secret."""

    model_config = ConfigDict(extra="forbid")

    gateway: Literal["twilio"] = "twilio"
    url: str = Field("https://api.twilio.com", description="Base URL of the gateway (tests point it at localhost).")
    account: str | None = Field(None, description="Account SID; also the basic-auth user name.")
    token_secret: str | None = Field(None, description="Name of the keyring secret holding the auth token.")
    from_number: str | None = Field(None, description="Sender number in E.164 form, e.g. +447700900123.")
    timeout: float = Field(30.0, gt=0)


# --- end delivery settings classes ---


class Settings(BaseSettings):
    """Everything the agent reads at start; the mapping file holds the firm-schema side."""

    model_config = SettingsConfigDict(env_prefix="LEDGERLINK_", env_nested_delimiter="__", extra="forbid")

    home: Path = Field(default_factory=default_home, description="Folder holding config, state, logs.")
    state_url: str | None = Field(None, description="State store URL; SQLite in <home>/state.db when unset.")
    mapping: Path = Field(Path("mapping.yaml"), description="Mapping file, relative to home unless absolute.")
    firm_timezone: str = "Europe/London"
    firm_locale: str = Field("en-GB", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
                             description="BCP 47 locale the console formats money and dates in, e.g. en-GB.")
    service_name: str = Field("Legal services", description="Used in the default link description.")
    description_template: str = Field(
        "{service} {date:%d %B %Y}", description="Default link description; {service} and {date} are filled in."
    )
    accounts: dict[str, MerchantAccount] = Field(
        default_factory=lambda: {"operating": MerchantAccount(name="operating")}
    )
    default_account: str = "operating"
    secrets_backend: Backend = "auto"
    sync_batch_size: int = Field(5000, ge=1, le=100_000)
    over_balance: Literal["refuse", "warn"] = "refuse"
    remainder_link: Literal["auto", "offer"] = "offer"
    stale_link: Literal["cancel", "flag"] = "cancel"
    plan_reminder_days: int = Field(3, ge=0, le=30, description=(
        "Days before each payment-plan instalment's charge date that the payer is emailed the amount and date; "
        "0: no such email (a failed instalment is emailed still)."))
    sandbox_port: int = Field(8765, ge=0, le=65535, description="Port of the sandbox pay page on 127.0.0.1.")
    log_json: bool = False
    standby: bool = Field(False, description="With a PostgreSQL state store: wait as the hot standby while another "
                          "agent is active, and take over when its lease runs out (else refuse to start).")
    intervals: Intervals = Field(default_factory=Intervals)
    watch_polling: bool = Field(False, description="Poll config/mapping files (network shares) instead of inotify.")

    # --- local API and log files (agent/api.py, agent/logs.py) ---
    api_host: str = Field("127.0.0.1", description="Address the local API binds; keep it on loopback.")
    api_port: int = Field(8766, ge=0, le=65535, description="Port of the local API; 0 picks a free one.")
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses of reverse proxies whose "
                                       "X-Forwarded-For names the client; none: the socket's peer is the client.")
    log_file_max_bytes: int = Field(10_000_000, ge=10_000, description="Size at which <home>/logs rotates.")
    log_file_backups: int = Field(5, ge=0, le=100, description="Rotated log files kept.")
    # --- end local API and log files ---

    # --- delivery: email and SMS (agent/delivery.py) ---
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    sms: SmsSettings = Field(default_factory=SmsSettings)
    # --- end delivery ---

    @field_validator("firm_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/London") from None
        return value

    @field_validator("accounts", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"name": k, **v} if isinstance(v, dict) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _default_account(self) -> Settings:
        if self.default_account not in self.accounts:
            raise ValueError(f"default_account {self.default_account!r} is not one of {sorted(self.accounts)}")
        return self

    @model_validator(mode="after")
    def _fees_accounts(self) -> Settings:
        """Each account's fees_account (default: the default account) must be an operating account, so a fee is
        never charged to client money; unset, it is filled in here so every part reads the same one."""
        filled = {}
        for name, account in self.accounts.items():
            fees = account.fees_account or (self.default_account if account.kind == "trust" else name)
            other = self.accounts.get(fees)
            if other is None or other.kind != "operating":
                raise ValueError(f"accounts.{name}.fees_account: {fees!r} is not an operating account; name one "
                                 f"of {sorted(n for n, a in self.accounts.items() if a.kind == 'operating')}")
            filled[name] = account.model_copy(update={"fees_account": fees})
        self.accounts = filled
        return self

    @model_validator(mode="after")
    def _sandbox_links_follow_the_port(self) -> Settings:
        """Sandbox links point at the pay page this agent serves on ``sandbox_port``, unless an account sets its
        own api_base; with port 0 (any free port) the address is unknown until it listens, so the default stays."""
        if self.sandbox_port:
            base = f"http://127.0.0.1:{self.sandbox_port}"
            self.accounts = {
                name: account.model_copy(update={"api_base": base})
                if account.provider == "sandbox" and account.api_base is None else account
                for name, account in self.accounts.items()
            }
        return self

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_NAME

    @property
    def mapping_path(self) -> Path:
        return self.mapping if self.mapping.is_absolute() else self.home / self.mapping

    @property
    def state_database_url(self) -> str:
        return self.state_url or f"sqlite:///{self.home / 'state.db'}"

    @property
    def trust_accounts(self) -> list[str]:
        """The accounts holding client money, whose payments the mapping's postings.trust section writes."""
        return [name for name, account in self.accounts.items() if account.kind == "trust"]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.firm_timezone)

    def account(self, name: str | None) -> MerchantAccount:
        key = name or self.default_account
        try:
            return self.accounts[key]
        except KeyError:
            raise ConfigurationError(f"unknown merchant account {key!r}; configured: {sorted(self.accounts)}") from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _TOML_PATH is not None and _TOML_PATH.exists():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_TOML_PATH))
        return tuple(sources)


_TOML_PATH: Path | None = None
# The reload watcher reads settings on its own thread: one reader at a time, or one could see no TOML file at all.
_TOML_LOCK = threading.Lock()


def is_home(home: Path) -> bool:
    """An agent home has its settings file, or is configured by the environment alone (a container names the
    mapping in LEDGERLINK_MAPPING): anywhere else a command would make an empty home and answer from it."""
    return (home / CONFIG_NAME).is_file() or "LEDGERLINK_MAPPING" in os.environ


def load_settings(home: Path | None = None, **overrides: Any) -> Settings:
    """Read settings for ``home`` (or LEDGERLINK_HOME); a ConfigurationError lists every bad key, or the file and
    line of a TOML syntax error."""
    global _TOML_PATH
    home = (home or default_home()).resolve()
    path = home / CONFIG_NAME
    with _TOML_LOCK:
        _TOML_PATH = path
        try:
            return Settings(home=home, **overrides)
        except ValidationError as exc:
            lines = [f"  {'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()]
            raise ConfigurationError(
                f"invalid settings ({path} or LEDGERLINK_* environment):\n" + "\n".join(lines)
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(_toml_problem(path, exc)) from None
        except UnicodeDecodeError:
            raise ConfigurationError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read settings {path}: {exc.strerror}") from None
        finally:
            _TOML_PATH = None


def _toml_problem(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    """'file, line N, column M: message' from tomllib's 'message (at line N, column M)', so the admin knows where
    to look."""
    text = str(exc)
    found = re.fullmatch(r"(.*?)\s*\(at (line \d+, column \d+|end of document)\)", text)
    message, where = (found.group(1), found.group(2)) if found else (text, "")
    return f"{path}{', ' + where if where else ''}: not valid TOML: {message}; fix the file and save it again"
