"""Waiting for generations: PollPolicy, wait_for_generation, wait_for_generations, as_completed.

Every wait is one poll loop (see :mod:`prism_async._waiting._engine`); these helpers start them, gather
their results and make sure none outlives its caller: a bulk wait that ends (by an error, a
cancellation, or the caller leaving ``as_completed`` early) cancels the waits still running and
retrieves every outcome, so nothing is left polling and asyncio never reports a "Task exception
was never retrieved".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Literal, Protocol, overload

from ._errors import GenerationFailedError, InvalidRequestError
from ._validation import check_text
from ._waiting._engine import OnUpdate, PollPolicy, Waiter
from .models.generations import Generation, GenerationBatch
from .models.templates import TemplateGenerationBatch

__all__ = [
    "AsCompleted",
    "GenerationIds",
    "OnUpdate",
    "PollPolicy",
    "as_completed",
    "wait_for_generation",
    "wait_for_generations",
]

GenerationIds = Iterable[str] | GenerationBatch | TemplateGenerationBatch
"""What the bulk waits accept: ids, or a batch from ``create`` or ``templates.generate``."""


class _Client(Protocol):
    """What the helpers need of a client: :class:`~prism_async.PrismClient` has it."""

    @property
    def _waiter(self) -> Waiter: ...


def _check_timeout(timeout: float | None, policy: PollPolicy) -> float:
    if timeout is None:
        return policy.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidRequestError("timeout", "must be a positive number of seconds")
    return float(timeout)


async def wait_for_generation(
    client: _Client,
    generation_id: str,
    *,
    timeout: float | None = None,
    poll: PollPolicy | None = None,
    on_update: OnUpdate | None = None,
) -> Generation:
    """Wait until a generation is completed and return it.

    Transient failures of the status requests (connection errors, timeouts, 429, 5xx) never
    end the wait; it keeps polling until its own timeout. Each status request is one attempt:
    the wait's backoff spaces them (stretched by a ``Retry-After``).

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
        ClientClosedError: the client was closed (a running wait ends at once).
        InvalidRequestError: an empty id or a bad timeout.
    """
    waiter = client._waiter
    check_text("generation_id", generation_id)
    policy = poll or waiter.policy
    generation = await waiter.wait(
        generation_id,
        timeout=_check_timeout(timeout, policy),
        policy=policy,
        on_update=on_update,
    )
    if generation.is_failed:
        raise GenerationFailedError(generation)
    return generation


def _ids_and_policy(
    waiter: Waiter, ids: GenerationIds, poll: PollPolicy | None
) -> tuple[list[str], PollPolicy]:
    """The ids to wait for, and the policy.

    A template batch's latency estimate tunes the *default* cadence; a policy given to the
    call or to the client is used as is.
    """
    policy = poll or waiter.policy
    if isinstance(ids, TemplateGenerationBatch):
        if poll is None and not waiter.policy_given:
            policy = PollPolicy.from_latency_estimate(ids.latency_estimate, waiter.policy)
        return ids.ids, policy
    if isinstance(ids, GenerationBatch):
        return ids.ids, policy
    if isinstance(ids, str):
        raise InvalidRequestError("ids", "must be a list of generation ids, not one string")
    id_list = list(ids)
    for index, generation_id in enumerate(id_list):
        check_text(f"ids[{index}]", generation_id)
    return id_list, policy


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a finished task's exception as retrieved (its owner still gets it)."""
    if not task.cancelled():
        task.exception()


async def _cancel_all(tasks: Iterable[asyncio.Task[Generation]]) -> None:
    """Cancel what is still running, wait until it has really stopped, and retrieve every
    outcome, so that asyncio never reports a "Task exception was never retrieved"."""
    tasks = list(tasks)
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    try:
        if pending:
            await asyncio.wait(pending)
    finally:
        for task in tasks:
            if task.done():
                _retrieve(task)
            else:  # cancelled again while waiting: retrieve whenever they end
                task.add_done_callback(_retrieve)


@overload
async def wait_for_generations(
    client: _Client,
    ids: GenerationIds,
    *,
    timeout: float | None = ...,
    poll: PollPolicy | None = ...,
    on_update: OnUpdate | None = ...,
    return_exceptions: Literal[False] = ...,
) -> list[Generation]: ...


@overload
async def wait_for_generations(
    client: _Client,
    ids: GenerationIds,
    *,
    timeout: float | None = ...,
    poll: PollPolicy | None = ...,
    on_update: OnUpdate | None = ...,
    return_exceptions: bool,
) -> list[Generation | BaseException]: ...


async def wait_for_generations(
    client: _Client,
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
    estimate tunes the cadence when no policy was chosen (for the call or the client).

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
    id_list, policy = _ids_and_policy(client._waiter, ids, poll)
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


class AsCompleted(AsyncIterator[Generation]):
    """What :func:`as_completed` returns: an async iterator, and an async context manager.

    Leaving the ``async with`` block (or calling :meth:`aclose`) cancels the waits still
    running at once, even after a ``break``::

        async with prism.as_completed(ids) as finished:
            async for generation in finished:
                ...
                break  # every other wait stops here

    A plain ``async for`` works too, but after a ``break`` its waits go on until the iterator
    is garbage-collected; ``contextlib.aclosing(prism.as_completed(ids))`` is the same as the
    ``async with`` form.
    """

    def __init__(self, generator: AsyncGenerator[Generation, None]) -> None:
        self._generator = generator

    def __aiter__(self) -> AsCompleted:
        return self

    async def __anext__(self) -> Generation:
        return await self._generator.__anext__()

    async def aclose(self) -> None:
        """Cancel the waits still running and wait until they have stopped."""
        await self._generator.aclose()

    async def __aenter__(self) -> AsCompleted:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def as_completed(
    client: _Client,
    ids: GenerationIds,
    *,
    timeout: float | None = None,
    poll: PollPolicy | None = None,
) -> AsCompleted:
    """Yield each generation as soon as it is terminal (completed *or* failed).

    Failed generations are yielded too: check ``generation.is_failed``. A wait that times
    out raises :class:`WaitTimeoutError` from the iterator, and an error that ends a wait
    (401, 403, 404) is raised likewise; the other waits are then cancelled. Use it as
    ``async with prism.as_completed(ids) as finished: async for g in finished: ...`` so that
    leaving the block early (``break``, an exception) stops every wait at once.

    Args:
        client: the :class:`~prism_async.PrismClient` to poll with.
        ids: generation ids, or the batch returned by ``create`` / ``templates.generate``.
        timeout: seconds each wait may take; defaults to the policy's ``timeout``.
        poll: pacing; defaults to the client's ``poll`` policy.

    Raises:
        InvalidRequestError: bad ids or timeout (at once, before any wait starts).
    """
    waiter = client._waiter
    id_list, policy = _ids_and_policy(waiter, ids, poll)
    seconds = _check_timeout(timeout, policy)
    return AsCompleted(_as_completed(waiter, list(dict.fromkeys(id_list)), seconds, policy))


async def _as_completed(
    waiter: Waiter, ids: list[str], timeout: float, policy: PollPolicy
) -> AsyncGenerator[Generation, None]:
    tasks = [
        asyncio.create_task(
            waiter.wait(generation_id, timeout=timeout, policy=policy, on_update=None)
        )
        for generation_id in ids
    ]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        await _cancel_all(tasks)
