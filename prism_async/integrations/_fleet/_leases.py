"""Download leases: at most one process downloads a generation at a time, fleet-wide.

A lease is one Redis key, ``SET key value NX PX ttl``: the value names its holder (host, pid and
start time, as the ledger's leases do, plus a random token) and it expires unless renewed. The
holder renews it every third of its life while the download runs and deletes it afterwards
(both compare the token first, in one Lua script). A process killed mid-download leaves a lease
that ends by itself after ``ttl``; on the same host, a holder that no longer runs is seen at
once and its lease taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from prism_async.ledger._model import Owner

__all__ = ["DownloadLeases", "Lease", "LeaseLostError"]

logger = logging.getLogger("prism_async.fleet")

T = TypeVar("T")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLostError(Exception):
    """A lease expired (or was taken over) while its work ran: the work was stopped."""


class Lease:
    """One held lease; :meth:`run` does work under it, :meth:`release` gives it back."""

    def __init__(self, leases: DownloadLeases, key: str, value: str) -> None:
        self._leases = leases
        self.key = key
        self.value = value

    async def run(self, work: Awaitable[T]) -> T:
        """Run ``work`` while renewing the lease; stop it if the lease is lost.

        Raises:
            LeaseLostError: the lease could not be renewed (``work`` was cancelled).
        """
        job = asyncio.ensure_future(work)
        renewing = asyncio.create_task(self._renew_until_lost())
        try:
            await asyncio.wait({job, renewing}, return_when=asyncio.FIRST_COMPLETED)
            if job.done():
                return job.result()
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
            raise LeaseLostError(f"the lease {self.key} was lost while its work ran")
        finally:
            for task in (renewing, job):
                task.cancel()
            await asyncio.gather(renewing, job, return_exceptions=True)

    async def _renew_until_lost(self) -> None:
        redis, ttl_ms = self._leases.redis, self._leases.ttl_ms
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            try:
                renewed = await redis.eval(_RENEW, 1, self.key, self.value, ttl_ms)
            except (OSError, RedisError) as exc:
                logger.warning("download lease %s: could not renew: %s", self.key, exc)
                continue  # it may still hold: the next try tells
            if not renewed:
                return

    async def release(self) -> None:
        """Give the lease back (only if it is still ours)."""
        try:
            await self._leases.redis.eval(_RELEASE, 1, self.key, self.value)
        except (OSError, RedisError) as exc:  # it ends by itself after its ttl
            logger.warning("download lease %s: could not release: %s", self.key, exc)


class DownloadLeases:
    """Leases on generation ids, in Redis.

    Args:
        redis: a redis-py asyncio client (``decode_responses=True``).
        prefix: the prefix of the lease keys.
        ttl: seconds a lease lives unless renewed (its holder renews it every third of that).
    """

    def __init__(self, redis: Redis, *, prefix: str, ttl: float = 60.0) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "prism:ledger:", ttl: float = 60.0
    ) -> DownloadLeases:
        """Leases on the Redis at ``url`` (a :class:`~prism_async.ledger.RedisLedger`'s, with
        its ``prefix``); :meth:`aclose` closes the connection it opens."""
        return cls(Redis.from_url(url, decode_responses=True), prefix=prefix, ttl=ttl)

    async def aclose(self) -> None:
        """Close the Redis connection (the leases held meanwhile end after their ``ttl``)."""
        await self.redis.aclose()

    def key(self, generation_id: str) -> str:
        """The Redis key of a generation's lease."""
        return f"{self.prefix}download:{generation_id}"

    async def acquire(self, generation_id: str) -> Lease | None:
        """The lease on ``generation_id``, or None while a live process holds it."""
        key = self.key(generation_id)
        value = f"{Owner.me()}|{secrets.token_hex(8)}"
        for _ in range(2):
            if await self.redis.set(key, value, nx=True, px=self.ttl_ms):
                return Lease(self, key, value)
            holder = await self.redis.get(key)
            if holder is None:
                continue  # it ended just now: try again
            owner = Owner.parse(str(holder).split("|", 1)[0])
            if owner is None or not owner.is_gone():
                return None
            # Its holder died on this host: take it over (only if it is still that holder's).
            logger.warning("download lease %s: its holder %s is gone, taking over", key, owner)
            await self.redis.eval(_RELEASE, 1, key, str(holder))
        return None
