"""The one base class of every error agentmarket raises on purpose, and the log of recurring failures.

A user-facing surface (the CLI, the HTTP API) shows an `AgentmarketError` as its message alone,
without a traceback: the message names what was wrong and what to do about it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class AgentmarketError(Exception):
    """An expected failure with a message meant for the person who caused it."""


class FailureLog:
    """Logs a failure that recurs (the chain's node is down, the database is unreachable) once per
    ``interval`` seconds per ``kind``: one line, no traceback, counting the repeats it held back.

    A server that loses its chain fails every request and every background round until the chain is
    back; a traceback each time would bury everything else in its log. Thread-safe; ``clock`` is
    monotonic seconds.
    """

    def __init__(
        self, logger: logging.Logger, interval: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger, self.interval, self.clock = logger, interval, clock
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[float, int]] = {}  # kind -> (when last logged, repeats held back since)

    def failed(self, kind: str, message: str) -> bool:
        """Report one failure of ``kind``; logs ``message`` (a warning) unless ``kind`` was logged less than
        ``interval`` seconds ago. Returns whether it logged."""
        now = self.clock()
        with self._lock:
            last = self._kinds.get(kind)
            if last is not None and now - last[0] < self.interval:
                self._kinds[kind] = (last[0], last[1] + 1)
                return False
            held = last[1] if last is not None else 0
            self._kinds[kind] = (now, 0)
        suffix = f" ({held} more since the last report)" if held else ""
        self.logger.warning("%s%s", message, suffix)
        return True

    def recovered(self, kind: str, message: str) -> bool:
        """``kind`` works again: logs ``message`` (info) if a failure of it was reported. Returns whether it logged."""
        with self._lock:
            if self._kinds.pop(kind, None) is None:
                return False
        self.logger.info("%s", message)
        return True

    def failing(self, kind: str) -> bool:
        """Whether a failure of ``kind`` was reported and has not recovered since."""
        with self._lock:
            return kind in self._kinds
