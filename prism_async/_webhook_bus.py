"""Webhook buses: a verified webhook received by one process reaches the waits of every process.

:class:`WebhookBus` is what :class:`~prism_async.webhooks.WebhookHub` needs from one;
:class:`RedisWebhookBus` is the one the SDK ships (``pip install "prism-async[redis]"``): a
Redis stream that every hub reads from its own position (a broadcast, not a competing queue:
each process sees every event). Events are hints, as always: a woken wait confirms by GET, and
keeps its slow poll, so a lost event costs latency, never a result.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .webhooks import WebhookEvent

__all__ = ["RedisWebhookBus", "WebhookBus"]

logger = logging.getLogger("prism_async")


class WebhookBus(Protocol):
    """Carries webhook events between the hubs of many processes."""

    async def publish(self, event: WebhookEvent, origin: str) -> None:
        """Send a verified event to every hub (``origin`` names the sender)."""

    def listen(self) -> AsyncIterator[tuple[WebhookEvent, str]]:
        """Every event published from now on, with its origin, until cancelled."""

    async def aclose(self) -> None:
        """Release the connection."""


class RedisWebhookBus:
    """A :class:`WebhookBus` on a Redis stream (``XADD`` to publish, ``XREAD`` per process).

    Args:
        url: e.g. ``redis://localhost:6379/0``.
        stream: the stream's key.
        maxlen: about how many recent events the stream keeps.
    """

    def __init__(self, url: str, *, stream: str = "prism:webhooks", maxlen: int = 100_000) -> None:
        from redis import asyncio as redis  # the ``redis`` extra, needed only when used

        self._redis = redis
        self.stream = stream
        self.maxlen = maxlen
        self._url = url
        self._client: Any = None

    def __repr__(self) -> str:
        return f"RedisWebhookBus(stream={self.stream!r})"  # the URL may carry a password

    def _connection(self) -> Any:
        if self._client is None:
            self._client = self._redis.Redis.from_url(self._url, decode_responses=True)
        return self._client

    async def publish(self, event: WebhookEvent, origin: str) -> None:
        import attrs

        fields = {"event": json.dumps(attrs.asdict(event)), "origin": origin}
        await self._connection().xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)

    async def listen(self) -> AsyncIterator[tuple[WebhookEvent, str]]:
        from .webhooks import WebhookEvent

        last: str | None = None  # from the stream's newest entry when the listening starts
        pause = 0.5
        while True:
            try:
                if last is None:
                    newest = await self._connection().xrevrange(self.stream, count=1)
                    last = newest[0][0] if newest else "0-0"
                answer = await self._connection().xread({self.stream: last}, count=100, block=5000)
            except (OSError, self._redis.RedisError) as exc:
                logger.warning("webhook bus: %s; reading again in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            pause = 0.5
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    last = entry_id
                    try:
                        event = WebhookEvent(**json.loads(fields["event"]))
                    except (KeyError, TypeError, ValueError):
                        continue  # not one of ours
                    yield event, str(fields.get("origin", ""))

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
