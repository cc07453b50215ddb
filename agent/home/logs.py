"""Logging: text on the console, JSON lines when ``log_json`` is set, and a rotating file in ``<home>/logs``.

Every handler carries a ScrubFilter. A filter on a logger does not see records that propagate up from its
children, so only the handlers can make sure that no secret value reaches a log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import sys
from typing import TYPE_CHECKING

from agent.core.scrub import ScrubFilter, scrub

if TYPE_CHECKING:
    from agent.home.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_NAME = "ledgerlink.log"
QUIET = ("alembic", "watchdog", "httpx", "httpcore", "keyring")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so a log shipper can read the file without parsing text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = record.exc_text or scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # its stream is a property here
    """Writes to whatever ``sys.stderr`` is at the time, so a swapped stream (tests, a service wrapper) is followed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def _handler(handler: logging.Handler, json_lines: bool) -> logging.Handler:
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ScrubFilter())
    handler.set_name("ledgerlink")  # marks ours, so a second setup replaces them instead of doubling every line
    return handler


def setup_logging(verbose: bool | None = None, settings: Settings | None = None, *,
                  console_level: int = logging.NOTSET) -> None:
    """Console logging for every command; with ``settings`` also the rotating file in the home and log_json.

    ``verbose=None`` keeps the level an earlier call chose, so the service can add its file without knowing -v.
    ``console_level`` quiets the console alone: an interactive command prints what was asked for and leaves its
    log lines to the file (``-v`` shows them).
    """
    root = logging.getLogger()
    if verbose is not None:
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
    elif root.level == logging.WARNING:  # the untouched default
        root.setLevel(logging.INFO)
    for old in [h for h in root.handlers if h.get_name() == "ledgerlink"]:
        root.removeHandler(old)
        old.close()
    json_lines = bool(settings and settings.log_json)
    console = _handler(StderrHandler(), json_lines)
    console.setLevel(console_level)
    root.addHandler(console)
    if settings is not None:
        folder = settings.home / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            folder / LOG_NAME, maxBytes=settings.log_file_max_bytes, backupCount=settings.log_file_backups,
            encoding="utf-8",
        )
        root.addHandler(_handler(file_handler, json_lines))
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
