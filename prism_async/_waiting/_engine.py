"""The engine of the waits: one poll loop per generation; one, many, as completed.

A wait is one poll loop built on tenacity: it retries on the *result* (the generation is not
terminal yet) and on transient failures of the status request, with exponential backoff from
``interval`` to ``max_interval`` and a little jitter so thousands of waits do not poll in
lock-step. Each status request is a single attempt: the loop's backoff is the only spacing (a
``Retry-After`` stretches it), so a struggling server sees one request per wait per delay. The
wait's own deadline is an ``asyncio.timeout`` around the whole loop, so it fires on time even
while a status request is in flight. A wait starts no background task: cancelling the task that
awaits it stops its polling at once.

The loop needs no client: a :class:`Waiter` gives it a single-attempt status fetch, the default
policy and the webhook hub, and ends every running wait with :class:`ClientClosedError` when the
client closes. A wait that ends before its generation because the app is stopping (the client
closed, or a cancellation after the hub closed: a server's graceful-shutdown timeout) logs the
generation's id at WARNING first, so that no paid video is lost with the task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import tenacity

from .._callbacks import call_maybe_async
from .._clock import poll_sleep
from .._errors import (
    APIConnectionError,
    APIStatusError,
    ClientClosedError,
    GenerationFailedError,
    InvalidRequestError,
    ResponseValidationError,
    WaitTimeoutError,
)
from .._validation import check_text
from ..models.generations import Generation, GenerationBatch
from ..models.templates import TemplateGenerationBatch
from ..polling import AsCompleted, GenerationIds, OnUpdate, PollPolicy
from ._tasks import cancel_all

if TYPE_CHECKING:
    from ..webhooks import WebhookHub

__all__ = ["Fetch", "Waiter"]

logger = logging.getLogger("prism_async")

Fetch = Callable[[str], Awaitable[Generation]]
"""One status request for a generation id: a single attempt, no retries of its own."""


def _is_transient(exc: BaseException) -> bool:
    """Failures of a status request that must not end a wait (the video may still be fine)."""
    if isinstance(exc, APIConnectionError | ResponseValidationError):
        return True
    if isinstance(exc, APIStatusError):
        return exc.status_code in (408, 429) or exc.status_code >= 500
    return False


def _not_terminal(generation: Generation) -> bool:
    return not generation.is_done


def _log_transient(state: tenacity.RetryCallState) -> None:
    outcome = state.outcome
    if outcome is not None and outcome.failed:
        logger.debug("status request failed, the wait goes on: %s", outcome.exception())


_RETRY = tenacity.retry_if_result(_not_terminal) | tenacity.retry_if_exception(_is_transient)


class _PollWait(tenacity.wait.wait_base):
    """The policy's backoff, stretched to a server's ``Retry-After`` (429, 503, any status);
    the ``normal`` policy while the hub is not reliable (its bus is down), for good once it
    closes."""

    def __init__(
        self, policy: PollPolicy, *, normal: PollPolicy | None = None, hub: WebhookHub | None = None
    ) -> None:
        self._policy = policy
        self._normal = normal
        self._hub = hub

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        policy = self._policy
        if self._normal is not None and self._hub is not None and not self._hub.reliable:
            policy = self._normal  # no webhook may come now
            if self._hub.closed:
                self._policy, self._normal = policy, None  # nor any more
        delay = policy.delay(retry_state.attempt_number)
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            exc = outcome.exception()
            if isinstance(exc, APIStatusError) and exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
        return delay


def _log_abandoned(generation_id: str, why: str, last: Generation | None) -> None:
    """A wait ends before its generation did: the id must not be lost with it."""
    logger.warning(
        "wait for generation %s ended before the generation did (%s; last status: %s): "
        "it goes on, and is paid for; wait for it again by its id",
        generation_id,
        why,
        last.status if last is not None else "not polled yet",
        extra={"prism_generation_ids": [generation_id]},
    )


async def _sleep_or_hint(hint: asyncio.Event, seconds: float) -> None:
    """Sleep, unless a webhook says the generation is done: then poll at once to confirm."""
    if not hint.is_set():
        try:
            async with asyncio.timeout(seconds):
                await hint.wait()
        except TimeoutError:
            return
    hint.clear()


class Waiter:
    """What the waits of one client share. :class:`~prism_async.PrismClient` makes one.

    Args:
        fetch: one status request (a single attempt: the wait's backoff spaces them).
        policy: the client's default policy.
        policy_given: whether the user chose that policy (a template batch's latency estimate
            then does not replace it).
        hub: the client's webhook hub, or None.
        on_done: awaited with each terminal generation a wait returns (the ledger records it).
    """

    def __init__(
        self,
        fetch: Fetch,
        policy: PollPolicy,
        *,
        policy_given: bool,
        hub: WebhookHub | None,
        on_done: Callable[[Generation], Awaitable[None]] | None = None,
    ) -> None:
        self.fetch = fetch
        self.on_done = on_done
        self.policy = policy
        self.policy_given = policy_given
        self.hub = hub
        self.closed = False
        self._running: dict[asyncio.Task[Any], int] = {}  # task -> waits it is inside
        self._closing: set[asyncio.Task[Any]] = set()  # cancelled by close()

    def close(self) -> None:
        """End every running wait with :class:`ClientClosedError` (each logs its generation id
        at WARNING), and refuse new ones."""
        self.closed = True
        current = asyncio.current_task()
        for task in self._running:
            if task is not current and task not in self._closing and not task.done():
                self._closing.add(task)
                task.cancel()

    async def wait(
        self,
        generation_id: str,
        *,
        timeout: float,
        policy: PollPolicy,
        on_update: OnUpdate | None,
    ) -> Generation:
        """Poll until the generation is completed or failed; return it either way.

        Raises:
            WaitTimeoutError: not done after ``timeout`` seconds.
            ClientClosedError: the client was (or got) closed.
        """
        if self.closed:
            raise ClientClosedError("this PrismClient is closed; create a new one")
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task under asyncio
            raise RuntimeError("waits run inside an asyncio task")
        cancelling = task.cancelling()
        last: Generation | None = None
        fetch = self.fetch

        async def poll_once() -> Generation:
            nonlocal last
            generation = await fetch(generation_id)
            changed = last is None or last.status != generation.status
            last = generation
            if changed:
                await call_maybe_async(on_update, generation)
            return generation

        hub = self.hub
        hint: asyncio.Event | None = None
        sleep: Callable[[float], Awaitable[None]] = poll_sleep
        normal = policy
        if hub is not None:
            hint = hub.subscribe(generation_id)
            sleep = functools.partial(_sleep_or_hint, hint)
            if hub.expects(generation_id):  # its webhook will come: poll only as a fallback
                slow = max(hub.fallback_interval, policy.max_interval)
                policy = attrs.evolve(policy, interval=slow, max_interval=slow, multiplier=1.0)
        retrying = tenacity.AsyncRetrying(
            retry=_RETRY,
            wait=_PollWait(policy, normal=normal, hub=hub),
            stop=tenacity.stop_never,
            sleep=sleep,
            before_sleep=_log_transient,
            reraise=True,
        )
        deadline = asyncio.timeout(timeout)
        self._running[task] = self._running.get(task, 0) + 1
        try:
            async with deadline:
                await sleep(policy.jittered(policy.initial_delay))
                generation: Generation = await retrying(poll_once)
                if self.on_done is not None:
                    await self.on_done(generation)
                return generation
        except TimeoutError:
            if not deadline.expired():
                raise
            closed = False
        except asyncio.CancelledError:
            closing = task in self._closing
            self._closing.discard(task)
            if closing or self.closed or (hub is not None and hub.closed):  # shutting down
                why = "the client closed" if closing else "cancelled while shutting down"
                _log_abandoned(generation_id, why, last)
            if not closing or task.uncancel() > cancelling:  # (cancelled by its owner: wins)
                raise
            closed = True
        finally:
            if hub is not None and hint is not None:
                hub.unsubscribe(generation_id, hint)
            inside = self._running.pop(task) - 1
            if inside:
                self._running[task] = inside
        # Raised here, outside the except blocks, so that the errors carry no context.
        if closed:
            raise ClientClosedError(f"the client was closed while waiting for {generation_id}")
        raise WaitTimeoutError(generation_id, timeout, last)

    # -- what the client's methods (and the public functions) forward to ----------------------

    async def one(
        self,
        generation_id: str,
        *,
        timeout: float | None,
        poll: PollPolicy | None,
        on_update: OnUpdate | None,
    ) -> Generation:
        """``wait_for_generation``: the completed generation, or GenerationFailedError."""
        check_text("generation_id", generation_id)
        policy = poll or self.policy
        generation = await self.wait(
            generation_id,
            timeout=_check_timeout(timeout, policy),
            policy=policy,
            on_update=on_update,
        )
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
        tasks = {
            generation_id: asyncio.create_task(
                self.one(generation_id, timeout=seconds, poll=policy, on_update=on_update)
            )
            for generation_id in dict.fromkeys(id_list)
        }
        try:
            results = await asyncio.gather(*tasks.values(), return_exceptions=return_exceptions)
        finally:
            await cancel_all(tasks.values())
        by_id = dict(zip(tasks, results, strict=True))
        return [by_id[generation_id] for generation_id in id_list]

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
        tasks = [
            asyncio.create_task(
                self.wait(generation_id, timeout=timeout, policy=policy, on_update=None)
            )
            for generation_id in ids
        ]
        try:
            for next_done in asyncio.as_completed(tasks):
                yield await next_done
        finally:
            await cancel_all(tasks)

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
