"""Registry of CLI command groups defined beside the code they drive (links, payments, postings)."""

from __future__ import annotations

from collections.abc import Callable

from agent.links_cli import register as links

REGISTRARS: list[Callable[..., None]] = [links]
