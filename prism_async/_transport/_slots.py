"""Slots: the bound on requests in flight, as a FIFO queue with an uncontended fast path."""

from __future__ import annotations

import asyncio
from collections import deque

from .._errors import ClientClosedError

__all__ = ["Slots"]


class Slots:
    """A semaphore whose uncontended acquire is a plain call (this is on every API call).

    ``release`` hands a slot straight to the oldest waiter, so nobody can overtake the queue;
    ``close`` ends every waiter with :class:`ClientClosedError`.
    """

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._queue: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is queued."""
        if self._free > 0 and not self._queue:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot (after ``try_acquire`` said no)."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # handed a slot while being cancelled: pass it on
            elif waiter in self._queue:  # (release may have dropped it already)
                self._queue.remove(waiter)
            raise

    def release(self) -> None:
        """Give the slot to the oldest waiter, or free it."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def close(self) -> None:
        """End every queued waiter with :class:`ClientClosedError`."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_exception(ClientClosedError("the client was closed"))
                waiter.exception()  # retrieved here: a waiter cancelled meanwhile is not noise
