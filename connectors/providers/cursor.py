"""A gap-free forward read of a provider's newest-first event list, shared by GoCardless and Stripe.

Neither API lists oldest first, and neither promises that an event becomes visible before every newer one:
GoCardless says event creation is asynchronous (gocardless-dotnet ``Services/EventService.cs``), several events can
share one millisecond, and Stripe's ``created`` has whole seconds. So the position is not an event id but a time:
each read lists everything created on or after ``newest - OVERLAP`` (``created_at[gte]`` / ``created[gte]``,
paged with ``after`` / ``starting_after``, the documented direction), drops the events already returned (their ids
within the window are kept in the cursor), and returns the rest oldest first. The state store deduplicates by
event id as well, so a re-read is harmless.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")

OVERLAP = dt.timedelta(minutes=10)  # how late an event may become visible and still be read


@dataclass
class Position:
    """Where a forward read stands: the newest event time returned, and the ids returned within the overlap."""

    newest: dt.datetime | None = None
    seen: dict[str, dt.datetime] = field(default_factory=dict)
    legacy_id: str | None = None  # a cursor written by an older agent: a bare event id

    @classmethod
    def load(cls, cursor: str | None) -> Position:
        if not cursor:
            return cls()
        if not cursor.startswith("{"):
            return cls(legacy_id=cursor)
        data = json.loads(cursor)
        return cls(
            newest=dt.datetime.fromisoformat(data["newest"]) if data.get("newest") else None,
            seen={k: dt.datetime.fromisoformat(v) for k, v in data.get("seen", {}).items()},
        )

    def dump(self) -> str:
        return json.dumps(
            {
                "newest": self.newest.isoformat() if self.newest else None,
                "seen": {k: v.isoformat() for k, v in sorted(self.seen.items(), key=lambda kv: kv[1])},
            },
            separators=(",", ":"),
        )

    @property
    def since(self) -> dt.datetime | None:
        """The lower bound of the next listing."""
        return self.newest - OVERLAP if self.newest else None


@dataclass
class Batch(Generic[R]):
    records: list[R]  # oldest first, none returned before
    position: Position
    has_more: bool


def read_forward(
    position: Position,
    list_since: Callable[[dt.datetime | None], Iterable[R]],
    identity: Callable[[R], tuple[str, dt.datetime]],
    limit: int,
) -> Batch[R]:
    """The next ``limit`` unseen records after ``position``, oldest first, and the position after them.

    ``list_since`` lists every record created on or after the bound (None: all), in any order.
    """
    fresh: list[tuple[dt.datetime, str, R]] = []
    for record in list_since(position.since):
        record_id, created = identity(record)
        if record_id not in position.seen:
            fresh.append((created, record_id, record))
    fresh.sort(key=lambda item: (item[0], item[1]))
    taken, rest = fresh[:limit], fresh[limit:]
    seen = dict(position.seen)
    seen.update({record_id: created for created, record_id, _ in taken})
    newest = max([position.newest, *(created for created, _, _ in taken)], key=_sortable)
    bound = newest - OVERLAP if newest else None
    kept = {k: v for k, v in seen.items() if bound is None or v >= bound}
    return Batch([record for _, _, record in taken], Position(newest=newest, seen=kept), has_more=bool(rest))


def _sortable(value: dt.datetime | None) -> dt.datetime:
    return value or dt.datetime.min.replace(tzinfo=dt.UTC)


def pages(fetch: Callable[[str | None], tuple[Sequence[R], str | None]]) -> Iterable[R]:
    """Every record of a cursor-paged listing: ``fetch(next)`` returns a page and the cursor to the next one."""
    token: str | None = None
    while True:
        records, token = fetch(token)
        yield from records
        if token is None:
            return
