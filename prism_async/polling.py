"""Waiting for generations: PollPolicy, wait_for_generation, wait_for_generations, as_completed.

The functions here take a client and forward to its methods; the engine behind them
(``prism_async._waiting``) keeps every wait of a client in one scheduler and makes sure none
outlives its caller: a bulk wait that ends (by an error, a cancellation, or the caller leaving
``as_completed`` early) stops the waits still running and their requests in flight.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Literal, overload

import attrs
from attrs import field, frozen, validators

from .models.generations import Generation, GenerationBatch
from .models.templates import LatencyEstimate, TemplateGenerationBatch

if TYPE_CHECKING:
    from ._client import PrismClient

__all__ = [
    "AsCompleted",
    "GenerationIds",
    "OnUpdate",
    "PollPolicy",
    "as_completed",
    "wait_for_generation",
    "wait_for_generations",
]

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

    With ``learn=True`` (the default) and some history, polls follow instead how long
    generations of the same kind took, counted from the generation's creation: none before a
    finish is plausible, then as often as the backoff above would poll at that age (at most
    ``max_interval`` apart, less the jitter); a wait on an id that finished long ago polls at
    once.
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
    """Random spread of each delay, as a fraction of it: 0.1 = +/-10%. (``RetryPolicy.jitter``
    is different: a switch for "full jitter" between 0 and the backoff.)"""
    timeout: float = field(default=900.0, converter=float, validator=validators.gt(0.0))
    """Seconds before a wait raises ``WaitTimeoutError``."""
    learn: bool = field(default=True, validator=validators.instance_of(bool))
    """Schedule the polls from how long generations of the same model, duration, resolution
    and template took before (counted from each generation's creation); ``max_interval``
    still bounds how late a finished generation is noticed. False: the fixed backoff above."""

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
    return await client.wait_for_generation(
        generation_id, timeout=timeout, poll=poll, on_update=on_update
    )


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

    Every id gets its own wait in the client's scheduler; the client's connection pool bounds
    the requests in flight. A repeated id is polled once. A ``TemplateGenerationBatch``
    carrying a latency estimate tunes the cadence when no policy was chosen (for the call or
    the client).

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
    return await client.wait_for_generations(
        ids,
        timeout=timeout,
        poll=poll,
        on_update=on_update,
        return_exceptions=return_exceptions,
    )


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
    client: PrismClient,
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
    return client.as_completed(ids, timeout=timeout, poll=poll)
