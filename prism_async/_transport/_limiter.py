"""Fleet-wide admission control: a 429's ``Retry-After`` holds back every API request.

A client whose ledger is a :class:`~prism_async.ledger.RedisLedger` has an :class:`Admission`.
When one of its API requests is refused with a 429 that carries a ``Retry-After``, the client
holds its own API requests until then and records the pause in Redis (see
:mod:`prism_async.ledger._pauses`); every client sharing that ledger, in any process on any
machine, learns of it and holds its API requests until the pause ends too.

* The success path costs one comparison: the pause lives in memory (a monotonic deadline), and
  Redis is read by one background task per client, never on the way of a request.
* A notice reaches the other clients in one Redis hop (pub/sub); each also re-reads the pause
  every second, so even a lost notice is learnt within about a second.
* Waiting is not an attempt: each attempt (the first and every retry) waits, holding its slot,
  before it is sent; cancelling the awaiting task ends the wait at once, with nothing sent.
* A pause longer than the retry policy's ``max_retry_after`` is not waited out: the request
  raises :class:`~prism_async.RateLimitError` (``retry_after``: what is left) without being
  sent, as a 429 with that ``Retry-After`` would.
* Redis trouble never fails a request: it is logged at WARNING once, and the client carries on
  with the pauses it sees itself.
* Storage transfers never wait (another host, other limits), and a 429 from storage pauses
  nothing.

Without a Redis ledger a client has no :class:`Admission`: each request obeys its own 429.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from .._errors import APIStatusError, RateLimitError

__all__ = ["MAX_PAUSE", "Admission", "SharedPauses", "admission_for"]

T = TypeVar("T")

MAX_PAUSE = 3600.0
"""The longest pause recorded, in seconds, whatever a ``Retry-After`` says."""

_CLOSE_GRACE = 2.0
"""Seconds ``aclose`` gives a pause being recorded to reach Redis (the others need it)."""


class SharedPauses(Protocol):
    """Where a client's pauses meet those of the other clients sharing its ledger."""

    async def record(self, seconds: float) -> None:
        """Share a pause of ``seconds`` from now (the later of two pauses wins). Never raises."""

    async def follow(self, learn: Callable[[float], None]) -> None:
        """Call ``learn(seconds_left)`` for every pause in force or recorded later, until
        cancelled. Never raises (but ``CancelledError``)."""

    async def aclose(self) -> None:
        """Release the connections."""


class Admission:
    """When this client's API requests may be sent: not before a shared pause ends.

    Created by :func:`admission_for` and used by the HTTP layer: :meth:`must_wait` on every
    attempt (a plain call), :meth:`admit` when it says so, :meth:`saw` on every failure.
    """

    def __init__(self, shared: SharedPauses) -> None:
        self._shared = shared
        self._until = 0.0  # time.monotonic() before which no API request is sent
        self._follower: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._closed = False

    def must_wait(self) -> bool:
        """Whether the next attempt must go through :meth:`admit` first: a pause is in force
        (or the client has not started following the shared pauses yet)."""
        return self._until > time.monotonic() or self._follower is None

    def start(self) -> None:
        """Start following the shared pauses (idempotent; needs the running loop)."""
        if self._follower is None and not self._closed:
            self._follower = asyncio.get_running_loop().create_task(
                self._shared.follow(self.learn), name="prism-async: shared 429 pauses"
            )

    async def admit(self, max_wait: float) -> None:
        """Return once no pause is in force; sleep until it ends (cancellable).

        Raises:
            RateLimitError: the pause lasts more than ``max_wait`` seconds longer: nothing was
                sent (``maybe_sent`` False).
        """
        self.start()
        while (left := self._until - time.monotonic()) > 0:
            if left > max_wait:
                raise RateLimitError(
                    f"not sent: the account is rate limited for {left:.1f} s more (a 429's "
                    f"Retry-After, seen by a client sharing this ledger), longer than "
                    f"max_retry_after={max_wait:g}",
                    status_code=429,
                    retry_after=left,
                )
            await asyncio.sleep(left)

    def learn(self, seconds: float) -> None:
        """A pause of ``seconds`` from now is in force (the later of two pauses wins)."""
        until = time.monotonic() + min(seconds, MAX_PAUSE)
        if until > self._until:
            self._until = until

    def saw(self, exc: BaseException) -> None:
        """Look at an API request's failure: a 429 with a ``Retry-After`` pauses every client
        sharing the ledger (this one at once, the others through Redis)."""
        if not isinstance(exc, APIStatusError) or exc.status_code != 429:
            return
        seconds = exc.retry_after
        if not seconds or seconds <= 0:
            return
        seconds = min(seconds, MAX_PAUSE)
        self.learn(seconds)
        if not self._closed:
            task = asyncio.get_running_loop().create_task(self._shared.record(seconds))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    def guard(
        self, attempt: Callable[..., Awaitable[T]], max_wait: float
    ) -> Callable[[int], Awaitable[T]]:
        """``attempt`` (a retry's), admitted first and its failure looked at."""

        async def admitted(number: int) -> T:
            if self.must_wait():
                await self.admit(max_wait)
            try:
                return await attempt(number)
            except APIStatusError as exc:
                self.saw(exc)
                raise

        return admitted

    async def aclose(self) -> None:
        """Stop following; give pauses being recorded a moment to reach Redis; disconnect."""
        self._closed = True
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=_CLOSE_GRACE)
        tasks: list[asyncio.Task[Any]] = [*self._writes]
        if self._follower is not None:
            tasks.append(self._follower)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._shared.aclose()


def admission_for(ledger: object) -> Admission | None:
    """The admission control of a client with this ledger: shared through Redis for a
    :class:`~prism_async.ledger.RedisLedger`, else None (each request obeys its own 429)."""
    backend = sys.modules.get("prism_async.ledger._redis")  # loaded if a RedisLedger exists
    if backend is None or not isinstance(ledger, backend.RedisLedger):
        return None
    from ..ledger._pauses import RedisPauses

    return Admission(RedisPauses(ledger.url, ledger.prefix))
