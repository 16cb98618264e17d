"""What a worker holds: the messages delivered to it, their jobs, their acknowledgements.

:class:`HeldMessages` (one per broker) keeps every message delivered and not yet acknowledged
or handed back: the heartbeat touches them, a stopping worker hands them back. An
acknowledgement that fails (Redis down) is kept and retried with backoff; the message stays held
(heartbeated) meanwhile.

taskiq's receiver runs each message in a task of its own. :class:`DeliveryWatch`, the broker's
first middleware, ties the two together: it binds the job's task to its message (so that a
stopping worker can cancel it once it has handed its message back) and records the error of a
job that failed. When a job's task ends with its message neither acknowledged nor handed back
(an error out of a middleware, say), the message is handed back as a failed delivery with its
error: the error its dead letter shows if that was its last delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from taskiq import AckableMessage, TaskiqMessage, TaskiqMiddleware, TaskiqResult

from .._fleet._weather import OUTAGE_ERRORS, Backoff, Outage
from ._streams import HAND_BACK, TOUCH, errors_key

if TYPE_CHECKING:
    from ._broker import PrismStreamBroker

__all__ = ["Delivery", "DeliveryWatch", "Entry", "HeldMessages", "describe"]

logger = logging.getLogger("prism_async.taskiq")

Entry = tuple[str, bytes]
"""A message: its stream and its id there."""
_BATCH = 200


@dataclass
class Delivery:
    """A message this worker holds (delivered, not yet acknowledged or handed back)."""

    task_id: str | None
    job: asyncio.Task[Any] | None = None
    """The receiver's task running it, once started."""
    error: str | None = None
    """The error its job raised, if any."""


