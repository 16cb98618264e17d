"""The SDK's pauses, in one place: before a wait's status requests, and between a request's
retries. :func:`prism_async.testing.instant_waits` swaps them for tests; nothing else does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["PollDelay", "Sleep", "poll_delay", "retry_sleep", "swap"]

Sleep = Callable[[float], Awaitable[None]]
PollDelay = Callable[[float], float]


def _as_is(seconds: float) -> float:
    return seconds


_poll: list[PollDelay] = [_as_is]
_retry: list[Sleep] = [asyncio.sleep]


def poll_delay(seconds: float) -> float:
    """The seconds a wait really pauses before its next status request (the scheduler's
    timers use this), for a planned pause of ``seconds``."""
    return _poll[0](seconds)


async def retry_sleep(seconds: float) -> None:
    """The backoff of a request between two attempts."""
    await _retry[0](seconds)


def swap(*, poll: PollDelay, retry: Sleep) -> Callable[[], None]:
    """Replace both; returns what puts the previous ones back."""
    previous = (_poll[0], _retry[0])
    _poll[0], _retry[0] = poll, retry

    def restore() -> None:
        _poll[0], _retry[0] = previous

    return restore
