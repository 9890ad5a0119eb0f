"""A source's outages logged once each: the HTTP service asks its sources (the Dagster webserver, the snapshot
index) on every request and every ``/metrics`` scrape (every 15 s), so a source that stays down would
otherwise fill the log with the same warning."""

from __future__ import annotations

import logging
import threading


class OutageLog:
    """The outages of one source (``source``: how log lines name it), logged on ``logger``: the first failure of
    an outage at WARNING, the later ones at DEBUG, and its end once at INFO (``<source> answers again``).
    Shared by the threads that ask the source."""

    def __init__(self, logger: logging.Logger, source: str):
        self._logger, self.source = logger, source
        self._down = False
        self._lock = threading.Lock()

    def down(self, message: str) -> None:
        """The source failed to answer: ``message`` at WARNING if this starts an outage, else at DEBUG."""
        with self._lock:
            level = logging.DEBUG if self._down else logging.WARNING
            self._down = True
        self._logger.log(level, "%s", message)

    def answered(self) -> None:
        """The source answered (an error it answers with included): an outage, if any, is over."""
        with self._lock:
            was_down, self._down = self._down, False
        if was_down:
            self._logger.info("%s answers again", self.source)
