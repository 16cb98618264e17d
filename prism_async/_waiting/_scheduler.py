"""One scheduler for every wait of a client: a timer heap, and a task per status request.

A pending wait is an :class:`Entry` (a few slots) in a heap ordered by the time of its next
status request. One event-loop timer is armed for the earliest; when it fires, the entries that
are due get their request, each in a short-lived task, at most ``limit`` at once (the others
queue in order). A finished request hands its outcome to the entry's :class:`Batch` (what
decides what comes next) and starts the next queued one. Nothing runs while no request is
due: no task sleeps on behalf of a wait, so a wait costs its entry, and cancelling it (or
closing the client) leaves nothing behind.

:func:`prism_async.testing.instant_waits` makes every delay zero (it records them), through
:func:`prism_async._clock.poll_delay`.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from .._clock import poll_delay

if TYPE_CHECKING:
    from ..models.generations import Generation

__all__ = ["Batch", "Entry", "Fetch", "Scheduler"]

Fetch = Callable[[str], Coroutine[Any, Any, "Generation"]]
"""One status request for a generation id: a single attempt, no retries of its own."""


class Batch(Protocol):
    """What owns entries: told each outcome of their status requests."""

    def settle(self, entry: Entry, outcome: Generation | BaseException) -> None:
        """An entry's status request ended with a generation or an error."""


class Entry:
    """One pending wait: a generation id and where its wait stands."""

    __slots__ = (
        "batch",
        "born",
        "canary",
        "changed",
        "error",
        "expected",
        "id",
        "key",
        "last",
        "polls",
        "repoll",
        "scheduler",
        "seq",
        "task",
    )

    def __init__(
        self, scheduler: Scheduler, batch: Batch, generation_id: str, key: str | None
    ) -> None:
        self.scheduler = scheduler
        self.batch = batch
        self.id = generation_id
        self.key = key  # its timing key, once known
        self.born: float | None = None  # wall-clock creation, once known
        self.canary = False  # ignores the history (see _cadence.CANARY_EVERY)
        self.polls = 0
        self.last: Generation | None = None
        self.changed = False  # the last status differs from the one before
        self.error: BaseException | None = None
        self.expected = False  # its webhook will come: it polls slowly
        self.seq = -1  # its live heap item; -1 none (in flight, or idle), -2 due, -3 over
        self.task: asyncio.Task[Generation] | None = None
        self.repoll = False  # a hint came while its request was in flight

    def set(self) -> None:
        """A hint that it may be done (a webhook): poll at once. (The hub calls this.)"""
        self.scheduler.now(self)


class Scheduler:
    """The timer heap and the status requests of every wait of a client.

    Args:
        fetch: one status request.
        limit: status requests in flight at most (the client's ``max_connections``).
    """

    def __init__(self, fetch: Fetch, limit: int) -> None:
        self.fetch = fetch
        self._limit = max(1, limit)
        self._heap: list[tuple[float, int, Entry]] = []
        self._counter = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._due: deque[Entry] = deque()
        self._inflight = 0

    def at(self, entry: Entry, delay: float) -> None:
        """Poll ``entry`` in ``delay`` seconds (replacing what was planned; at once if a hint
        came meanwhile)."""
        if entry.repoll:
            entry.repoll, delay = False, 0.0
        loop = asyncio.get_running_loop()
        when = loop.time() + poll_delay(max(0.0, delay))
        entry.seq = seq = next(self._counter)
        heapq.heappush(self._heap, (when, seq, entry))
        if when < self._timer_at:
            self._arm(loop, when)

    def now(self, entry: Entry) -> None:
        """Poll ``entry`` at once (or as soon as its request in flight, or its owner, is done
        with the last answer)."""
        if entry.seq >= 0:
            self.at(entry, 0.0)
        elif entry.seq == -1:
            entry.repoll = True

    def drop(self, entry: Entry) -> None:
        """Forget ``entry``: no further request (one in flight is cancelled)."""
        entry.seq = -3
        if entry.task is not None:
            entry.task.cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._timer_at = when

    def _fire(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        loop = asyncio.get_running_loop()
        now, heap = loop.time(), self._heap
        while heap and heap[0][0] <= now:
            _, seq, entry = heapq.heappop(heap)
            if entry.seq == seq:  # else stale: rescheduled or dropped since
                entry.seq = -2  # due: queued for a request
                self._due.append(entry)
        self._start(loop)
        while heap and heap[0][2].seq != heap[0][1]:
            heapq.heappop(heap)  # stale items never hold the timer
        if heap:
            self._arm(loop, heap[0][0])

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self._due
        while due and self._inflight < self._limit:
            entry = due.popleft()
            if entry.seq != -2:
                continue  # dropped (or moved) while queued
            entry.seq = -1
            task: asyncio.Task[Generation] = loop.create_task(self.fetch(entry.id))
            entry.task = task
            self._inflight += 1
            task.add_done_callback(functools.partial(self._fetched, entry))

    def _fetched(self, entry: Entry, task: asyncio.Task[Generation]) -> None:
        self._inflight -= 1
        if entry.task is task:
            entry.task = None
        if task.cancelled():
            outcome: Generation | BaseException | None = None
        else:
            outcome = task.exception() or task.result()
        if outcome is not None and entry.seq == -1:  # else dropped meanwhile
            entry.batch.settle(entry, outcome)
        self._start(asyncio.get_running_loop())
