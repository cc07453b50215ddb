"""Secrets by reference: config and mappings name a secret, the value lives in the OS keyring or the environment.

Backends, chosen by ``secrets_backend``:

* ``auto`` - the OS keyring (Windows Credential Manager, macOS Keychain, Secret Service on a Linux desktop);
  on a headless Linux server with no Secret Service it falls back to ``file``.
* ``file`` - for headless servers under a service account: keyrings.alt's file keyring in ``<home>/secrets``,
  directory 0700 and file 0600, owned by the service user (protected the way an SSH key is).
* ``env``  - containers: only ``LEDGERLINK_SECRET_<NAME>`` variables.

With every backend an environment variable ``LEDGERLINK_SECRET_<NAME>`` is the fallback. Every value handed out
is remembered so logs and error messages can be scrubbed of it.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Literal

import keyring
import keyring.backend
import keyring.errors

from agent.core import system
from agent.core.errors import ConfigurationError
from agent.core.scrub import reveal

SERVICE = "ledgerlink"
REFERENCE_PREFIX = "secret:"
Backend = Literal["auto", "file", "env"]

def env_name(name: str) -> str:
    return "LEDGERLINK_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _file_keyring(home: Path) -> keyring.backend.KeyringBackend:
    from keyrings.alt.file import PlaintextKeyring

    folder = home / "secrets"
    folder.mkdir(parents=True, exist_ok=True)
    system.current().make_private(folder)
    backend = PlaintextKeyring()
    backend.file_path = str(folder / "keyring.cfg")
    result: keyring.backend.KeyringBackend = backend
    return result


def _usable_os_keyring() -> keyring.backend.KeyringBackend | None:
    backend = keyring.get_keyring()
    if backend.priority < 1 or type(backend).__module__.startswith(("keyring.backends.fail", "keyrings.alt")):
        return None
    if type(backend).__name__ == "ChainerBackend" and not backend.backends:  # type: ignore[attr-defined]
        return None
    return backend


class Secrets:
    """Resolves secret names for one agent home."""

    def __init__(self, home: Path, backend: Backend = "auto") -> None:
        self.home = home
        self.backend_name = backend
        self._backend: keyring.backend.KeyringBackend | None
        if backend == "env":
            self._backend = None
        elif backend == "file":
            self._backend = _file_keyring(home)
        else:
            self._backend = _usable_os_keyring() or _file_keyring(home)

    def describe(self) -> str:
        if self._backend is None:
            return "environment variables only"
        return f"{type(self._backend).__module__}.{type(self._backend).__name__}"

    def set(self, name: str, value: str) -> None:
        if self._backend is None:
            raise ConfigurationError(
                f"secrets_backend is 'env': set the environment variable {env_name(name)} instead"
            )
        self._backend.set_password(SERVICE, name, value)
        path = getattr(self._backend, "file_path", None)
        if path and os.path.exists(path):
            system.current().make_private(Path(path))

    def delete(self, name: str) -> None:
        if self._backend is not None:
            with contextlib.suppress(keyring.errors.PasswordDeleteError):
                self._backend.delete_password(SERVICE, name)

    def find(self, name: str) -> str | None:
        """The value of secret ``name``, or None when it is not set anywhere."""
        value: str | None = None
        if self._backend is not None:
            try:
                value = self._backend.get_password(SERVICE, name)
            except keyring.errors.KeyringError as exc:
                raise ConfigurationError(f"keyring backend {self.describe()} failed: {exc}") from None
        if value is None:
            value = os.environ.get(env_name(name))
        if value is not None:
            reveal(value)
        return value

    def get(self, name: str) -> str:
        """The value of secret ``name``; a ConfigurationError that says how to set it when it is missing."""
        value = self.find(name)
        if value is None:
            raise ConfigurationError(
                f"secret {name!r} is not set; run 'ledgerlink secrets set {name}' "
                f"or set the environment variable {env_name(name)}"
            )
        return value

    def resolve(self, reference: str | None) -> str | None:
        """Resolve 'secret:NAME'; anything else is refused so a literal token never sits in a config file."""
        if reference is None:
            return None
        if not reference.startswith(REFERENCE_PREFIX):
            raise ConfigurationError(
                "credentials must be a reference like 'secret:NAME', not the value itself "
                "(store it with 'ledgerlink secrets set NAME')"
            )
        return self.get(reference.removeprefix(REFERENCE_PREFIX))
