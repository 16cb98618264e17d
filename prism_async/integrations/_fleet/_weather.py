"""Redis outages as weather: retry with backoff, one WARNING per outage (not per attempt).

Every long-lived user of Redis (a taskiq worker's read loop, heartbeat, acknowledgements and
reclaims) goes through one :class:`Outage`: the first failure logs a WARNING naming what
failed, the following ones (of any of them) log nothing until a call succeeds again, which logs
once that Redis is back and how long it was gone. Each caller waits between its tries with its
own :class:`Backoff`. Nothing here depends on a job queue.
"""

from __future__ import annotations

import logging
import random
import time

from redis.exceptions import RedisError

__all__ = ["OUTAGE_ERRORS", "Backoff", "Outage"]

logger = logging.getLogger("prism_async.fleet")

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
"""What a Redis call raises while the server is down, restarting or unreachable."""


class Backoff:
    """Delays between tries: ``first`` seconds, doubling up to ``cap``, with 20% jitter."""

    def __init__(self, first: float = 0.1, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        """The delay before the next try (and double the one after it)."""
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay * random.uniform(0.8, 1.0)  # spreading retries

    def reset(self) -> None:
        """A call succeeded: the next failure waits ``first`` again."""
        self._next = self.first


class Outage:
    """Whether Redis is unreachable for one user of it, and the log lines that say so.

    Args:
        name: who is affected, the start of each log line (``"taskiq: queue 'q'"``).
        log: the logger of those lines (default ``prism_async.fleet``).
    """

    def __init__(self, name: str, log: logging.Logger | None = None) -> None:
        self.name = name
        self.log = log or logger
        self._since: float | None = None

    @property
    def ongoing(self) -> bool:
        """True between a failed call and the next successful one."""
        return self._since is not None

    def failed(self, doing: str, error: BaseException) -> None:
        """A call failed: a WARNING if it is the first failure of this outage."""
        if self._since is not None:
            self.log.debug("%s: %s failed again: %s", self.name, doing, error)
            return
        self._since = time.monotonic()
        self.log.warning(
            "%s: Redis is unreachable (%s failed: %s: %s); retrying with backoff",
            self.name,
            doing,
            type(error).__name__,
            error,
        )

    def recovered(self) -> None:
        """A call succeeded: ends the outage (logged once) if there was one."""
        if self._since is None:
            return
        lasted, self._since = time.monotonic() - self._since, None
        self.log.warning("%s: Redis is back after %.1f s", self.name, lasted)
