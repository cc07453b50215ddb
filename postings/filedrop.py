"""File-drop postings: one file per batch in the folder the matter system imports, written atomically.

The order of steps is what makes a re-run never drop a payment twice:

1. the whole file is written under a hidden temporary name and fsynced;
2. a ``file_drops`` row records the batch, its final filename and the references it holds (committed);
3. the temporary file is renamed into place (``os.replace``, atomic) and the folder fsynced;
4. the postings are marked posted.

After a crash, a posting still marked ``posting`` is looked up in ``file_drops``. Not there: its file never got
past step 1, so it is written again (orphaned temporary files are deleted). There: if the temporary file is still
present the rename is finished now; if only the final file exists, or neither does (the matter system has already
imported and moved it), the batch was dropped — either way it is marked posted and never written again.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from agent.core.errors import DataError
from agent.state import StateStore
from agent.state.schema import file_drops
from mappings.format import FilePostings
from postings.statements import RENDERERS, Entry, entry

LINE_END = "\r\n"  # what Windows import tools expect; harmless elsewhere


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


class FileDrop:
    """Renders postings with the mapping's columns and drops batch files with the protocol above."""

    def __init__(self, spec: FilePostings, folder: Path | None = None) -> None:
        self.spec = spec
        self.folder = Path(folder or spec.folder)
        prefix, _, suffix = spec.filename.partition("{batch}")
        self._name_parts = (prefix, suffix)

    # ------------------------------------------------------------------ rendering

    def render_row(self, params: Mapping[str, Any]) -> list[str] | Entry:
        """One posting's field texts, or its statement entry; DataError when a fixed-width value does not fit
        (never truncated) or the posting cannot be a statement entry."""
        if self.spec.statement is not None:
            return entry(params, self.spec.statement)
        out = []
        for col in self.spec.columns:
            value = params[col.param]
            text = _text(value)
            if self.spec.format == "fixed":
                assert col.width is not None  # the mapping validator requires widths for fixed layouts
                if len(text) > col.width:
                    raise DataError(f"file column {col.name}: {text!r} is wider than {col.width} characters")
                numeric = isinstance(value, Decimal | int) and not isinstance(value, bool)
                text = text.rjust(col.width) if numeric else text.ljust(col.width)
            elif any(c in text for c in "\r\n"):
                raise DataError(f"file column {col.name}: {text!r} holds a line break")
            out.append(text)
        return out

    def render(self, rows: Sequence[list[str] | Entry], batch: str = "", now: dt.datetime | None = None) -> bytes:
        if self.spec.statement is not None:
            entries = [r for r in rows if isinstance(r, Entry)]
            return RENDERERS[self.spec.format](entries, self.spec.statement, batch, now or dt.datetime.now(dt.UTC))
        lines = [r for r in rows if not isinstance(r, Entry)]
        if self.spec.format == "fixed":
            return "".join("".join(r) + LINE_END for r in lines).encode("utf-8")
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator=LINE_END)
        writer.writerow([c.name for c in self.spec.columns])
        writer.writerows(lines)
        return buf.getvalue().encode("utf-8")

    # ------------------------------------------------------------------ dropping

    def final_path(self, batch: str) -> Path:
        return self.folder / self.spec.filename.format(batch=batch)

    @staticmethod
    def temp_path(final: Path) -> Path:
        return final.with_name(f".{final.name}.tmp")

    def drop(self, store: StateStore, batch: str, references: list[str], content: bytes, now: dt.datetime) -> Path:
        """Steps 1-3 of the protocol; raises OSError (the caller retries) with nothing recorded before step 2."""
        final = self.final_path(batch)
        temp = self.temp_path(final)
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            with open(temp, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            temp.unlink(missing_ok=True)
            raise
        with store.begin() as conn:
            conn.execute(file_drops.insert().values(batch=batch, filename=str(final),
                                                    references=json.dumps(references), written_at=now))
        self._finish(temp, final)
        return final

    def _finish(self, temp: Path, final: Path) -> None:
        os.replace(temp, final)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def recover(self, store: StateStore, references: list[str]) -> set[str]:
        """Which of ``references`` are in a recorded batch (finishing a rename a crash interrupted).

        Also deletes temporary files of batches that were never recorded: their postings are written again.
        """
        wanted = set(references)
        found: set[str] = set()
        with store.read() as conn:
            drops = conn.execute(select(file_drops.c.batch, file_drops.c.filename, file_drops.c.references)).all()
        recorded = set()
        for batch, filename, refs_json in drops:
            recorded.add(batch)
            hit = wanted.intersection(json.loads(refs_json))
            if not hit:
                continue
            final = Path(filename)
            temp = self.temp_path(final)
            if temp.exists():
                self._finish(temp, final)
            found |= hit
        self._remove_orphans(recorded)
        return found

    def _remove_orphans(self, recorded: set[str]) -> None:
        prefix, suffix = self._name_parts
        if not self.folder.is_dir():
            return
        for temp in self.folder.glob(f".{prefix}*{suffix}.tmp"):
            batch = temp.name[1 + len(prefix):len(temp.name) - len(suffix) - len(".tmp")]
            if batch not in recorded:
                temp.unlink(missing_ok=True)

    @staticmethod
    def dropped(store: StateStore, reference: str) -> bool:
        """Whether any recorded batch holds ``reference``."""
        pattern = "%" + json.dumps(reference).replace("%", r"\%").replace("_", r"\_") + "%"
        with store.read() as conn:
            rows = conn.execute(select(file_drops.c.references)
                                .where(file_drops.c.references.like(pattern, escape="\\"))).scalars()
            return any(reference in json.loads(r) for r in rows)
