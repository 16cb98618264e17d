"""The learnt durations of :class:`~prism_async.ledger.RedisLedger`: each ``add_durations`` is
one Lua script (the samples, and the trimming to the window and the key cap), so atomic across
every process sharing the server; each call is retried while Redis cannot be reached, like the
ledger's other primitives (then :class:`~prism_async.LedgerUnavailableError`). A write whose
answer was lost is run again: its samples may then be kept twice (harmless to an estimate).

Keys, all under the ledger's prefix ``P``:

- ``P durations:of:<key>``: sorted set of the key's samples scored by their creation, each
  member ``<seconds>|<number>`` (``repr`` of the float, and the write number: unique);
- ``P durations:keys``: sorted set, each key scored by the number of its latest write;
- ``P durations:seq``: the write counter (a number per sample).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from redis import asyncio as redis

from . import _redis_scripts as scripts
from ._timings import Sample, check_samples

__all__ = ["RedisTimings"]

T = TypeVar("T")


class RedisTimings:
    """Mixed into :class:`~prism_async.ledger.RedisLedger` (which provides ``prefix``, the
    :class:`~prism_async.ledger._timings.Timings` limits, and ``_eval`` and ``_call``, from
    :class:`~prism_async.ledger._redis_money.RedisMoney`)."""

    prefix: str
    DURATION_WINDOW: int
    DURATION_KEYS: int

    async def _eval(self, script: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        raise NotImplementedError  # pragma: no cover - RedisMoney's

    async def _call(self, command: Callable[[redis.Redis], Awaitable[T]]) -> T:
        raise NotImplementedError  # pragma: no cover - RedisMoney's

    def _durations_key(self, name: str) -> str:
        return f"{self.prefix}durations:{name}"

    async def add_durations(self, samples: Sequence[Sample]) -> None:
        """Add the samples and trim to the window and the key cap (one script)."""
        checked = check_samples(samples)
        if not checked:
            return
        lists = self._durations_key("of:")
        keys = [self._durations_key("keys"), self._durations_key("seq")]
        keys += [lists + key for key, _, _ in checked]
        args = [lists, str(max(1, self.DURATION_WINDOW)), str(max(1, self.DURATION_KEYS))]
        for key, seconds, created in checked:
            args += [key, repr(seconds), repr(created)]  # texts that read back the same floats
        await self._eval(scripts.ADD_DURATIONS, keys, args)

    async def durations(self, key: str) -> list[float]:
        """The seconds kept for ``key``, the latest created first."""
        found = await self._call(
            lambda c: c.zrevrange(self._durations_key(f"of:{key}"), 0, -1)
        )
        return [float(member.split("|")[0]) for member in cast(list[str], found)]
