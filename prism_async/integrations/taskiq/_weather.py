"""Redis outages as weather: retry with backoff, one WARNING per outage (not per attempt).

A worker's read loop, heartbeat, acknowledgements and reclaims all go through one
:class:`Outage` per broker: the first failure logs a WARNING naming what failed, the following
ones (of any of them) log nothing until a call succeeds again, which logs once that Redis is
back and how long it was gone. Each caller waits between its tries with its own
:class:`Backoff`.
"""

from __future__ import annotations

import logging
import random
import time

from redis.exceptions import RedisError

__all__ = ["OUTAGE_ERRORS", "Backoff", "Outage"]

logger = logging.getLogger("prism_async.taskiq")

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
    """Whether Redis is unreachable for this broker, and the log lines that say so."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._since: float | None = None

    @property
    def ongoing(self) -> bool:
        """True between a failed call and the next successful one."""
        return self._since is not None

    def failed(self, doing: str, error: BaseException) -> None:
        """A call failed: a WARNING if it is the first failure of this outage."""
        if self._since is not None:
            logger.debug("taskiq: %s: %s failed again: %s", self.name, doing, error)
            return
        self._since = time.monotonic()
        logger.warning(
            "taskiq: %s: Redis is unreachable (%s failed: %s: %s); retrying with backoff",
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
        logger.warning("taskiq: %s: Redis is back after %.1f s", self.name, lasted)
