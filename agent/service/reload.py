"""Hot reload: the config and mapping files are watched (watchdog); a changed file is validated first, a valid
one takes effect without a restart, an invalid one is refused with its errors logged and the old one kept.

Bursts of events (editors write, rename and chmod) are debounced; a polling observer serves network shares,
where inotify sees nothing; a watcher thread that dies is noticed by ``ensure_alive`` and started again. Whatever
goes wrong with an edit (a TOML syntax error, an unreadable file, a bug), the watcher keeps running, the error is
recorded as the ``reload`` component's status (shown by /status) and the next good edit is applied.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from agent.core.errors import ConfigurationError, LedgerlinkError
from agent.core.model import Actor
from agent.core.scrub import scrub
from agent.home.settings import load_settings
from agent.runtime import Runtime, check_plugins, open_connector, resolve_relative
from agent.state import audit
from mappings.format import MappingFile, load_mapping

log = logging.getLogger("ledgerlink.reload")
COMPONENT = "reload"
RELOADER = Actor("system", "reload")  # whoever edited the files is not known; the watcher applied the edit


def rehearse_mapping(mapping: MappingFile, rt: Runtime) -> None:
    """Try a changed mapping's reads and postings statements against the firm database (nothing is changed);
    raise ConfigurationError when the database refuses any, so a missing column is caught before a payment is.
    An unreachable database refuses nothing: the mapping may well be right."""
    if mapping == rt.mapping:
        return
    connector = open_connector(mapping, rt.secrets)
    try:
        refused = [r for r in connector.dry_run() if r.verdict == "refused"]
    finally:
        connector.close()
    if refused:
        raise ConfigurationError("the firm database refused the new mapping:\n"
                                 + "\n".join(f"{r.what}: {r.message}" for r in refused))


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: ConfigWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # our own reads of the files must not look like edits
        paths = {Path(str(event.src_path)).resolve()}
        if getattr(event, "dest_path", None):
            paths.add(Path(str(event.dest_path)).resolve())
        if paths & self.watcher.watched():
            self.watcher.touched()


class ConfigWatcher:
    """Watches <home>/ledgerlink.toml and the mapping file; applies valid changes to the Runtime."""

    def __init__(self, rt: Runtime, *, polling: bool = False, debounce: float = 1.0) -> None:
        self.rt = rt
        self.polling = polling
        self.debounce = debounce
        self.reloads = 0
        self.refusals = 0
        self._pending_since: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._edited = threading.Event()  # wakes the debounce thread, which otherwise sleeps: no timer ticking
        self._observer: BaseObserver | None = None
        self._timer = self._new_timer()

    def watched(self) -> set[Path]:
        return {self.rt.settings.config_path.resolve(), self.rt.settings.mapping_path.resolve()}

    def start(self) -> ConfigWatcher:
        self._start_observer()
        self._timer.start()
        return self

    def _start_observer(self) -> None:
        observer = PollingObserver(timeout=1.0) if self.polling else Observer()
        for folder in {p.parent for p in self.watched()}:
            observer.schedule(_Handler(self), str(folder), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _new_timer(self) -> threading.Thread:
        return threading.Thread(target=self._debounce_loop, name="reload-debounce", daemon=True)

    def ensure_alive(self) -> bool:
        """Restart the observer or the debounce thread if one died; True when it had to."""
        if self._stop.is_set():
            return False
        restarted = False
        if self._observer is not None and not self._observer.is_alive():
            log.warning("the file watcher stopped; starting it again")
            self._start_observer()
            restarted = True
        if self._timer.ident is not None and not self._timer.is_alive():
            log.warning("the reload thread stopped; starting it again")
            self._timer = self._new_timer()
            self._timer.start()
            restarted = True
        return restarted

    def stop(self) -> None:
        self._stop.set()
        self._edited.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)

    def touched(self) -> None:
        with self._lock:
            self._pending_since = time.monotonic()
        self._edited.set()

    def _debounce_loop(self) -> None:
        """Asleep until an edit; then a reload once the files have been quiet for ``debounce`` seconds."""
        while not self._stop.is_set():
            with self._lock:
                quiet = None if self._pending_since is None else time.monotonic() - self._pending_since
                due = quiet is not None and quiet >= self.debounce
                if due:
                    self._pending_since = None
                self._edited.clear()
            if not due:
                self._edited.wait(None if quiet is None else self.debounce - quiet)
                continue
            try:
                self.reload()
            except Exception:  # reload reports its own errors; this thread must outlive even a failed report
                log.exception("reloading the configuration failed")

    def reload(self) -> bool:
        """Validate both files; apply them together or not at all. Never raises for a bad edit."""
        faulty = self.rt.settings.config_path  # the file the entry names when the edit is refused
        try:
            settings = load_settings(self.rt.settings.home)
            faulty = path = settings.mapping_path
            mapping = resolve_relative(load_mapping(path, settings.trust_accounts), path.parent)
            check_plugins(settings, mapping)
            rehearse_mapping(mapping, self.rt)
        except ConfigurationError as exc:
            return self._refused(str(exc), faulty)
        except Exception as exc:  # an error nobody foresaw in reading the files still only refuses this edit
            log.exception("reading the changed configuration failed")
            return self._refused(f"{type(exc).__name__}: {exc}", faulty)
        old = {"settings": self.rt.settings.model_dump(mode="json"), "mapping": self.rt.mapping.model_dump(mode="json")}
        new = {"settings": settings.model_dump(mode="json"), "mapping": mapping.model_dump(mode="json")}
        # the entry names the file(s) whose content changed: an edit of the mapping is not one of ledgerlink.toml
        files = [str(f) for f, part in ((settings.config_path, "settings"), (path, "mapping"))
                 if old[part] != new[part]]
        with self.rt.store.begin() as conn:  # the entry commits only once the swap is done
            audit.record(conn, RELOADER, "config.reload", "config", ", ".join(files) or str(settings.config_path),
                         before={k: audit.changed(old[k], new[k])[0] for k in old},
                         after={k: audit.changed(old[k], new[k])[1] for k in new})
            self.rt.apply(settings, mapping)
        log.info("configuration reloaded (%s)", ", ".join(sorted(str(p) for p in self.watched())))
        self.rt.store.record_ok(COMPONENT)
        self.reloads += 1  # counted once recorded, so whoever waits on the count also sees the status
        return True

    def _refused(self, message: str, faulty: Path) -> bool:
        text = scrub(message)
        log.error("configuration change refused, the running configuration is kept:\n%s", text)
        try:
            with self.rt.store.begin() as conn:
                audit.record(conn, RELOADER, "config.reload", "config", str(faulty), outcome="failed", error=text)
        except LedgerlinkError as exc:
            log.warning("the refused reload was not written to the audit trail: %s", exc)
        self.rt.store.record_error(COMPONENT, f"configuration change refused, the running one is kept: {text}")
        self.refusals += 1  # after the log line and the status: whoever waits on the count finds both
        return False
