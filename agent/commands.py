"""Registry of CLI command groups defined beside the code they drive (links, payments, postings)."""

from __future__ import annotations

from collections.abc import Callable

from agent.api_cli import register as api
from agent.bulk_cli import register as bulk
from agent.directdebit_cli import register as directdebit
from agent.installer import register as service
from agent.links_cli import register as links
from agent.sending_cli import register as sending
from postings.cli import register as postings

# links first: it creates the payments group that postings adds to
REGISTRARS: list[Callable[..., None]] = [links, postings, api, bulk, service, directdebit, sending]
