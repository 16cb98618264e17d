"""The fake's webhook sender: POSTs each finished template generation's webhook once."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp

from ._model import PrismBackend
from ._records import WebhookDelivery

__all__ = ["WebhookSender"]


class WebhookSender:
    """Delivers due webhooks in the background; failures are recorded, never raised."""

    def __init__(self, backend: PrismBackend) -> None:
        self.deliveries: list[WebhookDelivery] = []
        self._backend = backend
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        """Look for due webhooks now (a generation may have finished)."""
        self._wake.set()

    def start(self) -> None:
        """Start delivering (on the running loop)."""
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop; pending webhooks are dropped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drain(self, timeout: float) -> None:
        """Wait until every webhook that is due has been delivered (or has failed)."""
        async with asyncio.timeout(timeout):
            while self._in_flight or self._backend.webhooks_due():
                self._wake.set()
                await asyncio.sleep(0.01)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            due = self._backend.due_webhooks()
            self._in_flight += len(due)
            for url, payload in due:
                try:
                    await self._post(url, payload)
                finally:
                    self._in_flight -= 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self._wake.wait()

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self._session.post(url, json=payload) as response:
                await response.read()
                delivery = WebhookDelivery(url=url, payload=payload, status=response.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            delivery = WebhookDelivery(url=url, payload=payload, status=None, error=error)
        self.deliveries.append(delivery)
