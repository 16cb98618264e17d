"""RedisLedger: the same ledger on Redis, for a fleet of processes on many machines.

redis-py's asyncio client (``pip install "prism-async[redis]"``). Each submission is a hash
(``v``: its version, ``doc``: the row as JSON); every primitive that changes more than one key
is one Lua script, so it is atomic; the compare-and-set compares ``v``. Money-safe use needs
the server to fsync every write (``appendonly yes``, ``appendfsync always``): the ledger checks
at first use and logs a WARNING when the server says otherwise. The money primitives (charges,
budgets, reservations, the 402 pause) are :class:`~prism_async.ledger._redis_money.RedisMoney`'s,
the learnt durations :class:`~prism_async.ledger._redis_timings.RedisTimings`'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import attrs
from redis import asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from .._errors import InvalidRequestError, LedgerUnavailableError
from ._base import Ledger
from ._model import GenerationRecord, Submission
from ._redis_money import RedisMoney
from ._redis_scripts import INSERT as _INSERT
from ._redis_scripts import SWAP as _SWAP
from ._redis_timings import RedisTimings

__all__ = ["RedisLedger"]

logger = logging.getLogger("prism_async.ledger")

_PAGE = 500
_INDEXED = ("sending", "ambiguous")

_TIMES = ("created_at", "updated_at", "sent_at", "lease_expires")


def _encode(submission: Submission) -> str:
    fields = attrs.asdict(submission, recurse=False)
    for name in _TIMES:
        moment = fields[name]
        fields[name] = None if moment is None else moment.timestamp()
    fields["generation_ids"] = list(submission.generation_ids)
    return json.dumps(fields, sort_keys=True)


def _decode(doc: str | bytes) -> Submission:
    fields: dict[str, Any] = json.loads(doc)
    for name in _TIMES:
        seconds = fields[name]
        fields[name] = None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)
    fields["generation_ids"] = tuple(fields["generation_ids"])
    return Submission(**fields)


_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
"""What an unreachable Redis raises (BusyLoadingError, while it loads its data, is one)."""

T = TypeVar("T")
P = ParamSpec("P")


def _retrying(
    method: Callable[Concatenate[RedisLedger, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[RedisLedger, P], Coroutine[Any, Any, T]]:
    """Run a primitive again while Redis cannot be reached (see ``retry_for``).

    A write whose answer was lost may be run again: the scripts are compare-and-set, so a
    repeated insert or swap changes nothing and reports False (the rules read the row back).
    """

    async def call(ledger: RedisLedger, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await ledger._retry(lambda: method(ledger, *args, **kwargs))

    call.__name__, call.__qualname__, call.__doc__ = (
        method.__name__,
        method.__qualname__,
        method.__doc__,
    )
    return call


class RedisLedger(RedisMoney, RedisTimings, Ledger):
    """A ledger on a Redis server shared by every process of a fleet.

    Args:
        url: e.g. ``redis://localhost:6379/0`` (``rediss://`` for TLS).
        prefix: the prefix of every Redis key it uses (one ledger per prefix).
        retry_for: seconds a call keeps retrying (with backoff) while Redis cannot be reached
            (refused, reset, timed out, loading) before it raises
            :class:`~prism_async.LedgerUnavailableError`; an outage is logged at WARNING once,
            and so is the recovery.
        reconcile_window: seconds an ambiguous key waits for its generations to show up in
            the history before it counts as never queued (default 30 minutes).
        reconcile_interval: seconds between reconciliations of a waiting key (at most 60).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "prism:ledger:",
        retry_for: float = 30.0,
        reconcile_window: float = 1800.0,
        reconcile_interval: float = 30.0,
    ) -> None:
        self.configure_reconciliation(window=reconcile_window, interval=reconcile_interval)
        if isinstance(retry_for, bool) or not isinstance(retry_for, int | float) or retry_for < 0:
            raise InvalidRequestError("retry_for", "must be 0 or more seconds")
        self.url = url
        self.prefix = prefix
        self.retry_for = float(retry_for)
        self._client: redis.Redis | None = None
        self._users: dict[redis.Redis, int] = {}  # calls in flight on each connection pool
        self._checked = False
        self._down = False  # Redis could not be reached at the last call (logged once)

    def __repr__(self) -> str:
        return f"RedisLedger(prefix={self.prefix!r})"  # the URL may carry a password

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        started: float | None = None
        pause = 0.05
        while True:
            try:
                result = await call()
            except _DOWN as exc:
                now = time.monotonic()
                started = now if started is None else started
                if not self._down:
                    self._down = True
                    logger.warning(
                        "%r: Redis cannot be reached (%s); retrying for up to %g s",
                        self,
                        exc,
                        self.retry_for,
                    )
                if now - started >= self.retry_for:
                    raise LedgerUnavailableError(
                        f"{self!r}: Redis could not be reached for {self.retry_for:g} s: {exc}",
                        ledger=repr(self),
                    ) from exc
                await asyncio.sleep(min(pause, max(0.0, started + self.retry_for - now)))
                pause = min(pause * 2, 2.0)
                continue
            if self._down:
                self._down = False
                logger.warning("%r: Redis can be reached again", self)
            return result

    def _keys(self, key: str) -> tuple[str, str, str]:
        return (f"{self.prefix}sub:{key}", f"{self.prefix}order", f"{self.prefix}claimed")

    @contextlib.asynccontextmanager
    async def _redis(self) -> AsyncIterator[redis.Redis]:
        """The connection pool for one call; one closed meanwhile is closed after its calls."""
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10
            )
        client = self._client
        self._users[client] = self._users.get(client, 0) + 1
        try:
            if not self._checked:
                self._checked = True
                await self._check_durability(client)
            yield client
        finally:
            self._users[client] -= 1
            if not self._users[client]:
                del self._users[client]
                if client is not self._client:
                    await client.aclose()

    async def _check_durability(self, client: redis.Redis) -> None:
        try:
            settings = {
                **await client.config_get("appendonly"),
                **await client.config_get("appendfsync"),
            }
        except ResponseError as exc:  # CONFIG is often disabled on managed Redis
            logger.warning("RedisLedger: cannot read the server's persistence settings: %s", exc)
            return
        if settings.get("appendonly") != "yes" or settings.get("appendfsync") != "always":
            logger.warning(
                "RedisLedger: the server has appendonly=%s, appendfsync=%s: a crash of Redis can "
                "lose ledger rows (and so pay twice); set appendonly yes and appendfsync always",
                settings.get("appendonly"),
                settings.get("appendfsync"),
            )

    @_retrying
    async def get(self, key: str) -> Submission | None:
        async with self._redis() as client:
            doc = await client.hget(self._keys(key)[0], "doc")
            return None if doc is None else _decode(doc)

    @property
    def _unsettled_key(self) -> str:
        return f"{self.prefix}unsettled"

    async def list(self, state: str | None = None) -> AsyncIterator[Submission]:
        if state in _INDEXED:
            async for submission in self._unsettled(state):
                yield submission
            return
        start = 0
        while True:
            members, docs = await self._page(start)
            if not members:
                return
            for doc in docs:
                if doc is not None:
                    submission = _decode(doc)
                    if state is None or submission.state == state:
                        yield submission
            start += _PAGE

    @_retrying
    async def _page(self, start: int) -> tuple[Sequence[str], Sequence[str | None]]:
        """Keys ``start`` to ``start + _PAGE`` in first-seen order, and their rows."""
        async with self._redis() as client:
            order = self._keys("")[1]
            members = cast(list[str], await client.zrange(order, start, start + _PAGE - 1))
            async with client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hget(self._keys(member)[0], "doc")
                docs: list[str | None] = await pipe.execute()
        return members, docs

    async def _unsettled(self, state: str | None) -> AsyncIterator[Submission]:
        """The ``sending`` or ``ambiguous`` rows, from the index (built once for a ledger an
        earlier version wrote), in the order their keys were first seen."""
        for row in await self._unsettled_rows():
            if row.state == state:
                yield row

    @_retrying
    async def _unsettled_rows(self) -> Sequence[Submission]:
        async with self._redis() as client:
            built = f"{self._unsettled_key}:built"
            if not await client.exists(built):
                members: list[str] = []
                async for row in self.list():
                    if row.state in _INDEXED:
                        members.append(row.key)
                if members:
                    await client.sadd(self._unsettled_key, *members)
                await client.set(built, 1)
            keys = sorted(cast(set[str], await client.smembers(self._unsettled_key)))
            rows = await self.get_many(keys)
            order = self._keys("")[1]
            async with client.pipeline(transaction=False) as pipe:
                for key in rows:
                    pipe.zscore(order, key)
                seen: list[float | None] = await pipe.execute()
        ranked = sorted(zip(seen, rows.values(), strict=True), key=lambda p: p[0] or 0.0)
        return [row for _, row in ranked]

    @_retrying
    async def insert(self, submission: Submission) -> bool:
        async with self._redis() as client:
            row, order, claimed = self._keys(submission.key)
            ids = json.dumps(list(submission.generation_ids))
            args = (submission.version, _encode(submission), submission.key, ids, submission.state)
            keys = (row, order, claimed, self._changes_key, self._unsettled_key)
            return bool(await client.eval(_INSERT, len(keys), *keys, *args))

    @_retrying
    async def swap(self, expected: Submission, new: Submission) -> bool:
        if new.key != expected.key:
            raise ValueError("swap keeps the key")
        async with self._redis() as client:
            row, _, claimed = self._keys(new.key)
            args = (
                expected.version,
                new.version,
                _encode(new),
                json.dumps(list(expected.generation_ids)),
                json.dumps(list(new.generation_ids)),
                new.key,
                new.state,
            )
            keys = (row, claimed, self._changes_key, self._unsettled_key)
            return bool(await client.eval(_SWAP, len(keys), *keys, *args))

    async def record(self, record: GenerationRecord) -> None:
        await self.record_many([record])

    @_retrying
    async def record_many(self, records: Sequence[GenerationRecord]) -> None:
        """Every record in one round trip."""
        async with self._redis() as client, client.pipeline(transaction=True) as pipe:
            for record in records:
                values = {
                    name: value
                    for name, value in attrs.asdict(record, recurse=False).items()
                    if value is not None and name != "id"
                }
                if isinstance(record.completed_at, datetime):
                    values["completed_at"] = record.completed_at.timestamp()
                fields: dict[FieldT, EncodableT] = {k: json.dumps(v) for k, v in values.items()}
                key = f"{self.prefix}gen:{record.id}"
                if fields:
                    pipe.hset(key, mapping=fields)
                else:
                    pipe.hsetnx(key, "id", json.dumps(record.id))
            await pipe.execute()

    @_retrying
    async def get_many(self, keys: Sequence[str]) -> dict[str, Submission]:
        wanted = list(dict.fromkeys(keys))
        async with self._redis() as client, client.pipeline(transaction=False) as pipe:
            for key in wanted:
                pipe.hget(self._keys(key)[0], "doc")
            docs: list[str | None] = await pipe.execute()
        return {key: _decode(doc) for key, doc in zip(wanted, docs, strict=True) if doc}

    @_retrying
    async def generation(self, generation_id: str) -> GenerationRecord | None:
        async with self._redis() as client:
            key = f"{self.prefix}gen:{generation_id}"
            stored = cast(dict[str, str], await client.hgetall(key))
            if not stored:
                return None
            fields = {name: json.loads(value) for name, value in stored.items() if name != "id"}
            if fields.get("completed_at") is not None:
                fields["completed_at"] = datetime.fromtimestamp(fields["completed_at"], tz=UTC)
            return GenerationRecord(generation_id, **fields)

    @property
    def _changes_key(self) -> str:
        return f"{self.prefix}changes"

    @_retrying
    async def changes(
        self, after: int = 0, *, limit: int = 500
    ) -> tuple[Sequence[Submission], int]:
        async with self._redis() as client:
            found = cast(
                list[tuple[str, float]],
                await client.zrangebyscore(
                    self._changes_key, f"({after}", "+inf", start=0, num=max(1, limit),
                    withscores=True,
                ),
            )  # fmt: skip
            if not found:
                return [], after
            async with client.pipeline(transaction=False) as pipe:
                for key, _ in found:
                    pipe.hget(self._keys(key)[0], "doc")
                docs: list[str | None] = await pipe.execute()
        # A row written again meanwhile comes back newer: it comes again at its new number.
        rows = [_decode(doc) for doc in docs if doc is not None]
        return rows, int(found[-1][1])

    @_retrying
    async def claimed_ids(self) -> set[str]:
        async with self._redis() as client:
            return cast(set[str], await client.smembers(self._keys("")[2]))

    async def aclose(self) -> None:
        """Close the connection pool (a later call opens it again)."""
        client, self._client = self._client, None
        if client is not None and client not in self._users:
            await client.aclose()  # else its last call in flight closes it
