"""The engine of the waits: one scheduler for every wait of a client; one, many, as completed.

Every wait is an entry of the client's :class:`~._scheduler.Scheduler` (a timer heap; a task
only for a status request in flight), owned by the :class:`~._watch.Watch` of the call that
started it: the watch plans each entry's polls (:mod:`._cadence`: learnt from how long
generations took, or the policy's fixed backoff), stretches them to a ``Retry-After``, lets
a webhook hint poll at once, and ends them at the call's deadline. Transient failures of a
status request (connection errors, timeouts, 429, 5xx) never end a wait. The caller's task
runs ``on_update`` and the ledger's record, and gets the outcomes; a wait starts no
background task of its own, and cancelling the caller stops its polling at once.

When the client closes, every running wait ends with :class:`ClientClosedError`. A wait that
ends before its generation because the app is stopping (the client closed, or a cancellation
after the client or hub closed: a server's graceful-shutdown timeout) logs the generation's id
at WARNING first, so that no paid video is lost with the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._errors import (
    ClientClosedError,
    GenerationFailedError,
    InvalidRequestError,
)
from .._validation import check_text
from ..models.generations import Generation, GenerationBatch
from ..models.templates import TemplateGenerationBatch
from ..polling import AsCompleted, GenerationIds, OnUpdate, PollPolicy
from ._cadence import Births, Durations, births_in
from ._scheduler import Fetch, Scheduler
from ._watch import Watch, log_abandoned

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..webhooks import WebhookHub

__all__ = ["Fetch", "Waiter"]

logger = logging.getLogger("prism_async")


class Waiter:
    """What the waits of one client share. :class:`~prism_async.PrismClient` makes one.

    Args:
        fetch: one status request (a single attempt: the wait's schedule spaces them).
        policy: the client's default policy.
        policy_given: whether the user chose that policy (a template batch's latency estimate
            then does not replace it).
        hub: the client's webhook hub, or None.
        on_done: awaited with each terminal generation a wait returns (the ledger records it).
        ledger: the client's ledger, or None: where learnt durations are shared, and where
            the sending of an id this client did not create is looked up.
        limit: status requests in flight at most.
    """

    def __init__(
        self,
        fetch: Fetch,
        policy: PollPolicy,
        *,
        policy_given: bool,
        hub: WebhookHub | None,
        on_done: Callable[[Generation], Awaitable[None]] | None = None,
        ledger: Ledger | None = None,
        limit: int = 100,
    ) -> None:
        self.on_done = on_done
        self.policy = policy
        self.policy_given = policy_given
        self.hub = hub
        self.closed = False
        self.scheduler = Scheduler(fetch, limit)
        self.durations = Durations(ledger)
        self.births = Births()
        self.watches: set[Watch] = set()
        self._ledger = ledger

    def close(self) -> None:
        """End every running wait with :class:`ClientClosedError` (each logs its generation id
        at WARNING), and refuse new ones."""
        self.closed = True
        for watch in list(self.watches):
            watch.close()

    def replan(self, key: str) -> None:
        """Generations of ``key`` became much faster: every wait of it plans its next poll
        again (one pass over the pending waits, on a rare event)."""
        for watch in list(self.watches):
            watch.replan(key)

    async def aclose(self) -> None:
        """:meth:`close`, then share what was learnt (briefly, best effort)."""
        self.close()
        await self.durations.aclose()

    async def watch(
        self, ids: list[str], *, timeout: float, policy: PollPolicy, notify: bool
    ) -> Watch:
        """Start the waits of one call; the caller must :meth:`Watch.stop` it (``finally``).

        Raises:
            ClientClosedError: the client is closed.
        """
        self._refuse_if_closed()
        births: dict[str, tuple[str, float]] = {}
        if policy.learn:
            births = {i: birth for i in ids if (birth := self.births.get(i)) is not None}
            try:  # the ledger may know the others, and the history of their kinds
                if self._ledger is not None and len(births) < len(ids):
                    unknown = [i for i in ids if i not in births]
                    births.update(await births_in(self._ledger, unknown, self._is_closed))
                if not self.closed:
                    await self.durations.load({key for key, _ in births.values()})
            except asyncio.CancelledError:
                if self.closed or (self.hub is not None and self.hub.closed):
                    for generation_id in ids:
                        log_abandoned(generation_id, "cancelled while shutting down", None)
                raise
            self._refuse_if_closed(ids)  # (it may have closed while the ledger answered)
        watch = Watch(self, policy, timeout, notify=notify)
        watch.start(ids, births)
        return watch

    def _is_closed(self) -> bool:
        return self.closed

    def _refuse_if_closed(self, ids: list[str] | None = None) -> None:
        """ClientClosedError once the client is closed (``ids``: waits that were starting,
        whose ids are logged at WARNING)."""
        if not self.closed:
            return
        if ids is None:
            raise ClientClosedError("this PrismClient is closed; create a new one")
        for generation_id in ids:
            log_abandoned(generation_id, "the client closed", None)
        raise ClientClosedError("the client was closed while the waits were starting")

    # -- what the client's methods (and the public functions) forward to ----------------------

    async def one(
        self,
        generation_id: str,
        *,
        timeout: float | None,
        poll: PollPolicy | None,
        on_update: OnUpdate | None,
    ) -> Generation:
        """``wait_for_generation``: the completed generation, or GenerationFailedError.

        Raises:
            WaitTimeoutError: not done after ``timeout`` seconds.
            ClientClosedError: the client was (or got) closed.
        """
        check_text("generation_id", generation_id)
        policy = poll or self.policy
        watch = await self.watch(
            [generation_id],
            timeout=_check_timeout(timeout, policy),
            policy=policy,
            notify=on_update is not None,
        )
        cancelled = False
        try:
            entry = await watch.finished(on_update)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            await watch.stop(cancelled=cancelled)
        if entry.error is not None:
            raise entry.error  # (outside the except blocks: no context)
        generation = entry.last
        assert generation is not None
        if generation.is_failed:
            raise GenerationFailedError(generation)
        return generation

    async def many(
        self,
        ids: GenerationIds,
        *,
        timeout: float | None,
        poll: PollPolicy | None,
        on_update: OnUpdate | None,
        return_exceptions: bool,
    ) -> list[Any]:
        """``wait_for_generations``: one wait per distinct id, results in input order."""
        id_list, policy = self._ids_and_policy(ids, poll)
        seconds = _check_timeout(timeout, policy)
        distinct = list(dict.fromkeys(id_list))
        results: dict[str, Any] = {}
        failure: BaseException | None = None
        if distinct:
            watch = await self.watch(
                distinct, timeout=seconds, policy=policy, notify=on_update is not None
            )
            cancelled = False
            try:
                while len(results) < len(distinct):
                    entry = await watch.finished(on_update)
                    outcome: Any = entry.error or entry.last
                    if isinstance(outcome, Generation) and outcome.is_failed:
                        outcome = GenerationFailedError(outcome)
                    results[entry.id] = outcome
                    if isinstance(outcome, BaseException) and not return_exceptions:
                        failure = outcome
                        break
            except asyncio.CancelledError:
                cancelled = True
                raise
            finally:
                await watch.stop(cancelled=cancelled)
        if failure is not None:
            raise failure  # (outside the except blocks: no context)
        return [results[generation_id] for generation_id in id_list]

    def as_completed(
        self, ids: GenerationIds, *, timeout: float | None, poll: PollPolicy | None
    ) -> AsCompleted:
        """``as_completed``: checked at once; the waits start when iteration does."""
        id_list, policy = self._ids_and_policy(ids, poll)
        seconds = _check_timeout(timeout, policy)
        return AsCompleted(self._as_completed(list(dict.fromkeys(id_list)), seconds, policy))

    async def _as_completed(
        self, ids: list[str], timeout: float, policy: PollPolicy
    ) -> AsyncGenerator[Generation, None]:
        if not ids:
            return
        watch = await self.watch(ids, timeout=timeout, policy=policy, notify=False)
        cancelled = False
        try:
            for _ in ids:
                entry = await watch.finished(None)
                if entry.error is not None:
                    break
                assert entry.last is not None
                yield entry.last
            else:
                return
        except (asyncio.CancelledError, GeneratorExit):
            cancelled = True
            raise
        finally:
            await watch.stop(cancelled=cancelled)
        raise entry.error

    def _ids_and_policy(
        self, ids: GenerationIds, poll: PollPolicy | None
    ) -> tuple[list[str], PollPolicy]:
        """The ids to wait for, and the policy.

        A template batch's latency estimate tunes the *default* cadence; a policy given to the
        call or to the client is used as is.
        """
        policy = poll or self.policy
        if isinstance(ids, TemplateGenerationBatch):
            if poll is None and not self.policy_given:
                policy = PollPolicy.from_latency_estimate(ids.latency_estimate, self.policy)
            return ids.ids, policy
        if isinstance(ids, GenerationBatch):
            return ids.ids, policy
        if isinstance(ids, str):
            raise InvalidRequestError("ids", "must be a list of generation ids, not one string")
        id_list = list(ids)
        for index, generation_id in enumerate(id_list):
            check_text(f"ids[{index}]", generation_id)
        return id_list, policy


def _check_timeout(timeout: float | None, policy: PollPolicy) -> float:
    if timeout is None:
        return policy.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidRequestError("timeout", "must be a positive number of seconds")
    return float(timeout)
