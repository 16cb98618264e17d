"""The tracker: one process that waits on every accepted generation of a ledger and hands each
finished one to a download task (``prism-async track``).

Its only state is the ledger. It follows the ledger's change feed (:meth:`Ledger.changes`):
every submission that becomes ``accepted`` or ``reconciled`` shows up there, with its ids; an id
the ledger records as downloaded or failed is skipped, one recorded as completed is enqueued at
once, the others are waited for, one bulk wait per page of the feed (an entry each in the
client's scheduler, on its learnt cadence; webhooks, when the client has a hub, wake them
early); each terminal one is handled as soon as it is seen. Waits of the client record
terminal statuses in the ledger. At most ``max_pending`` waits run at once:
the feed is read further only when there is room, so memory stays bounded however far behind
it is.

A checkpoint (optional) remembers how far the feed is done: the change cursor below which every
row was handled (its generations enqueued or finished). A restarted tracker reads from there, so
a restart costs the pending rows, not the ledger's whole history; without one, it reads the
whole feed again (the download task skips what was downloaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import attrs
from redis.asyncio import Redis
from redis.exceptions import RedisError

from prism_async import (
    AuthenticationError,
    ClientClosedError,
    Generation,
    GenerationFailedError,
    GenerationStatus,
    LedgerUnavailableError,
    NotFoundError,
    PermissionDeniedError,
    PollPolicy,
    PrismClient,
    PrismError,
    SubmissionInFlightError,
    WaitTimeoutError,
)
from prism_async.ledger import Ledger, Submission, SubmissionState
from prism_async.ledger._model import lease_is_alive

__all__ = ["Checkpoint", "RedisCheckpoint", "TrackEvent", "Tracker", "TrackerStats"]

logger = logging.getLogger("prism_async.fleet")

T = TypeVar("T")

Enqueue = Callable[[str], Awaitable[None]]
"""Enqueues the download of one generation id."""


@attrs.frozen
class TrackEvent:
    """Something the tracker did: ``tracking`` (a wait started), ``enqueued`` (its download
    task was sent), ``failed`` (the generation failed), ``lost`` (the API does not know it),
    ``reconciled`` (an ambiguous key settled from the history: ``generation_id`` lists its
    ids) or ``rejected`` (an ambiguous key's window closed with nothing queued)."""

    kind: str
    generation_id: str
    key: str | None = None
    detail: str | None = None


class Checkpoint(Protocol):
    """Where a tracker keeps the change cursor below which everything was handled."""

    async def load(self) -> int:
        """The saved cursor (0 when none)."""

    async def save(self, cursor: int) -> None:
        """Remember ``cursor``."""


class RedisCheckpoint:
    """A :class:`Checkpoint` in one Redis key."""

    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    async def load(self) -> int:
        """The saved cursor (0 when none)."""
        value = await self.redis.get(self.key)
        return int(value) if value is not None else 0

    async def save(self, cursor: int) -> None:
        """Remember ``cursor``."""
        await self.redis.set(self.key, cursor)


@attrs.define
class _Pending:
    key: str
    since: int  # the cursor before the feed page its row came in
    task: asyncio.Task[None] | None = None  # the wait of its page of the feed


@attrs.define
class TrackerStats:
    """What a tracker has done so far."""

    rows: int = 0
    tracked: int = 0
    enqueued: int = 0
    failed: int = 0
    lost: int = 0
    reconciled: int = 0
    """Ambiguous keys it settled from the history."""
    rejected: int = 0
    """Ambiguous keys whose window closed with nothing queued (their jobs send them again)."""
    settled: int = 0
    """Budget reservations it settled (their keys settled, or their process died unsent)."""


class Tracker:
    """Waits on every accepted generation of ``prism.ledger``; enqueues each completed one.

    Args:
        prism: a client with the ledger to follow (and a webhook hub, if any).
        enqueue: sends the download task of one generation id.
        max_pending: the most waits at once (the feed is read further only below it).
        scan_interval: seconds between two reads of the feed when it had nothing more.
        poll: pacing of the waits (default: the client's).
        wait_timeout: seconds one wait runs before it is started again (never given up).
        checkpoint: where to keep the feed's handled cursor (None: read it all at start).
        on_event: called with each :class:`TrackEvent`.
        reconcile_interval: seconds between two passes over the ledger's ambiguous keys (and
            ``sending`` ones whose process died), reconciled from the history, and its budget
            reservations, settled; default: the ledger's. A fleet needs no person for them.
    """

    def __init__(
        self,
        prism: PrismClient,
        enqueue: Enqueue,
        *,
        max_pending: int = 10_000,
        scan_interval: float = 1.0,
        poll: PollPolicy | None = None,
        wait_timeout: float = 3600.0,
        checkpoint: Checkpoint | None = None,
        on_event: Callable[[TrackEvent], object] | None = None,
        reconcile_interval: float | None = None,
    ) -> None:
        if prism.ledger is None:
            raise ValueError("the tracker needs a client with a ledger")
        if max_pending < 1 or scan_interval <= 0 or wait_timeout <= 0:
            raise ValueError("max_pending, scan_interval and wait_timeout must be positive")
        self.prism = prism
        self.ledger: Ledger = prism.ledger
        self.enqueue = enqueue
        self.max_pending = max_pending
        self.scan_interval = scan_interval
        self.poll = poll
        self.wait_timeout = wait_timeout
        self.checkpoint = checkpoint
        self.on_event = on_event
        self.reconcile_interval = (
            self.ledger.reconcile_interval if reconcile_interval is None else reconcile_interval
        )
        if self.reconcile_interval <= 0:
            raise ValueError("reconcile_interval must be positive")
        self.stats = TrackerStats()
        self.cursor = 0
        self._pending: dict[str, _Pending] = {}  # generation id -> its wait
        self._unsent: dict[str, _Pending] = {}  # completed, the enqueue failed: sent again
        self._finished: asyncio.Queue[tuple[str, Generation | BaseException]] = asyncio.Queue()
        self._starting: list[str] = []  # taken from the feed page being read: one wait for all
        self._saved = -1
        self._outage: float | None = None  # when Redis stopped answering, while it does not

    @property
    def pending(self) -> int:
        """Waits running now."""
        return len(self._pending)

    async def run(self, *, until_idle: bool = False) -> None:
        """Track until cancelled (or, with ``until_idle``, until nothing is left to do).

        Raises:
            AuthenticationError, PermissionDeniedError: the API refuses the key.
        """
        self.cursor = await self.checkpoint.load() if self.checkpoint is not None else 0
        next_scan = next_reconcile = 0.0
        try:
            while (me := asyncio.current_task()) is None or not me.cancelling():
                due = time.monotonic() >= next_reconcile
                if due and await self._weather(self._reconcile()) is not None:
                    next_reconcile = time.monotonic() + self.reconcile_interval
                if time.monotonic() >= next_scan:
                    scanned = await self._weather(self._scan())
                    read, full = scanned or (0, False)
                    next_scan = time.monotonic() + (0.0 if full else self.scan_interval)
                    if scanned is None:  # Redis is down: the waits go on, the feed waits
                        next_scan = time.monotonic() + self._outage_pause()
                    await self._send_unsent()
                    await self._weather(self._save())
                    idle = not read and not self._pending and not self._unsent
                    if until_idle and scanned is not None and idle:
                        return
                try:
                    async with asyncio.timeout(max(0.0, next_scan - time.monotonic())):
                        finished = await self._finished.get()
                except TimeoutError:
                    continue
                await self._finish(*finished)
                while not self._finished.empty():
                    await self._finish(*self._finished.get_nowait())
            raise asyncio.CancelledError  # one that redis-py swallowed (3.11's wait_for)
        finally:
            await self._stop()

    async def _weather(self, step: Awaitable[T]) -> T | None:
        """Run one step of the loop; while Redis (the ledger, the checkpoint) cannot be reached
        it returns None instead of ending the tracker (logged at WARNING once per outage)."""
        try:
            result = await step
        except (LedgerUnavailableError, RedisError, OSError) as exc:
            if self._outage is None:
                self._outage = time.monotonic()
                logger.warning("tracker: Redis cannot be reached (%s); carrying on", exc)
            return None
        if self._outage is not None:
            down, self._outage = time.monotonic() - self._outage, None
            logger.warning("tracker: Redis can be reached again after %.0f s", down)
        return result

    def _outage_pause(self) -> float:
        """How long to wait before trying the feed again during an outage (backoff to 5 s)."""
        down = 0.0 if self._outage is None else time.monotonic() - self._outage
        return min(5.0, max(self.scan_interval, down / 4))

    async def _stop(self) -> None:
        tasks = list({p.task for p in self._pending.values() if p.task is not None})
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._save()

    # -- the feed ----------------------------------------------------------------------------

    async def _scan(self) -> tuple[int, bool]:
        """Read one page of the feed if there is room: (rows read, whether it was full)."""
        room = self.max_pending - len(self._pending)
        if room <= 0:
            return 0, False
        limit, since = min(500, room), self.cursor
        rows, self.cursor = await self.ledger.changes(since, limit=limit)
        try:
            for row in rows:
                await self._take(row, since)
        finally:
            self._launch()  # what was taken, even if the ledger failed on the way
        self.stats.rows += len(rows)
        return len(rows), len(rows) == limit

    async def _take(self, row: Submission, since: int) -> None:
        if not row.done:
            return  # it comes again when it changes (accepted, reconciled)
        for generation_id in row.generation_ids:
            if generation_id in self._pending or generation_id in self._unsent:
                continue
            record = await self.ledger.generation(generation_id)
            if record is not None and (
                record.path is not None or record.status == GenerationStatus.FAILED
            ):
                continue
            pending = _Pending(row.key, since)
            if record is not None and record.status == GenerationStatus.COMPLETED:
                await self._enqueue(generation_id, pending)
                continue
            self._start(generation_id, pending)
            self.stats.tracked += 1
            self._event("tracking", generation_id, row.key)

    # -- ambiguous keys ----------------------------------------------------------------------

    async def _reconcile(self) -> int:
        """One pass over the keys that may have been queued without their ids being known:
        each is reconciled from the history (keys of one request settle together, so one
        reconciliation per fingerprint). A reconciled key comes in on the feed and is tracked;
        a rejected one is sent again by its job. Then the budget reservations are settled."""
        now = datetime.now(UTC)
        rows = [row async for row in self.ledger.list(state=SubmissionState.AMBIGUOUS)]
        rows += [
            row
            async for row in self.ledger.list(state=SubmissionState.SENDING)
            if not lease_is_alive(row, now)
        ]
        done: set[str] = set()
        for row in rows:
            if row.kind == "generation" and row.fingerprint in done:
                continue
            try:
                settled = await self.prism.reconcile(row.key)
            except SubmissionInFlightError:
                continue
            except (AuthenticationError, PermissionDeniedError):
                raise
            except PrismError as exc:
                logger.warning("tracker: could not reconcile %r: %s", row.key, exc)
                continue
            done.add(row.fingerprint)
            if settled.done:
                self.stats.reconciled += 1
                self._event("reconciled", ",".join(settled.generation_ids), row.key)
            elif settled.state == SubmissionState.REJECTED:
                self.stats.rejected += 1
                self._event("rejected", "", row.key, settled.error)
        try:  # best effort: the next pass (or a budget refusal) settles what is left
            self.stats.settled += await self.ledger.settle_reservations()
        except NotImplementedError:
            pass  # a ledger that keeps no money
        except Exception as exc:
            logger.warning("tracker: could not settle the budget reservations: %s", exc)
        return len(rows)

    # -- waits -------------------------------------------------------------------------------

    def _start(self, generation_id: str, pending: _Pending) -> None:
        """Wait for it with the other ids of the feed page being read (see :meth:`_launch`)."""
        self._pending[generation_id] = pending
        self._starting.append(generation_id)

    def _launch(self, *, delay: float = 0.0) -> None:
        """One bulk wait for the ids started since the last launch: a pending generation costs
        its entry in the client's scheduler and its record here, not a task of its own."""
        ids, self._starting = self._starting, []
        if ids:
            task = asyncio.create_task(self._wait(ids, delay))
            for generation_id in ids:
                self._pending[generation_id].task = task

    async def _wait(self, ids: list[str], delay: float) -> None:
        """Each terminal generation (and each wait's error) goes to :meth:`_finish` as soon
        as it is known."""
        await asyncio.sleep(delay)

        def seen(generation: Generation) -> None:
            if generation.is_done:
                self._finished.put_nowait((generation.id, generation))

        results = await self.prism.wait_for_generations(
            ids, timeout=self.wait_timeout, poll=self.poll, on_update=seen, return_exceptions=True
        )
        for generation_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, GenerationFailedError):
                self._finished.put_nowait((generation_id, result))

    async def _finish(self, generation_id: str, outcome: Generation | BaseException) -> None:
        pending = self._pending.pop(generation_id, None)
        if pending is None:
            return
        if isinstance(outcome, AuthenticationError | PermissionDeniedError | ClientClosedError):
            raise outcome
        if isinstance(outcome, WaitTimeoutError):  # never given up: it is paid for
            self._start(generation_id, pending)
            self._launch()
            return
        if isinstance(outcome, NotFoundError):
            self.stats.lost += 1
            logger.error("tracker: the API does not know %s (key %s)", generation_id, pending.key)
            self._event("lost", generation_id, pending.key, str(outcome))
            return
        if isinstance(outcome, BaseException):  # unexpected: wait again
            logger.warning("tracker: the wait for %s failed (%r); retrying", generation_id, outcome)
            self._start(generation_id, pending)
            self._launch(delay=5.0)
            return
        if outcome.is_completed:
            await self._enqueue(generation_id, pending)
        else:
            self.stats.failed += 1
            self._event("failed", generation_id, pending.key, outcome.error)

    # -- downloads ---------------------------------------------------------------------------

    async def _enqueue(self, generation_id: str, pending: _Pending) -> None:
        try:
            await self.enqueue(generation_id)
        except Exception as exc:  # the broker is down: send it again on the next scan
            logger.warning("tracker: could not enqueue the download of %s: %s", generation_id, exc)
            self._unsent[generation_id] = pending
            return
        self._unsent.pop(generation_id, None)
        self.stats.enqueued += 1
        self._event("enqueued", generation_id, pending.key)

    async def _send_unsent(self) -> None:
        for generation_id, pending in list(self._unsent.items()):
            await self._enqueue(generation_id, pending)

    async def _save(self) -> None:
        """Save the cursor below which every row was handled."""
        if self.checkpoint is None:
            return
        open_rows = [p.since for p in (*self._pending.values(), *self._unsent.values())]
        handled = min(open_rows, default=self.cursor)
        if handled != self._saved:
            await self.checkpoint.save(handled)
            self._saved = handled

    def _event(self, kind: str, generation_id: str, key: str, detail: str | None = None) -> None:
        if self.on_event is not None:
            self.on_event(TrackEvent(kind, generation_id, key, detail))
