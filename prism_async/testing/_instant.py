"""``instant_waits()``: waits and retries that do not sleep, for your tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from attrs import define, field

from .. import _clock

__all__ = ["Sleeps", "instant_waits"]


@define
class Sleeps:
    """The pauses the SDK took (without sleeping them) inside :func:`instant_waits`."""

    polls: list[float] = field(factory=list)
    """Seconds each wait would have slept before a status request (first poll included)."""
    retries: list[float] = field(factory=list)
    """Seconds each failed request would have slept before its next attempt."""


@contextmanager
def instant_waits() -> Iterator[Sleeps]:
    """Make the SDK's waits and request retries instant, and record the pauses they skipped.

    Inside the block, a wait polls again as soon as the event loop runs it (it still yields to
    other tasks at every pause), and a retried request is sent again at once; deadlines
    (``timeout=``) keep counting real time. Use it with the fake server to test code that waits::

        with instant_waits() as sleeps:
            video = await prism.wait_for_generation(batch.ids[0])
        assert sleeps.polls  # how often it would have slept
    """
    sleeps = Sleeps()

    def poll(seconds: float) -> float:
        sleeps.polls.append(seconds)
        return 0.0

    async def retry(seconds: float) -> None:
        sleeps.retries.append(seconds)
        await asyncio.sleep(0)

    restore = _clock.swap(poll=poll, retry=retry)
    try:
        yield sleeps
    finally:
        restore()
