"""PrismStreamBroker: taskiq-redis's ``RedisStreamBroker`` with money-safe defaults.

What it changes, and why (each was seen to pay twice or to lose paid jobs):

* **No redelivery of a live job.** A stream message is redelivered once it has been *idle*
  (delivered, not acknowledged) for ``idle_timeout``, whether or not its worker still runs it:
  taskiq-redis's 10 minutes re-ran every 15-minute job. Here every message a worker holds
  (running or prefetched) is touched every ``heartbeat_interval`` (``XCLAIM`` to itself, which
  resets its idle time), and ``idle_timeout`` defaults to 20 minutes, above the longest job of
  the SDK's tasks (a 15-minute wait and its download). Only a dead worker's messages go idle.
* **Reclaiming without new traffic.** taskiq-redis 1.2.4 looks for a dead worker's messages
  (``XAUTOCLAIM``) only after a read that returned new ones: with no new jobs, a killed worker's
  jobs never ran again. Here every read that returns nothing, and at least every
  ``reclaim_interval`` seconds, reclaims messages idle past ``idle_timeout``.
* **A finite reclaim lock.** Workers take turns reclaiming under a Redis lock; it expires after
  ``unacknowledged_lock_timeout`` seconds, so a worker killed while holding it blocks nobody.
* **Nothing trimmed, acknowledged messages deleted.** ``maxlen`` would trim jobs nobody has read
  yet: it is refused. Instead a message is deleted once acknowledged (``delete_on_ack``), so the
  stream holds only the work still to do.
* ``xread_count=1``: a worker takes one message per read, so messages wait in the stream (where
  any worker can take them) rather than in one worker's buffer.

Acknowledge when executed: the SDK's tasks carry the ``ack_type="when_executed"`` label (run
your own tasks with ``taskiq worker --ack-type when_executed``), never ``when_received``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError
from taskiq import AckableMessage
from taskiq_redis import RedisStreamBroker

__all__ = ["PrismStreamBroker"]

logger = logging.getLogger("prism_async.taskiq")

# KEYS: stream; ARGV: group, consumer, ids... Touch (reset the idle time of) the ids this
# consumer still owns; one another consumer reclaimed is left to it.
_TOUCH = """
local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if entry[1] ~= nil and entry[1][2] == ARGV[2] then claim[#claim + 1] = ARGV[i] end
end
if #claim == 5 then return 0 end
claim[#claim + 1] = 'JUSTID'
return #redis.call(unpack(claim))
"""
_TOUCH_BATCH = 200
_Read = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]
"""What XREADGROUP answers (RESP2, bytes): per stream, its messages and their fields."""


class PrismStreamBroker(RedisStreamBroker):
    """A taskiq broker on a Redis stream that neither re-runs live jobs nor loses dead ones.

    ``RedisStreamBroker`` from taskiq-redis, with the defaults and fixes described in this
    module's docstring. Every worker of the fleet and every process that enqueues (the tracker,
    your web app) must use the same ``url``, ``queue_name`` and ``consumer_group_name``.

    Args:
        url: the Redis server, e.g. ``redis://localhost:6379/0`` (it needs ``appendonly yes``:
            a job is only as durable as the stream that holds it).
        queue_name: the stream's key.
        consumer_group_name: the consumer group of the fleet's workers.
        idle_timeout: milliseconds a message must stay idle (its worker dead) before another
            worker takes it over. The heartbeat keeps live jobs from ever reaching it; keep it
            above the longest job anyway unless you lower ``heartbeat_interval`` with it.
        heartbeat_interval: seconds between heartbeats of the messages a worker holds (default:
            a quarter of ``idle_timeout``); 0 turns them off (then ``idle_timeout`` must exceed
            every job).
        reclaim_interval: the longest time between two looks for a dead worker's messages
            while new ones keep coming (an empty read always looks).
        unacknowledged_lock_timeout: seconds the reclaim lock lives at most.
        delete_on_ack: delete a message from the stream once acknowledged (keep True unless
            several consumer groups read the stream).
        **options: the other options of ``RedisStreamBroker`` (``xread_block``,
            ``consumer_name``, ``max_connection_pool_size``, ...); ``maxlen`` is refused.
    """

    def __init__(
        self,
        url: str,
        *,
        queue_name: str = "prism",
        consumer_group_name: str = "prism",
        idle_timeout: int = 20 * 60 * 1000,
        heartbeat_interval: float | None = None,
        reclaim_interval: float = 30.0,
        unacknowledged_lock_timeout: float = 30.0,
        unacknowledged_batch_size: int = 100,
        xread_count: int = 1,
        delete_on_ack: bool = True,
        **options: Any,
    ) -> None:
        if options.get("maxlen") is not None:
            raise ValueError("maxlen trims jobs nobody has run yet: leave it None")
        if idle_timeout <= 0 or unacknowledged_lock_timeout <= 0 or reclaim_interval <= 0:
            raise ValueError(
                "idle_timeout, unacknowledged_lock_timeout and reclaim_interval must be positive"
            )
        if heartbeat_interval is None:
            heartbeat_interval = idle_timeout / 1000 / 4
        if heartbeat_interval < 0 or heartbeat_interval * 1000 >= idle_timeout:
            raise ValueError("heartbeat_interval must be 0 (off) or shorter than idle_timeout")
        super().__init__(
            url,
            queue_name=queue_name,
            consumer_group_name=consumer_group_name,
            idle_timeout=idle_timeout,
            unacknowledged_lock_timeout=unacknowledged_lock_timeout,
            unacknowledged_batch_size=unacknowledged_batch_size,
            xread_count=xread_count,
            **options,
        )
        self.heartbeat_interval = float(heartbeat_interval)
        self.reclaim_interval = float(reclaim_interval)
        self.delete_on_ack = delete_on_ack
        self._held: dict[str, dict[bytes, None]] = {}  # stream -> ids delivered, not acked
        self._heartbeat: asyncio.Task[None] | None = None
        self._cursors: dict[str, bytes | str] = {}  # stream -> where XAUTOCLAIM goes on

    def __repr__(self) -> str:
        return f"PrismStreamBroker(queue_name={self.queue_name!r})"  # the URL may hold a password

    @property
    def held(self) -> int:
        """How many messages this process holds (delivered to it, not yet acknowledged)."""
        return sum(len(ids) for ids in self._held.values())

    async def startup(self) -> None:
        """Declare the consumer group; in a worker, start the heartbeat."""
        await super().startup()
        if self.is_worker_process and self.heartbeat_interval > 0:
            self._heartbeat = asyncio.create_task(self._beat())

    async def shutdown(self) -> None:
        """Stop the heartbeat, then close the connections."""
        beating, self._heartbeat = self._heartbeat, None
        if beating is not None:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        await super().shutdown()

    # -- receiving ---------------------------------------------------------------------------

    def _streams(self) -> list[str]:
        return [self.queue_name, *self.additional_streams]

    def _message(self, stream: str, message_id: bytes, data: bytes) -> AckableMessage:
        self._held.setdefault(stream, {})[message_id] = None
        return AckableMessage(data=data, ack=self._acknowledge(stream, message_id))

    def _acknowledge(self, stream: str, message_id: bytes) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            async with Redis(connection_pool=self.connection_pool) as redis:
                pipe = redis.pipeline(transaction=True)
                pipe.xack(stream, self.consumer_group_name, message_id)
                if self.delete_on_ack:
                    pipe.xdel(stream, message_id)
                await pipe.execute()
            self._held.get(stream, {}).pop(message_id, None)

        return ack

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """New messages, and the messages of dead workers, reclaimed even with no new traffic."""
        async with Redis(connection_pool=self.connection_pool) as redis:
            next_reclaim = 0.0
            while True:
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + self.reclaim_interval
                    for stream in self._streams():
                        for message_id, data in await self._reclaim(redis, stream):
                            yield self._message(stream, message_id, data)
                streams: dict[str, str | int] = {self.queue_name: ">", **self.additional_streams}
                fetched = cast(
                    _Read,
                    await redis.xreadgroup(
                        self.consumer_group_name,
                        self.consumer_name,
                        cast(dict[Any, Any], streams),
                        block=self.block,
                        noack=False,
                        count=self.count,
                    ),
                )
                if not fetched:
                    next_reclaim = 0.0  # nothing new: look for a dead worker's messages now
                    continue
                for name, messages in fetched:
                    for message_id, fields in messages:
                        yield self._message(_text(name), message_id, fields[b"data"])

    async def _reclaim(self, redis: Redis, stream: str) -> list[tuple[bytes, bytes]]:
        """Messages of ``stream`` idle past ``idle_timeout``, now ours (one batch)."""
        lock = redis.lock(
            f"autoclaim:{self.consumer_group_name}:{stream}",
            timeout=self.unacknowledged_lock_timeout,
            blocking=False,
        )
        try:
            if not await lock.acquire():
                return []  # another worker is reclaiming right now
        except RedisError as exc:
            logger.warning("taskiq: cannot take the reclaim lock of %s: %s", stream, exc)
            return []
        try:
            answer = await redis.xautoclaim(
                stream,
                self.consumer_group_name,
                self.consumer_name,
                min_idle_time=self.idle_timeout,
                start_id=self._cursors.get(stream, "0-0"),
                count=self.unacknowledged_batch_size,
            )
        finally:
            with contextlib.suppress(LockError, RedisError):
                await lock.release()
        self._cursors[stream] = answer[0]  # "0-0" once the whole backlog was scanned
        claimed = [(message_id, fields[b"data"]) for message_id, fields in answer[1] if fields]
        if claimed:
            logger.warning(
                "taskiq: reclaimed %d message(s) of %s idle for %.0f s or more (a worker died)",
                len(claimed),
                stream,
                self.idle_timeout / 1000,
            )
        return claimed

    # -- the heartbeat -----------------------------------------------------------------------

    async def _beat(self) -> None:
        """Reset the idle time of every message this worker holds, forever."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.touch()
            except (OSError, RedisError) as exc:  # the next beat tries again
                logger.warning("taskiq: heartbeat failed: %s", exc)

    async def touch(self) -> int:
        """Reset the idle time of the messages this worker holds now; how many it still owns."""
        owned = 0
        async with Redis(connection_pool=self.connection_pool) as redis:
            for stream, ids in list(self._held.items()):
                held = list(ids)
                for start in range(0, len(held), _TOUCH_BATCH):
                    batch = held[start : start + _TOUCH_BATCH]
                    args: list[str | bytes] = [
                        self.consumer_group_name,
                        self.consumer_name,
                        *batch,
                    ]
                    owned += int(await redis.eval(_TOUCH, 1, stream, *args))
        return owned


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
