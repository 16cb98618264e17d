"""The SDK's sleeps, in one place: between a wait's status requests, and between a request's
retries. :func:`prism_async.testing.instant_waits` swaps them for tests; nothing else does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["Sleep", "poll_sleep", "retry_sleep", "swap"]

Sleep = Callable[[float], Awaitable[None]]

_sleeps: dict[str, Sleep] = {"poll": asyncio.sleep, "retry": asyncio.sleep}


async def poll_sleep(seconds: float) -> None:
    """The pause of a wait between two status requests."""
    await _sleeps["poll"](seconds)


async def retry_sleep(seconds: float) -> None:
    """The backoff of a request between two attempts."""
    await _sleeps["retry"](seconds)


def swap(*, poll: Sleep, retry: Sleep) -> Callable[[], None]:
    """Replace both sleeps; returns what puts the previous ones back."""
    previous = dict(_sleeps)
    _sleeps.update(poll=poll, retry=retry)
    return lambda: _sleeps.update(previous)
