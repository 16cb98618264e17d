"""The hub's side of a webhook bus: publishing, reading, and whether the bus can be relied on.

A bus is weather: Redis restarts, fails over, drops connections. Here, none of it is raised into
a webhook's answer or a wait, and no event is lost for it:

* an event that cannot be published is **kept** (in memory, the latest ``BACKLOG``, none older
  than the hub's ``keep_seconds``) and published again, in order, as soon as the bus takes it;
  events that come meanwhile join the queue at once (the webhook is answered without waiting);
* a read that fails is tried again (0.5 s, doubling up to 2 s), resuming where it stopped;
* while publishing or reading fails, :attr:`BusLink.healthy` is False: waits that rely on
  webhooks are woken (they poll at once) and poll at their normal cadence until it is back,
  and for ``_SETTLE`` seconds more (the time other processes take to publish what *they* kept:
  a wait does not go back to its slow poll before the events it may be owed have come);
* one WARNING says when the bus went down (and why), one INFO line when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from ._bus import WebhookBus
from ._event import WebhookEvent

__all__ = ["BACKLOG", "BusLink"]

logger = logging.getLogger("prism_async")

BACKLOG = 10_000
"""Most events kept while the bus is down (the oldest are dropped first)."""
_PUBLISH_TIMEOUT = 3.0
"""Seconds one publish may take before the bus counts as down."""
_PAUSES = (0.5, 2.0)
"""First and longest pause between attempts to read or publish again, in seconds."""
_SETTLE = _PAUSES[1] + 1.0
"""Seconds the bus must work again before it counts as healthy."""


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class BusLink:
    """One hub's use of its bus.

    Args:
        bus: the bus.
        origin: names this hub in this process (its own events are not dispatched twice).
        dispatch: delivers an event read from the bus to this process's waits.
        went_down: called when the bus stops being healthy.
        max_age: seconds after which a kept event is not worth publishing any more.
    """

    def __init__(
        self,
        bus: WebhookBus,
        *,
        origin: Callable[[], str],
        dispatch: Callable[[WebhookEvent], None],
        went_down: Callable[[], None],
        max_age: float,
    ) -> None:
        self.bus = bus
        self._origin = origin
        self._dispatch = dispatch
        self._went_down = went_down
        self._max_age = max_age
        self._backlog: deque[tuple[float, WebhookEvent, str]] = deque()
        self._failing: dict[str, str] = {}  # "publish" / "read" -> why
        self._down_since = 0.0
        self._settled_at = 0.0  # (monotonic) when it counts as healthy again
        self._dropped = 0
        self._late = 0
        self._reading: asyncio.Task[None] | None = None
        self._mending: asyncio.Task[None] | None = None
        self.shut = False

    @property
    def healthy(self) -> bool:
        """Whether events are being published and read: nothing fails, and nothing failed in
        the last ``_SETTLE`` seconds."""
        return not self._failing and time.monotonic() >= self._settled_at

    @property
    def kept(self) -> int:
        """How many events wait to be published again."""
        return len(self._backlog)

    # -- health ------------------------------------------------------------------------------

    def _down(self, part: str, exc: BaseException) -> None:
        logger.debug("webhook bus: %s failed", part, exc_info=exc)
        if part in self._failing:
            return
        first = not self._failing
        self._failing[part] = _reason(exc)
        if first:
            self._down_since = time.monotonic()
            logger.warning(
                "webhook bus down (%s failed: %s): events are kept to publish when it is back; "
                "waits poll at their normal cadence meanwhile",
                part,
                self._failing[part],
            )
            self._went_down()

    def _up(self, part: str) -> None:
        if self._failing.pop(part, None) is None or self._failing:
            return
        self._settled_at = time.monotonic() + _SETTLE
        seconds = time.monotonic() - self._down_since
        dropped, self._dropped = self._dropped, 0
        late, self._late = self._late, 0
        level = logging.WARNING if dropped else logging.INFO
        logger.log(
            level,
            "webhook bus back after %.1f s: kept events published: %d%s",
            seconds,
            late,
            f", {dropped} dropped (too many or too old)" if dropped else "",
        )

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, event: WebhookEvent) -> None:
        """Publish an event, or keep it to publish later; never raises (but cancellation)."""
        if self.shut:
            return
        if self._backlog or self._failing:  # down: the webhook's answer does not wait
            self._keep(event, self._origin())
            return
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT):
                await self.bus.publish(event, self._origin())
        except Exception as exc:
            self._keep(event, self._origin())
            self._down("publish", exc)

    def _keep(self, event: WebhookEvent, origin: str) -> None:
        if len(self._backlog) >= BACKLOG:
            self._backlog.popleft()
            self._dropped += 1
        self._backlog.append((time.monotonic(), event, origin))
        task = self._mending
        loop = asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            self._mending = loop.create_task(self._mend())

    async def _mend(self) -> None:
        """Publish the kept events, oldest first, as soon as the bus takes them."""
        pause = _PAUSES[0]
        while self._backlog:
            await asyncio.sleep(pause)
            try:
                while self._backlog:
                    kept_at, event, origin = self._backlog[0]
                    if time.monotonic() - kept_at <= self._max_age:
                        async with asyncio.timeout(_PUBLISH_TIMEOUT):
                            await self.bus.publish(event, origin)
                        self._late += 1
                    else:
                        self._dropped += 1
                    self._backlog.popleft()
            except Exception as exc:
                self._down("publish", exc)
                pause = min(pause * 2, _PAUSES[1])
        self._up("publish")

    # -- reading -----------------------------------------------------------------------------

    def listen(self) -> None:
        """Read the bus on the running loop (once; again on a new loop)."""
        loop = asyncio.get_running_loop()
        task = self._reading
        if task is None or task.done() or task.get_loop() is not loop:  # (tests: a new loop)
            self._reading = loop.create_task(self._read())

    async def _read(self) -> None:
        pause = _PAUSES[0]
        while True:
            try:
                async for item in self.bus.listen():
                    self._up("read")
                    pause = _PAUSES[0]
                    if item is not None and item[1] != self._origin():
                        self._dispatch(item[0])  # (ours were dispatched when received)
            except Exception as exc:
                self._down("read", exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, _PAUSES[1])

    # -- closing -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop reading, try once more to publish what is kept, release the bus."""
        self.shut = True
        for task in (self._reading, self._mending):
            if task is not None and task.get_loop() is asyncio.get_running_loop():
                while not task.done():  # (redis-py 8 can swallow a cancellation: ask again)
                    task.cancel()
                    await asyncio.wait([task], timeout=0.1)
        self._reading = self._mending = None
        if self._backlog:
            await self._flush()
        self._failing.clear()
        self._settled_at = 0.0
        await self.bus.aclose()

    async def _flush(self) -> None:
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT):
                while self._backlog:
                    _, event, origin = self._backlog[0]
                    await self.bus.publish(event, origin)
                    self._backlog.popleft()
        except Exception as exc:
            ids = [event.generation_id for _, event, _ in self._backlog]
            logger.warning(
                "webhook bus still down at close (%s): kept events not published (%d): %s",
                _reason(exc),
                len(ids),
                ", ".join(ids[:20]) + (", ..." if len(ids) > 20 else ""),
            )
            self._backlog.clear()

    def open(self) -> None:
        """Publish again after :meth:`aclose` (a hub started again)."""
        self.shut = False
