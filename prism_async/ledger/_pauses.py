"""429 pauses shared through a RedisLedger's Redis (see :mod:`prism_async._transport._limiter`).

One key per ledger, ``{prefix}paused``, whose TTL is the pause left, counted on Redis's own
clock (so no machine's clock matters). A script writes it, keeping the later of two pauses,
and publishes the new length on the channel of the same name. Each client follows it with one
task and one pub/sub connection: subscribe, read the key's TTL (a pause set before the
subscription is learnt too), then learn from every notice as it comes and read the TTL again
every :data:`REFRESH` seconds, so a notice lost with a dropped connection costs at most that.

Redis trouble is logged at WARNING once (and so is its end); meanwhile the client keeps the
pauses it sees itself, and the follower reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from redis import asyncio as redis
from redis.exceptions import RedisError

__all__ = ["REFRESH", "RedisPauses"]

logger = logging.getLogger("prism_async.ledger")

REFRESH = 1.0
"""Seconds between two reads of the pause by a following client (notices come at once)."""

# KEYS: the pause (also the channel); ARGV: its length in ms
_RECORD = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
  redis.call('PUBLISH', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

_TROUBLE = (RedisError, OSError, ValueError)


class RedisPauses:
    """The pauses of every client sharing a RedisLedger (its URL and key prefix).

    Args:
        url: the ledger's Redis URL.
        prefix: the ledger's key prefix; the pause is ``{prefix}paused``.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self.key = f"{prefix}paused"
        self._url = url
        self._prefix = prefix
        self._client: redis.Redis | None = None
        self._down = False

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self._url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
            )
        return self._client

    async def record(self, seconds: float) -> None:
        """Share a pause of ``seconds`` from now, unless a later one is already recorded."""
        try:
            await self._redis().eval(_RECORD, 1, self.key, max(1, math.ceil(seconds * 1000)))
        except _TROUBLE as exc:
            self._trouble(exc)
        else:
            self._fine()

    async def follow(self, learn: Callable[[float], None]) -> None:
        """Call ``learn(seconds_left)`` for the pause in force and every later one, until
        cancelled; reconnect (with backoff) whenever Redis fails."""
        backoff = 0.5
        while True:
            try:
                async with self._redis().pubsub() as pubsub:
                    await pubsub.subscribe(self.key)
                    while True:
                        left = await self._redis().pttl(self.key)
                        if left > 0:
                            learn(left / 1000)
                        self._fine()
                        backoff = 0.5
                        await self._notices(pubsub, learn, time.monotonic() + REFRESH)
            except _TROUBLE as exc:
                self._trouble(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    @staticmethod
    async def _notices(
        pubsub: redis.client.PubSub, learn: Callable[[float], None], until: float
    ) -> None:
        """Learn from every notice that comes before ``until`` (a ``time.monotonic()``)."""
        while (left := until - time.monotonic()) > 0:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is not None and message.get("type") == "message":
                learn(float(message["data"]) / 1000)

    def _trouble(self, exc: BaseException) -> None:
        if self._down:
            logger.debug("429 pauses: Redis still failing: %s", exc)
            return
        self._down = True
        logger.warning(
            "RedisLedger(prefix=%r): 429 pauses cannot be shared through Redis (%s: %s); this "
            "client carries on with the pauses it sees itself",
            self._prefix,
            type(exc).__name__,
            exc,
        )

    def _fine(self) -> None:
        if self._down:
            self._down = False
            logger.warning("RedisLedger(prefix=%r): 429 pauses are shared again", self._prefix)

    async def aclose(self) -> None:
        """Close the connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
