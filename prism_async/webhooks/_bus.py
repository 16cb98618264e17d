"""Webhook buses: a verified webhook received by one process reaches the waits of every process.

:class:`WebhookBus` is what :class:`~prism_async.webhooks.WebhookHub` needs from one;
:class:`RedisWebhookBus` is the one the SDK ships (``pip install "prism-async[redis]"``): a
Redis stream that every hub reads from its own position (a broadcast, not a competing queue:
each process sees every event). Events are hints, as always: a woken wait confirms by GET, and
keeps its slow poll, so a lost event costs latency, never a result. A bus only moves events and
raises when it cannot: the hub's side (``prism_async.webhooks._link``) keeps what it could not
publish, retries, and tells the waits when the bus is down.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import attrs

from ._event import WebhookEvent

__all__ = ["BusItem", "RedisWebhookBus", "WebhookBus"]

BusItem = tuple[WebhookEvent, str] | None
"""What :meth:`WebhookBus.listen` yields: an event and its origin, or None, a heartbeat that
says the bus is reading (again)."""


class WebhookBus(Protocol):
    """Carries webhook events between the hubs of many processes (one bus per hub)."""

    async def publish(self, event: WebhookEvent, origin: str) -> None:
        """Send a verified event to every hub (``origin`` names the sender); raise if it could
        not be sent (the hub keeps it and publishes it again later)."""

    def listen(self) -> AsyncIterator[BusItem]:
        """Every event published from now on, with its origin, until cancelled.

        It may yield None when it has (re)connected, so the hub knows the bus reads again
        before any event comes. It raises when reading fails: the hub then calls it again, and
        a bus that can resumes where it stopped, so that no event is skipped.
        """

    async def aclose(self) -> None:
        """Release the connection (and forget the read position)."""


class RedisWebhookBus:
    """A :class:`WebhookBus` on a Redis stream (``XADD`` to publish, ``XREAD`` per process).

    Args:
        url: e.g. ``redis://localhost:6379/0``.
        stream: the stream's key.
        maxlen: about how many recent events the stream keeps.
        replay: when a hub starts listening, it also reads the events of the last ``replay``
            seconds (by the Redis server's clock), so that one published just before a
            process's first wait is not missed.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = "prism:webhooks",
        maxlen: int = 100_000,
        replay: float = 5.0,
    ) -> None:
        from redis import asyncio as redis  # the ``redis`` extra, needed only when used

        if maxlen < 1 or replay < 0:
            raise ValueError("maxlen must be positive and replay not negative")
        self._redis = redis
        self.stream = stream
        self.maxlen = maxlen
        self.replay = float(replay)
        self._url = url
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._position: str | None = None  # the last entry read: listening again resumes there

    def __repr__(self) -> str:
        return f"RedisWebhookBus(stream={self.stream!r})"  # the URL may carry a password

    def _connection(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:  # connections belong to one loop
            self._client = self._redis.Redis.from_url(  # (a read outlasts the XREAD's block)
                self._url, decode_responses=True, socket_connect_timeout=5.0, socket_timeout=10.0
            )
            self._loop = loop
        return self._client

    async def publish(self, event: WebhookEvent, origin: str) -> None:
        """``XADD`` the event (raises ``redis.RedisError`` or ``OSError`` when Redis fails)."""
        fields = {"event": json.dumps(attrs.asdict(event)), "origin": origin}
        await self._connection().xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)

    async def _start_id(self) -> str:
        seconds, microseconds = await self._connection().time()
        start_ms = int(seconds) * 1000 + int(microseconds) // 1000 - int(self.replay * 1000)
        return f"{max(start_ms, 0)}-0"

    async def listen(self) -> AsyncIterator[BusItem]:
        """Read the stream from the last position read (the last ``replay`` seconds at first);
        yields None once connected. Raises ``redis.RedisError`` or ``OSError`` when Redis
        fails: calling it again resumes where it stopped."""
        if self._position is None:
            self._position = await self._start_id()
        else:
            await self._connection().ping()
        yield None
        while True:
            answer = await self._connection().xread(
                {self.stream: self._position}, count=100, block=5000
            )
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    self._position = entry_id
                    try:
                        event = WebhookEvent(**json.loads(fields["event"]))
                    except (KeyError, TypeError, ValueError):
                        continue  # not one of ours
                    yield event, str(fields.get("origin", ""))

    async def aclose(self) -> None:
        """Close the connection; the next :meth:`listen` starts from the last seconds again."""
        self._position = None
        client, self._client = self._client, None
        loop, self._loop = self._loop, None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()  # (a client of another, finished loop cannot be closed here)
