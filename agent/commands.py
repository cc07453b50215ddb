"""Registry of CLI command groups defined beside the code they drive (links, payments, postings)."""

from __future__ import annotations

from collections.abc import Callable

REGISTRARS: list[Callable[..., None]] = []