def describe(error: BaseException) -> str:
    """An error as a dead letter shows it: ``Type: message``."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class HeldMessages:
    """The messages a worker holds, and everything done to them: acknowledged (retried while
    Redis is down), touched by the heartbeat, handed back."""

    def __init__(self, broker: PrismStreamBroker, outage: Outage) -> None:
        self._broker = broker
        self._outage = outage
        self._deliveries: dict[Entry, Delivery] = {}
        self._by_task_id: dict[str, Entry] = {}
        self._unacked: dict[Entry, None] = {}  # acknowledgements to retry
        self._handed_back: set[Entry] = set()  # their late acknowledgements are skipped
        self._acker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._deliveries)

    def disown_running(self) -> list[asyncio.Task[Any]]:
        """The tasks of the jobs running now, whose acknowledgements are skipped from now on:
        their messages are about to be handed back and the jobs cancelled (a cancelled job is
        acknowledged by taskiq as if it had run)."""
        jobs = []
        for entry, delivery in self._deliveries.items():
            if delivery.job is not None and not delivery.job.done():
                self._handed_back.add(entry)
                jobs.append(delivery.job)
        return jobs

    def reset(self) -> None:
        """A new start: nothing is handed back any more."""
        self._handed_back.clear()

    async def aclose(self) -> None:
        """Stop retrying acknowledgements and handing back."""
        for task in [self._acker, *self._background]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._acker = None

    def _redis(self) -> Redis:
        return Redis(connection_pool=self._broker.connection_pool)

    # -- delivered and acknowledged ----------------------------------------------------------

    def message(self, stream: str, message_id: bytes, data: bytes) -> AckableMessage:
        """The message to hand to the receiver, held until acknowledged or handed back."""
        entry = (stream, message_id)
        task_id: str | None = None
        with contextlib.suppress(Exception):  # not a taskiq message: the receiver says so
            task_id = self._broker.formatter.loads(data).task_id
            self._by_task_id[task_id] = entry
        self._deliveries[entry] = Delivery(task_id)
        return AckableMessage(data=data, ack=self._acknowledge(entry))

    def _forget(self, entry: Entry) -> None:
        delivery = self._deliveries.pop(entry, None)
        self._unacked.pop(entry, None)
        if delivery is not None and delivery.task_id is not None:
            self._by_task_id.pop(delivery.task_id, None)

    def _acknowledge(self, entry: Entry) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            if entry in self._handed_back:
                return  # given to another worker: its run acknowledges it
            try:
                async with self._redis() as redis:
                    await self._ack(redis, [entry])
            except OUTAGE_ERRORS as exc:
                self._outage.failed("acknowledging", exc)
                self._unacked[entry] = None  # still held: its heartbeat goes on
                if self._acker is None or self._acker.done():
                    self._acker = asyncio.create_task(self._retry_acks())
                return
            self._outage.recovered()
            self._forget(entry)

        return ack

    async def _ack(self, redis: Redis, entries: list[Entry]) -> None:
        pipe = redis.pipeline(transaction=True)
        for stream, message_id in entries:
            pipe.xack(stream, self._broker.consumer_group_name, message_id)
            if self._broker.delete_on_ack:
                pipe.xdel(stream, message_id)
            pipe.hdel(errors_key(stream), message_id)
        await pipe.execute()

    async def flush_acks(self) -> None:
        """Send the acknowledgements that failed before (raises while Redis is down)."""
        entries = list(self._unacked)
        if entries:
            async with self._redis() as redis:
                await self._ack(redis, entries)
            for entry in entries:
                self._forget(entry)

    async def _retry_acks(self) -> None:
        backoff = Backoff()
        while self._unacked:
            await asyncio.sleep(backoff.next())
            try:
                await self.flush_acks()
            except OUTAGE_ERRORS as exc:
                self._outage.failed("acknowledging", exc)
                continue
            self._outage.recovered()

    async def touch(self) -> int:
        """Reset the idle time of every message held; how many this consumer still owns."""
        by_stream: dict[str, list[bytes]] = {}
        for stream, message_id in self._deliveries:
            by_stream.setdefault(stream, []).append(message_id)
        owned = 0
        group, consumer = self._broker.consumer_group_name, self._broker.consumer_name
        async with self._redis() as redis:
            for stream, held in by_stream.items():
                for start in range(0, len(held), _BATCH):
                    batch = held[start : start + _BATCH]
                    owned += int(await redis.eval(TOUCH, 1, stream, group, consumer, *batch))
        return owned

    # -- jobs (DeliveryWatch) ----------------------------------------------------------------

    def started(self, task_id: str, job: asyncio.Task[Any]) -> None:
        """The job of ``task_id`` runs in ``job``: watch how it ends."""
        entry = self._by_task_id.get(task_id)
        delivery = None if entry is None else self._deliveries.get(entry)
        if entry is not None and delivery is not None:
            delivery.job = job
            job.add_done_callback(lambda _: self._ended(entry))

    def failed(self, task_id: str, error: str) -> None:
        """The job of ``task_id`` raised ``error``."""
        entry = self._by_task_id.get(task_id)
        delivery = None if entry is None else self._deliveries.get(entry)
        if delivery is not None:
            delivery.error = error

    def _ended(self, entry: Entry) -> None:
        delivery = self._deliveries.get(entry)
        if delivery is None or delivery.job is None or entry in self._unacked:
            return  # acknowledged (or being), or handed back
        if entry in self._handed_back:
            return  # being handed back by a stopping worker
        job = delivery.job
        raised = None if job.cancelled() else job.exception()
        error = describe(raised) if raised is not None else delivery.error
        error = error or "ended without an acknowledgement"
        logger.warning(
            "taskiq: message %s of %s ended without an acknowledgement (%s): handed back",
            entry[1].decode(),
            entry[0],
            error,
            exc_info=raised,
        )
        task = asyncio.ensure_future(self._give_back_failed(entry, error))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _give_back_failed(self, entry: Entry, error: str) -> None:
        try:
            await self.hand_back(entry[0], [entry[1]], error=error)
        except OUTAGE_ERRORS as exc:  # no longer heartbeated: back after idle_timeout
            self._outage.failed("handing a message back", exc)

    # -- handing back ------------------------------------------------------------------------

    async def hand_back(self, stream: str, ids: list[bytes], *, error: str = "") -> int:
        """Make ``ids`` claimable by any worker now; ``error``: a failed delivery (counted),
        else a stopping worker's (not counted, and a late acknowledgement is skipped)."""
        for message_id in ids:
            self._forget((stream, message_id))
            if not error:
                self._handed_back.add((stream, message_id))
        broker, handed = self._broker, 0
        keys = (stream, errors_key(stream))
        arguments = (broker.consumer_group_name, broker.consumer_name, broker.idle_timeout, error)
        async with self._redis() as redis:
            for start in range(0, len(ids), _BATCH):
                batch = ids[start : start + _BATCH]
                handed += int(await redis.eval(HAND_BACK, 2, *keys, *arguments, *batch))
        return handed

    async def hand_back_everything(self, streams: list[str]) -> int:
        """Hand back every message of this consumer still pending in ``streams`` (held,
        prefetched, or read as the worker stopped), not counted as a delivery."""
        broker, handed = self._broker, 0
        async with self._redis() as redis:
            for stream in streams:
                ids: list[bytes] = []
                start = "-"
                while True:
                    page = await redis.xpending_range(
                        stream, broker.consumer_group_name, start, "+", 1000, broker.consumer_name
                    )
                    ids += [_as_bytes(row["message_id"]) for row in page]
                    if len(page) < 1000:
                        break
                    start = "(" + _as_bytes(page[-1]["message_id"]).decode()
                if ids:
                    handed += await self.hand_back(stream, ids)
        return handed


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class DeliveryWatch(TaskiqMiddleware):
    """Binds each job's task to its message, and records the error of a job that failed."""

    def __init__(self, held: HeldMessages) -> None:
        super().__init__()
        self._held = held

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """The job of ``message`` starts in the current task."""
        job = asyncio.current_task()
        if job is not None:
            self._held.started(message.task_id, job)
        return message

    def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        """The job of ``message`` raised ``exception``."""
        self._held.failed(message.task_id, describe(exception))
