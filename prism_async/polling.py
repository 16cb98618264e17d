"""Waiting for generations: PollPolicy, wait_for_generation, wait_for_generations, as_completed.

Each wait is one poll loop built on tenacity: it retries on the *result* (the generation is not
terminal yet) and on transient failures of the status request, with exponential backoff from
``interval`` to ``max_interval`` and a little jitter so thousands of waits do not poll in
lock-step. The wait's own deadline is an ``asyncio.timeout`` around the whole loop, so it fires
on time even while a status request is in flight. A wait starts no background task: cancelling
the task that awaits it stops its polling at once.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Literal, overload

import attrs
import tenacity
from attrs import field, frozen, validators

from ._errors import (
    APIConnectionError,
    APIStatusError,
    GenerationFailedError,
    InvalidRequestError,
    RateLimitError,
    ResponseValidationError,
    WaitTimeoutError,
)
from ._validation import check_text
from .models.generations import Generation, GenerationBatch
from .models.templates import LatencyEstimate, TemplateGenerationBatch

if TYPE_CHECKING:
    from ._client import PrismClient

__all__ = [
    "GenerationIds",
    "OnUpdate",
    "PollPolicy",
    "as_completed",
    "wait_for_generation",
    "wait_for_generations",
]

logger = logging.getLogger("prism_async")

_non_negative = validators.ge(0.0)

OnUpdate = Callable[[Generation], object] | Callable[[Generation], Awaitable[object]]
"""``on_update``: a plain or async callable receiving the Generation when its status changes."""

GenerationIds = Iterable[str] | GenerationBatch | TemplateGenerationBatch
"""What the bulk waits accept: ids, or a batch from ``create`` or ``templates.generate``."""


@frozen
class PollPolicy:
    """How a wait for a generation polls its status.

    The first status request comes ``initial_delay`` seconds after the wait starts; then the
    interval starts at ``interval`` and grows by ``multiplier`` up to ``max_interval``. Each
    delay is spread by ``jitter`` (a fraction) so many waits do not poll in lock-step. A wait
    gives up after ``timeout`` seconds.
    """

    initial_delay: float = field(default=5.0, converter=float, validator=_non_negative)
    """Seconds before the first status request."""
    interval: float = field(default=5.0, converter=float, validator=validators.gt(0.0))
    """First interval between status requests, in seconds."""
    max_interval: float = field(default=30.0, converter=float, validator=validators.gt(0.0))
    """Longest interval between status requests, in seconds."""
    multiplier: float = field(default=1.5, converter=float, validator=validators.ge(1.0))
    """Growth of the interval after each status request."""
    jitter: float = field(
        default=0.1, converter=float, validator=[_non_negative, validators.le(1.0)]
    )
    """Random spread of each delay, as a fraction of it (0.1 = +/-10%)."""
    timeout: float = field(default=900.0, converter=float, validator=validators.gt(0.0))
    """Seconds before a wait raises ``WaitTimeoutError``."""

    @classmethod
    def from_latency_estimate(
        cls, estimate: LatencyEstimate | None, base: PollPolicy | None = None
    ) -> PollPolicy:
        """A policy paced by the server's estimate: a steady ``typical / 6``, clamped to 10-30 s.

        This is the cadence the API documentation recommends when a template submission returns
        ``latency_estimate_sec``. Without a usable estimate, ``base`` (or the defaults) is
        returned unchanged.
        """
        policy = base if base is not None else cls()
        if estimate is None or estimate.typical is None or estimate.typical <= 0:
            return policy
        interval = min(30.0, max(10.0, estimate.typical / 6))
        return attrs.evolve(policy, interval=interval, max_interval=interval, multiplier=1.0)

    def delay(self, poll_number: int) -> float:
        """The jittered delay after status request ``poll_number`` (1-based)."""
        base = min(self.max_interval, self.interval * self.multiplier ** (poll_number - 1))
        return self.jittered(base)

    def jittered(self, seconds: float) -> float:
        """``seconds`` spread by +/- ``jitter``."""
        if not self.jitter:
            return seconds
        return seconds * random.uniform(1.0 - self.jitter, 1.0 + self.jitter)


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
    """The policy's backoff, stretched to a server's Retry-After when one is given."""

    def __init__(self, policy: PollPolicy) -> None:
        self._policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        delay = self._policy.delay(retry_state.attempt_number)
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            exc = outcome.exception()
            if isinstance(exc, RateLimitError) and exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
        return delay


async def _sleep(seconds: float) -> None:
    """The sleep between status requests (a seam for tests)."""
    await asyncio.sleep(seconds)


async def _notify(on_update: OnUpdate | None, generation: Generation) -> None:
    if on_update is not None:
        result = on_update(generation)
        if inspect.isawaitable(result):
            await result


def _check_timeout(timeout: float | None, policy: PollPolicy) -> float:
    if timeout is None:
        return policy.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidRequestError("timeout", "must be a positive number of seconds")
    return float(timeout)


async def _wait_terminal(
    client: PrismClient,
    generation_id: str,
    *,
    timeout: float,
    policy: PollPolicy,
    on_update: OnUpdate | None,
) -> Generation:
    """Poll until the generation is completed or failed; return it either way."""
    last: Generation | None = None

    async def poll_once() -> Generation:
        nonlocal last
        generation = await client.generations.get(generation_id)
        changed = last is None or last.status != generation.status
        last = generation
        if changed:
            await _notify(on_update, generation)
        return generation

    hub = client.webhooks
    hint: asyncio.Event | None = None
    sleep: Callable[[float], Awaitable[None]] = _sleep
    if hub is not None:
        hint = hub.subscribe(generation_id)
        sleep = functools.partial(_sleep_or_hint, hint)
        if hub.expects(generation_id):  # its webhook will come: poll only as a fallback
            slow = max(hub.fallback_interval, policy.max_interval)
            policy = attrs.evolve(policy, interval=slow, max_interval=slow, multiplier=1.0)
    retrying = tenacity.AsyncRetrying(
        retry=_RETRY,
        wait=_PollWait(policy),
        stop=tenacity.stop_never,
        sleep=sleep,
        before_sleep=_log_transient,
        reraise=True,
    )
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            await sleep(policy.jittered(policy.initial_delay))
            return await retrying(poll_once)
    except TimeoutError:
        if deadline.expired():
            raise WaitTimeoutError(generation_id, timeout, last) from None
        raise
    finally:
        if hub is not None and hint is not None:
            hub.unsubscribe(generation_id, hint)


async def _sleep_or_hint(hint: asyncio.Event, seconds: float) -> None:
    """Sleep, unless a webhook says the generation is done: then poll at once to confirm."""
    if not hint.is_set():
        try:
            async with asyncio.timeout(seconds):
                await hint.wait()
        except TimeoutError:
            return
    hint.clear()


async def wait_for_generation(
    client: PrismClient,
    generation_id: str,
    *,
    timeout: float | None = None,
    poll: PollPolicy | None = None,
    on_update: OnUpdate | None = None,
) -> Generation:
    """Wait until a generation is completed and return it.

    Transient failures of the status requests (connection errors, timeouts, 429, 5xx) never
    end the wait; it keeps polling until its own timeout.

    Args:
        client: the :class:`~prism_async.PrismClient` to poll with.
        generation_id: the id to wait for.
        timeout: seconds before giving up; defaults to the policy's ``timeout``.
        poll: pacing; defaults to the client's ``poll`` policy.
        on_update: called with the Generation whenever its status changes (at least once,
            with the final state); may be async.

    Returns:
        The completed :class:`Generation` (with its ``video_url``).

    Raises:
        GenerationFailedError: the generation failed (``.generation.error`` says why).
        WaitTimeoutError: still not done after ``timeout`` (``.last`` is the last state seen).
        AuthenticationError, PermissionDeniedError, NotFoundError: end the wait at once.
        InvalidRequestError: an empty id or a bad timeout.
    """
    check_text("generation_id", generation_id)
    policy = poll or client.poll
    generation = await _wait_terminal(
        client,
        generation_id,
        timeout=_check_timeout(timeout, policy),
        policy=policy,
        on_update=on_update,
    )
    if generation.is_failed:
        raise GenerationFailedError(generation)
    return generation


def _ids_and_policy(
    client: PrismClient, ids: GenerationIds, poll: PollPolicy | None
) -> tuple[list[str], PollPolicy]:
    """The ids to wait for, and the policy.

    A template batch's latency estimate tunes the *default* cadence; a policy given to the
    call or to the client is used as is.
    """
    policy = poll or client.poll
    if isinstance(ids, TemplateGenerationBatch):
        if poll is None and client.poll == PollPolicy():
            policy = PollPolicy.from_latency_estimate(ids.latency_estimate, client.poll)
        return ids.ids, policy
    if isinstance(ids, GenerationBatch):
        return ids.ids, policy
    if isinstance(ids, str):
        raise InvalidRequestError("ids", "must be a list of generation ids, not one string")
    id_list = list(ids)
    for index, generation_id in enumerate(id_list):
        check_text(f"ids[{index}]", generation_id)
    return id_list, policy


async def _cancel_all(tasks: Iterable[asyncio.Task[Generation]]) -> None:
    """Cancel what is still running and wait until it has really stopped."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)


