"""The access log on disk: one file per UTC day, kept ``--access-log-days`` days.

The terms of use (``seeds/``): "Die von Ihrem Browser übertragenen technischen Daten
werden für kurze Zeit gespeichert … Ihre Internetadresse, die Zugriffszeit, der
verwendete Browser, die angeforderte Seite und ein Statuscode." So the access log holds
exactly those fields (HTTP requests from ``web.accesslog``, RTMP/RTMPT connects from
``rtmp.commands``), never a token, PIN, chat text or cookie, and only for a short time:

- ``<data-dir>/logs/access-YYYY-MM-DD.log`` (UTC date), directory ``0700``, files
  ``0600``;
- with ``--access-log-days N`` the files of today and the ``N - 1`` days before are
  kept, so no entry is older than ``N`` days; older ones are deleted at start-up, when
  the first entry of a new day is written, and by a daily timer (the composition root
  calls :meth:`AccessLog.purge` just after each UTC midnight);
- ``N = 0`` keeps nothing: no file is written and existing ones are deleted.

The lines do not go to standard error as well: whatever collects a service's output
(journald, a container runtime) keeps it under its own retention, not ours.

The clock is injected (``clock``), so the retention is tested with a moved clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

FILE_PATTERN = re.compile(r"access-(\d{4}-\d{2}-\d{2})\.log")
# the loggers whose records go to the access log (and nowhere else, see AccessLog.attach)
HTTP_LOGGER = "aiohttp.access"
RTMP_LOGGER = "gateway.access"


class AccessLog:
    """Daily access log files under ``directory`` with a retention of ``days`` days."""

    def __init__(
        self, directory: Path, days: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        if days < 0:
            raise ValueError("access log days must be 0 or more")
        self.directory = directory
        self.days = days
        self.clock = clock
        self._lock = threading.Lock()  # the handler may be called from executor threads
        self._file: IO[str] | None = None
        self._file_day: str | None = None

    # -- files ----------------------------------------------------------------------------
    @staticmethod
    def day_of(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")

    def path_for(self, day: str) -> Path:
        return self.directory / f"access-{day}.log"

    def files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if FILE_PATTERN.fullmatch(p.name))

    def oldest_kept_day(self, now: float | None = None) -> str | None:
        """The first day whose file is kept (None: nothing is kept)."""
        if self.days == 0:
            return None
        today = datetime.fromtimestamp(self.clock() if now is None else now, UTC).date()
        return (today - timedelta(days=self.days - 1)).isoformat()

    def purge(self, now: float | None = None) -> list[Path]:
        """Delete files older than the retention; the deleted paths."""
        keep_from = self.oldest_kept_day(now)
        removed = []
        with self._lock:
            for path in self.files():
                match = FILE_PATTERN.fullmatch(path.name)
                assert match is not None
                if keep_from is None or match.group(1) < keep_from:
                    if self._file is not None and self._file_day == match.group(1):
                        self._close_file()
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    removed.append(path)
        if removed:
            log.info("access log: %d file(s) past %d day(s) deleted", len(removed), self.days)
        return removed

    def seconds_to_next_purge(self, now: float | None = None) -> float:
        """Seconds until one second after the next UTC midnight."""
        now = self.clock() if now is None else now
        current = datetime.fromtimestamp(now, UTC)
        midnight = datetime(current.year, current.month, current.day, tzinfo=UTC) + timedelta(
            days=1, seconds=1
        )
        return max(1.0, midnight.timestamp() - now)

    # -- writing --------------------------------------------------------------------------
    def write(self, message: str) -> None:
        """One entry, prefixed with the time (UTC, seconds)."""
        if self.days == 0:
            return
        now = self.clock()
        day = self.day_of(now)
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        new_day = False
        with self._lock:
            if self._file is None or self._file_day != day:
                new_day = self._file_day is not None
                self._close_file()
                self._file = self._open(day)
                self._file_day = day
            self._file.write(f"{stamp} {message}\n")
            self._file.flush()
        if new_day:
            self.purge(now)

    def _open(self, day: str) -> IO[str]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)  # also when it existed before (an older layout)
        # 0600 from the start (no window in which another user could open it)
        fd = os.open(self.path_for(day), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8", errors="replace")

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file = None
        self._file_day = None

    def close(self) -> None:
        with self._lock:
            self._close_file()

    # -- logging ----------------------------------------------------------------------------
    def attach(self) -> Callable[[], None]:
        """Route the HTTP and RTMP access loggers here (only here); returns the undo."""
        handler = _Handler(self)
        loggers = [logging.getLogger(name) for name in (HTTP_LOGGER, RTMP_LOGGER)]
        saved = [(lg.propagate, lg.level) for lg in loggers]
        for lg in loggers:
            lg.addHandler(handler)
            lg.propagate = False
            lg.setLevel(logging.INFO)

        def detach() -> None:
            for lg, (propagate, level) in zip(loggers, saved, strict=True):
                lg.removeHandler(handler)
                lg.propagate = propagate
                lg.setLevel(level)
            self.close()

        return detach


async def purge_daily(
    access_log: AccessLog, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> None:
    """Delete what is past the retention just after every UTC midnight, for as long as
    the service runs (also on days without traffic, when no write would purge)."""
    while True:
        await sleep(access_log.seconds_to_next_purge())
        try:
            await asyncio.to_thread(access_log.purge)
        except OSError:
            log.exception("access log purge failed")


class _Handler(logging.Handler):
    def __init__(self, access_log: AccessLog) -> None:
        super().__init__(logging.INFO)
        self.access_log = access_log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                # "access log entry failed": the fact only, never a traceback with values
                message = f"{message} ({record.exc_info[0].__name__ if record.exc_info[0] else ''})"
            self.access_log.write(message.replace("\n", " ").replace("\r", " "))
        except Exception:
            self.handleError(record)
