"""PrismStreamBroker: taskiq-redis's ``RedisStreamBroker`` with money-safe defaults.

What it changes, and why (each was seen to pay twice, to lose paid jobs or to hang a deploy):

* **No redelivery of a live job.** A message a worker holds (running or prefetched) is touched
  every ``heartbeat_interval`` (``XCLAIM`` to itself, which resets its idle time), and
  ``idle_timeout`` defaults to 20 minutes, above the longest job of the SDK's tasks: only a dead
  worker's messages go idle (taskiq-redis's 10 minutes re-ran every 15-minute job).
* **Reclaiming without new traffic.** Every read that returns nothing, and at least every
  ``reclaim_interval`` seconds, reclaims messages idle past ``idle_timeout`` (taskiq-redis 1.2.4
  looked only after a read that returned new ones). Workers take turns under a Redis lock that
  expires after ``unacknowledged_lock_timeout`` seconds.
* **Stopping within ``shutdown_timeout`` seconds** of SIGTERM (see :mod:`._stopping` for why
  taskiq 0.13's workers never stopped): no new messages at once, running jobs finish until the
  bound, then their messages are handed back for immediate redelivery (claimable by any other
  worker at once, the stop not counted as a delivery) and the jobs are cancelled.
* **Dead letters.** A message already delivered ``max_deliveries`` times (its job kept killing
  its worker, or kept ending without an acknowledgement) is not delivered again: it is parked
  in ``<queue>:dead`` with its last error (``prism-async ledger dead-letters``).
* **Redis outages are weather.** The read loop, heartbeats, acknowledgements and reclaims retry
  with backoff (one WARNING per outage); an acknowledgement that failed is retried in the
  background; the worker carries on when Redis is back.
* **Nothing trimmed, acknowledged messages deleted** (``maxlen`` is refused, ``delete_on_ack``),
  and ``xread_count=1``: messages wait in the stream, where any worker can take them.

Acknowledge when executed: the SDK's tasks carry the ``ack_type="when_executed"`` label (run
your own tasks with ``taskiq worker --ack-type when_executed``), never ``when_received``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from taskiq import AckableMessage
from taskiq_redis import RedisStreamBroker

from .._fleet._weather import OUTAGE_ERRORS, Backoff, Outage
from ._deliveries import DeliveryWatch, HeldMessages, describe
from ._stopping import StopSignals, reraise_swallowed_cancellation
from ._streams import declare_lost_group, reclaim

__all__ = ["PrismStreamBroker"]

logger = logging.getLogger("prism_async.taskiq")

_Read = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]
"""What XREADGROUP answers (RESP2, bytes): per stream, its messages and their fields."""
_Got = list[tuple[str, bytes, bytes]]
"""Messages to yield: stream, id, data."""


class PrismStreamBroker(RedisStreamBroker):
    """A taskiq broker on a Redis stream that neither re-runs live jobs nor loses dead ones.

    ``RedisStreamBroker`` from taskiq-redis, with the defaults and fixes described in this
    module's docstring. Every worker of the fleet and every process that enqueues (the tracker,
    your web app) must use the same ``url``, ``queue_name`` and ``consumer_group_name``.

    Args:
        url: the Redis server, e.g. ``redis://localhost:6379/0`` (it needs ``appendonly yes``:
            a job is only as durable as the stream that holds it).
        queue_name: the stream's key (its dead letters go to ``<queue_name>:dead``).
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
        shutdown_timeout: seconds a ``taskiq worker`` process takes at most to exit after
            SIGTERM (or SIGINT): running jobs may finish until shortly before it; the messages
            of those still running are then handed back and the jobs cancelled, and a process
            still there at the bound (a job stuck in a thread) is ended.
        max_deliveries: deliveries after which a message goes to the dead-letter stream
            instead of being delivered again.
        delete_on_ack: delete a message from the stream once acknowledged (keep True unless
            several consumer groups read the stream).
        **options: the other options of ``RedisStreamBroker`` (``xread_block``,
            ``consumer_name``, ``max_connection_pool_size``, redis-py's ``socket_timeout``,
            ...); ``maxlen`` is refused.
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
        shutdown_timeout: float = 10.0,
        max_deliveries: int = 5,
        delete_on_ack: bool = True,
        **options: Any,
    ) -> None:
        if options.get("maxlen") is not None:
            raise ValueError("maxlen trims jobs nobody has run yet: leave it None")
        if min(idle_timeout, unacknowledged_lock_timeout, reclaim_interval, shutdown_timeout) <= 0:
            raise ValueError(
                "idle_timeout, unacknowledged_lock_timeout, reclaim_interval and "
                "shutdown_timeout must be positive"
            )
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        if heartbeat_interval is None:
            heartbeat_interval = idle_timeout / 1000 / 4
        if heartbeat_interval < 0 or heartbeat_interval * 1000 >= idle_timeout:
            raise ValueError("heartbeat_interval must be 0 (off) or shorter than idle_timeout")
        # A read blocks up to xread_block: the socket must wait longer than that.
        options.setdefault("socket_timeout", options.get("xread_block", 2000) / 1000 + 10.0)
        options.setdefault("socket_connect_timeout", 5.0)
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
        self.shutdown_timeout = float(shutdown_timeout)
        self.max_deliveries = int(max_deliveries)
        self.delete_on_ack = delete_on_ack
        self._outage = Outage(f"taskiq: queue {queue_name!r}", logger)
        self._held = HeldMessages(self, self._outage)
        self._background: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._deadline: float | None = None  # loop time by which a stopping worker exits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = StopSignals(self._on_signal)
        self.add_middlewares(DeliveryWatch(self._held))

    def __repr__(self) -> str:
        return f"PrismStreamBroker(queue_name={self.queue_name!r})"  # the URL may hold a password

    @property
    def held(self) -> int:
        """How many messages this process holds (delivered to it, not yet acknowledged)."""
        return len(self._held)

    @property
    def stopping(self) -> bool:
        """True once :meth:`request_stop` was called (or the worker got SIGTERM)."""
        return self._stopping is not None and self._stopping.is_set()

    # -- life --------------------------------------------------------------------------------

    async def startup(self) -> None:
        """Declare the consumer group (a worker retries while Redis is down); in a worker,
        start the heartbeat and, in a ``taskiq worker`` process, handle its stop signals."""
        self._loop = asyncio.get_running_loop()
        self._stopping, self._deadline = asyncio.Event(), None
        self._held.reset()
        if self.is_worker_process:
            self._signals.install()
        await super().startup()
        if self.is_worker_process and self.heartbeat_interval > 0 and self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat())

    async def _declare_consumer_group(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await super()._declare_consumer_group()
            except OUTAGE_ERRORS as exc:
                if not self.is_worker_process:
                    raise
                self._outage.failed("declaring the consumer group", exc)
                if await self._pause(backoff.next()):
                    return
                continue
            self._outage.recovered()
            return

    def request_stop(self) -> None:
        """Stop taking messages now; running jobs have until shortly before
        ``shutdown_timeout`` seconds from now to finish, then their messages are handed back
        for immediate redelivery and the jobs cancelled. Call it in the event loop (SIGTERM
        does, in a ``taskiq worker`` process)."""
        if self._deadline is not None:
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.shutdown_timeout
        if self._stopping is None:
            self._stopping = asyncio.Event()
        self._stopping.set()
        logger.warning(
            "taskiq: stopping: no new messages; %d running job(s) have %g s to finish",
            self.held,
            self.shutdown_timeout,
        )
        self._spawn(self._enforce_deadline())

    def _on_signal(self, signum: int) -> None:
        """In the signal handler: arm the last-resort exit, wake the loop to stop."""
        if self._loop is None or self._loop.is_closed():
            return
        self._signals.exit_after(self.shutdown_timeout)
        self._loop.call_soon_threadsafe(self.request_stop)

    async def _enforce_deadline(self) -> None:
        """Shortly before the deadline, hand back what is still running and cancel it."""
        assert self._deadline is not None
        loop = asyncio.get_running_loop()
        grace = min(2.0, self.shutdown_timeout / 4)
        await asyncio.sleep(max(0.0, self._deadline - grace - loop.time()))
        jobs = self._held.disown_running()  # never acknowledged now: handed back, or idle
        handed = 0
        try:
            await self._held.flush_acks()
            handed = await self._held.hand_back_everything(self._streams())
        except OUTAGE_ERRORS as exc:  # not lost: back after idle_timeout
            self._outage.failed("handing messages back", exc)
        for job in jobs:
            job.cancel()
        if handed or jobs:
            logger.warning(
                "taskiq: %d message(s) handed back for immediate redelivery, %d unfinished "
                "job(s) cancelled (shutdown_timeout %g s)",
                handed,
                len(jobs),
                self.shutdown_timeout,
            )

    async def shutdown(self) -> None:
        """Acknowledge what can be, hand every message still held back for immediate
        redelivery, stop the heartbeat, then close the connections."""
        if self._stopping is not None:
            self._stopping.set()  # a listener still running ends
        if self.is_worker_process or len(self._held):
            budget = 5.0
            if self._deadline is not None and self._loop is not None:
                budget = max(0.5, self._deadline - self._loop.time() - 0.5)
            abandoned = self._held.disown_running()  # left running by the receiver
            try:
                async with asyncio.timeout(budget):
                    await self._held.flush_acks()
                    await self._held.hand_back_everything(self._streams())
            except OUTAGE_ERRORS as exc:  # TimeoutError is an OSError
                logger.warning(
                    "taskiq: could not hand back this worker's messages (%s): they come back "
                    "after idle_timeout",
                    describe(exc),
                )
            for job in abandoned:
                job.cancel()
            if abandoned:
                await asyncio.wait(abandoned, timeout=1.0)
        for task in [self._heartbeat, *self._background]:
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._heartbeat = None
        await self._held.aclose()
        self._signals.restore()
        await super().shutdown()

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the worker stops; True if it is stopping."""
        if self._stopping is None:
            await asyncio.sleep(seconds)
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- receiving ---------------------------------------------------------------------------

    def _streams(self) -> list[str]:
        return [self.queue_name, *self.additional_streams]

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """New messages, and the messages of dead workers (reclaimed even with no new traffic),
        until the worker stops; Redis outages are waited out."""
        stopping = self._stopping if self._stopping is not None else asyncio.Event()
        self._stopping = stopping
        backoff = Backoff()
        next_reclaim = 0.0
        async with Redis(connection_pool=self.connection_pool) as redis:
            while not stopping.is_set():
                reraise_swallowed_cancellation()
                try:
                    got: _Got | None = []
                    if time.monotonic() >= next_reclaim:
                        next_reclaim = time.monotonic() + self.reclaim_interval
                        got = await self._reclaim_all(redis)
                    if not got:
                        got = await self._read(redis, stopping)
                except OUTAGE_ERRORS as exc:
                    if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                        await declare_lost_group(self, redis)
                    else:
                        self._outage.failed("reading the stream", exc)
                        await self._pause(backoff.next())
                    continue
                self._outage.recovered()
                backoff.reset()
                if got is None:
                    break  # stopping: what this read brought stays ours until handed back
                if not got:
                    next_reclaim = 0.0  # nothing new: look for a dead worker's messages now
                for stream, message_id, data in got:
                    if stopping.is_set():
                        break
                    yield self._held.message(stream, message_id, data)

    async def _read(self, redis: Redis, stopping: asyncio.Event) -> _Got | None:
        """One XREADGROUP, or None if the worker stops first (the read is cancelled)."""
        streams: dict[str, str | int] = {self.queue_name: ">", **self.additional_streams}
        read = asyncio.ensure_future(
            redis.xreadgroup(
                self.consumer_group_name,
                self.consumer_name,
                cast(dict[Any, Any], streams),
                block=self.block,
                noack=False,
                count=self.count,
            )
        )
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not read.done():
                read.cancel()
                read.add_done_callback(_retrieve)
        if not read.done() or stopping.is_set():
            return None
        fetched = cast(_Read, read.result())
        return [
            (_text(name), message_id, fields[b"data"])
            for name, messages in fetched or []
            for message_id, fields in messages
        ]

    async def _reclaim_all(self, redis: Redis) -> _Got:
        got: _Got = []
        for stream in self._streams():
            got += [(stream, mid, data) for mid, data in await reclaim(self, redis, stream)]
        return got

    # -- the heartbeat -----------------------------------------------------------------------

    async def _beat(self) -> None:
        """Reset the idle time of every message this worker holds, forever (sooner again
        after a failure, so that a held job is touched as soon as Redis is back)."""
        backoff = Backoff(cap=self.heartbeat_interval)
        delay = self.heartbeat_interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.touch()
            except OUTAGE_ERRORS as exc:
                self._outage.failed("heartbeat", exc)
                delay = backoff.next()
                continue
            self._outage.recovered()
            backoff.reset()
            delay = self.heartbeat_interval

    async def touch(self) -> int:
        """Reset the idle time of the messages this worker holds now; how many it still owns."""
        return await self._held.touch()


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a cancelled read's late error: nothing to do with it


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