@overload
async def wait_for_generations(
    client: PrismClient,
    ids: GenerationIds,
    *,
    timeout: float | None = ...,
    poll: PollPolicy | None = ...,
    on_update: OnUpdate | None = ...,
    return_exceptions: Literal[False] = ...,
) -> list[Generation]: ...


@overload
async def wait_for_generations(
    client: PrismClient,
    ids: GenerationIds,
    *,
    timeout: float | None = ...,
    poll: PollPolicy | None = ...,
    on_update: OnUpdate | None = ...,
    return_exceptions: bool,
) -> list[Generation | BaseException]: ...


async def wait_for_generations(
    client: PrismClient,
    ids: GenerationIds,
    *,
    timeout: float | None = None,
    poll: PollPolicy | None = None,
    on_update: OnUpdate | None = None,
    return_exceptions: bool = False,
) -> list[Generation] | list[Generation | BaseException]:
    """Wait for many generations at once; results come back in input order.

    Every id gets its own poll loop; the client's connection pool bounds the requests in
    flight. A repeated id is polled once. A ``TemplateGenerationBatch`` carrying a latency
    estimate tunes the cadence when ``poll`` is not given.

    Args:
        client: the :class:`~prism_async.PrismClient` to poll with.
        ids: generation ids, or the batch returned by ``create`` / ``templates.generate``.
        timeout: seconds each wait may take; defaults to the policy's ``timeout``.
        poll: pacing; defaults to the client's ``poll`` policy.
        on_update: called with each Generation whenever its status changes; may be async.
        return_exceptions: put a failed or timed-out generation's exception in its place
            instead of raising the first error (and cancelling the other waits).

    Returns:
        The completed generations (or exceptions, with ``return_exceptions=True``), in order.
    """
    id_list, policy = _ids_and_policy(client, ids, poll)
    seconds = _check_timeout(timeout, policy)
    tasks = {
        generation_id: asyncio.create_task(
            wait_for_generation(
                client, generation_id, timeout=seconds, poll=policy, on_update=on_update
            )
        )
        for generation_id in dict.fromkeys(id_list)
    }
    try:
        results = await asyncio.gather(*tasks.values(), return_exceptions=return_exceptions)
    finally:
        await _cancel_all(tasks.values())
    by_id = dict(zip(tasks, results, strict=True))
    return [by_id[generation_id] for generation_id in id_list]


async def as_completed(
    client: PrismClient,
    ids: GenerationIds,
    *,
    timeout: float | None = None,
    poll: PollPolicy | None = None,
) -> AsyncIterator[Generation]:
    """Yield each generation as soon as it is terminal (completed *or* failed).

    Failed generations are yielded too: check ``generation.is_failed``. A wait that times
    out raises :class:`WaitTimeoutError` from the iterator, and an error that ends a wait
    (401, 403, 404) is raised likewise; the other waits are then cancelled. Leaving the loop
    early cancels the waits still running.

    Args:
        client: the :class:`~prism_async.PrismClient` to poll with.
        ids: generation ids, or the batch returned by ``create`` / ``templates.generate``.
        timeout: seconds each wait may take; defaults to the policy's ``timeout``.
        poll: pacing; defaults to the client's ``poll`` policy.
    """
    id_list, policy = _ids_and_policy(client, ids, poll)
    seconds = _check_timeout(timeout, policy)
    tasks = [
        asyncio.create_task(
            _wait_terminal(client, generation_id, timeout=seconds, policy=policy, on_update=None)
        )
        for generation_id in dict.fromkeys(id_list)
    ]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        await _cancel_all(tasks)
