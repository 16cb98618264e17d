"""A watch: the waits started together by one call (one id for ``wait_for_generation``).

It owns their scheduler entries and their deadline (one timer: they started together), decides
each entry's next poll from its answers (:func:`~._cadence.next_delay`, a ``Retry-After``, the
webhook hub), and hands the caller, in order, the entries it must look at: a status change
(when the caller has an ``on_update``) and the end of a wait (terminal, failed request,
deadline, client closed). Everything here runs in the event loop's callbacks; the caller's
task runs the callbacks (``on_update``, the ledger's record) and raises the errors.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from typing import TYPE_CHECKING

import attrs

from .._callbacks import call_maybe_async
from .._errors import (
    APIConnectionError,
    APIStatusError,
    ClientClosedError,
    ResponseValidationError,
    WaitTimeoutError,
)
from ..models.generations import Generation
from ._cadence import CANARY_EVERY, key_of_status, next_delay
from ._scheduler import Entry
from ._tasks import cancel_all

if TYPE_CHECKING:
    from ..polling import OnUpdate, PollPolicy
    from ._engine import Waiter

__all__ = ["Watch"]

logger = logging.getLogger("prism_async")

HELD = -4  # handed to the caller with a status change; it resumes the entry
OVER = -3  # the wait is over (entry.error or a terminal entry.last)


def _is_transient(exc: BaseException) -> bool:
    """Failures of a status request that must not end a wait (the video may still be fine)."""
    if isinstance(exc, APIConnectionError | ResponseValidationError):
        return True
    if isinstance(exc, APIStatusError):
        return exc.status_code in (408, 429) or exc.status_code >= 500
    return False


def log_abandoned(generation_id: str, why: str, last: Generation | None) -> None:
    """A wait ends before its generation did: the id must not be lost with it."""
    logger.warning(
        "wait for generation %s ended before the generation did (%s; last status: %s): "
        "it goes on, and is paid for; wait for it again by its id",
        generation_id,
        why,
        last.status if last is not None else "not polled yet",
        extra={"prism_generation_ids": [generation_id]},
    )


class Watch:
    """The waits of one call. Made by :meth:`Waiter.watch`, ended by :meth:`stop`."""

    __slots__ = (
        "_deadline",
        "_ready",
        "_slow",
        "_stopping",
        "_taken",
        "_wakeup",
        "entries",
        "notify",
        "policy",
        "timeout",
        "waiter",
    )

    def __init__(
        self, waiter: Waiter, policy: PollPolicy, timeout: float, *, notify: bool
    ) -> None:
        self.waiter = waiter
        self.policy = policy
        self.timeout = timeout
        self.notify = notify  # hand status changes to the caller (it has an on_update)
        self.entries: list[Entry] = []
        self._ready: list[Entry] = []  # handed to the caller: those from _taken on are new
        self._taken = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._slow: PollPolicy | None = None
        self._stopping: list[asyncio.Task[Generation]] = []  # requests cancelled
        hub = waiter.hub
        if hub is not None:
            slow = max(hub.fallback_interval, policy.max_interval)
            self._slow = attrs.evolve(
                policy, interval=slow, max_interval=slow, multiplier=1.0, learn=False
            )

    def start(self, ids: list[str], births: dict[str, tuple[str, float]]) -> None:
        """Schedule a wait for each id (``births``: the timing key and creation of those
        known), and the deadline."""
        waiter, hub = self.waiter, self.waiter.hub
        scheduler = waiter.scheduler
        self._deadline = asyncio.get_running_loop().call_later(self.timeout, self._expire)
        for generation_id in ids:
            entry = Entry(scheduler, self, generation_id, None)
            birth = births.get(generation_id)
            if birth is not None:
                entry.key, entry.born = birth
            self.entries.append(entry)
            if hub is not None:
                hub.subscribe(generation_id, entry)
                entry.expected = hub.expects(generation_id)
            scheduler.at(entry, self._delay(entry))
        waiter.watches.add(self)

    # -- what the caller's task does -----------------------------------------------------------

    async def finished(self, on_update: OnUpdate | None) -> Entry:
        """The next entry whose wait is over (its ``error``, or a terminal ``last``), after
        calling ``on_update`` with every status change on the way (an error it raises ends
        that wait), and the ledger's record of a terminal status."""
        while True:
            while self._taken == len(self._ready):
                self._wakeup = asyncio.get_running_loop().create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
            entry = self._ready[self._taken]
            self._taken += 1
            if self._taken == len(self._ready):
                self._ready.clear()
                self._taken = 0
            last = entry.last
            try:
                if entry.error is None and last is not None:
                    if entry.changed and on_update is not None:
                        entry.changed = False
                        await call_maybe_async(on_update, last)
                    if entry.seq == HELD and entry.error is None:
                        entry.seq = -1
                        self.waiter.scheduler.at(entry, self._delay(entry))
                        continue
                    if entry.error is None and self.waiter.on_done is not None:
                        await self.waiter.on_done(last)
            except Exception as exc:  # a callback's error ends its wait
                if entry.error is None:
                    entry.error = exc
                    if entry.seq != OVER:
                        self._over(entry, queue=False)
            if entry.seq == HELD:  # over (deadline, client closed) during its on_update
                entry.seq = OVER
            return entry

    async def stop(self, *, cancelled: bool = False) -> None:
        """End the waits still running and wait until their requests have stopped. A wait cut
        short by a cancellation while the client or its hub is closing logs its id."""
        waiter, hub = self.waiter, self.waiter.hub
        waiter.watches.discard(self)
        if self._deadline is not None:
            self._deadline.cancel()
        shutting_down = cancelled and (waiter.closed or (hub is not None and hub.closed))
        for entry in self.entries:
            if entry.seq != OVER and entry.error is None:
                self._over(entry, queue=False)
                if shutting_down:
                    log_abandoned(entry.id, "cancelled while shutting down", entry.last)
        stopping, self._stopping = self._stopping, []
        await cancel_all(stopping)

    # -- what the scheduler and the timers call ------------------------------------------------

    def settle(self, entry: Entry, outcome: Generation | BaseException) -> None:
        """A status request of ``entry`` ended: plan the next, or hand it to the caller."""
        entry.polls += 1
        if isinstance(outcome, Generation):
            last = entry.last
            entry.changed = entry.changed or last is None or last.status != outcome.status
            entry.last = outcome
            if entry.born is None and outcome.created_at is not None:
                entry.born = outcome.created_at.timestamp()
            if entry.key is None:
                entry.key = key_of_status(outcome)
            if outcome.is_done:
                self._learn(entry, outcome)
                self._over(entry)
            elif entry.changed and self.notify:
                entry.seq = HELD
                self._hand(entry)
            else:
                self.waiter.scheduler.at(entry, self._delay(entry))
        elif _is_transient(outcome):
            logger.debug("status request failed, the wait goes on: %s", outcome)
            delay = self._delay(entry)
            if isinstance(outcome, APIStatusError) and outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            self.waiter.scheduler.at(entry, delay)
        else:
            entry.error = outcome
            self._over(entry)

    def close(self) -> None:
        """The client closed: every wait still running ends with ClientClosedError (each
        logs its generation id at WARNING)."""
        for entry in self.entries:
            if entry.seq != OVER and entry.error is None:
                log_abandoned(entry.id, "the client closed", entry.last)
                entry.error = ClientClosedError(
                    f"the client was closed while waiting for {entry.id}"
                )
                self._over(entry, queue=entry.seq != HELD)

    def _expire(self) -> None:
        for entry in self.entries:
            if entry.seq != OVER and entry.error is None:
                entry.error = WaitTimeoutError(entry.id, self.timeout, entry.last)
                self._over(entry, queue=entry.seq != HELD)

    # -- inside --------------------------------------------------------------------------------

    def _delay(self, entry: Entry) -> float:
        policy, hub = self.policy, self.waiter.hub
        if entry.expected and self._slow is not None and hub is not None:
            if hub.reliable:
                policy = self._slow  # its webhook will come: poll only as a fallback
            elif hub.closed:
                entry.expected = False  # nor will any webhook any more
        age = None if entry.born is None else time.time() - entry.born
        plausible = None
        if policy.learn and entry.key is not None and not entry.canary:
            durations = self.waiter.durations
            plausible = durations.plausible(entry.key)
            if plausible is not None and entry.polls == 0:
                every = CANARY_EVERY * policy.max_interval
                entry.canary = durations.canary(entry.key, every)
                plausible = None if entry.canary else plausible
        delay = next_delay(policy, polls=entry.polls, age=age, plausible=plausible)
        return delay if plausible is None else min(delay, self._last_look(entry))

    def _last_look(self, entry: Entry) -> float:
        """The latest a learnt wait may poll next so that its deadline never passes on a status
        older than ``max_interval`` (the history may place its plausible point after the
        deadline): a wait that times out has looked, and one that finished is not missed."""
        if self._deadline is None:
            return math.inf
        policy = self.policy
        remaining = self._deadline.when() - asyncio.get_running_loop().time()
        if remaining > policy.max_interval:
            spread = min(policy.jitter, 0.5) * random.random()  # no lock-step, never late
            return remaining - policy.max_interval * (1.0 - spread)
        return remaining / 2 if entry.polls == 0 else math.inf

    def _learn(self, entry: Entry, generation: Generation) -> None:
        created, completed = generation.created_at, generation.completed_at
        if generation.is_completed and created is not None and completed is not None:
            assert entry.key is not None
            seconds = (completed - created).total_seconds()
            if self.waiter.durations.learn(entry.key, seconds, created.timestamp()):
                self.waiter.replan(entry.key)

    def replan(self, key: str) -> None:
        """Plan again the next poll of the waits of ``key`` still planned."""
        scheduler = self.waiter.scheduler
        for entry in self.entries:
            if entry.key == key and entry.seq >= 0:
                scheduler.at(entry, self._delay(entry))

    def _over(self, entry: Entry, *, queue: bool = True) -> None:
        held = entry.seq == HELD
        if entry.task is not None and not entry.task.done():
            self._stopping.append(entry.task)
        self.waiter.scheduler.drop(entry)
        if held:
            entry.seq = HELD  # the caller is on it; it sees the error when done
        hub = self.waiter.hub
        if hub is not None:
            hub.unsubscribe(entry.id, entry)
        self.waiter.births.forget(entry.id)
        if queue:
            self._hand(entry)

    def _hand(self, entry: Entry) -> None:
        self._ready.append(entry)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

