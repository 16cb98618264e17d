"""FakePrismServer's template webhooks, spoken to in raw HTTP: delivery, failure, draining.

These tests never use the SDK client: they send what the documented API (prism-api.md) receives
and check what it answers and what it POSTs to a receiver on loopback, so that tests written
against the fake prove something about the real API. Every server runs with
``generation_seconds=100`` so that only :meth:`advance` moves a generation along, never real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from prism_async.testing import FakePrismServer
from tests.conftest import free_port
from tests.fake_http import SECONDS, assert_error, call, template_generate

Serve = Callable[[web.Application], Awaitable[str]]


async def start_receiver(serve: Serve, delay: float = 0.0) -> tuple[str, list[dict[str, Any]]]:
    """A webhook receiver on loopback; returns its URL and the payloads it got, in order."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    return f"{await serve(app)}/hook", received


async def test_webhook_on_completion(
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    storage: aiohttp.ClientSession,
    serve: Serve,
) -> None:
    """A completed template generation POSTs the documented payload to ``webhook_url``, once."""
    hook_url, received = await start_receiver(serve)
    status, payload = await template_generate(
        http,
        server,
        "abc123",
        {"variables": {"hook": "Look at this"}, "webhook_url": hook_url},
    )
    assert status == 200, payload
    generation_id = payload["generations"][0]["generation_id"]
    await server.drain_webhooks()
    assert received == []

    server.advance(SECONDS)
    await server.drain_webhooks()
    assert len(received) == 1
    assert set(received[0]) == {"generation_id", "status", "template_id", "video_url", "error"}
    assert received[0]["generation_id"] == generation_id
    assert received[0]["status"] == "completed"
    assert received[0]["template_id"] == "abc123"
    assert received[0]["error"] is None
    async with storage.get(received[0]["video_url"]) as response:
        assert response.status == 200
    assert len(server.webhook_deliveries) == 1
    delivery = server.webhook_deliveries[0]
    assert delivery.url == hook_url
    assert delivery.status == 200
    assert delivery.error is None
    assert delivery.payload == received[0]

    server.advance(SECONDS)
    await server.drain_webhooks()
    await asyncio.sleep(0.1)
    assert len(received) == 1


async def test_webhook_on_failure(
    server: FakePrismServer, http: aiohttp.ClientSession, serve: Serve
) -> None:
    """A failed generation's webhook has status failed, video_url null and error set."""
    hook_url, received = await start_receiver(serve)
    body = {"variables": {"hook": "Look at this [fail]"}, "webhook_url": hook_url}
    status, payload = await template_generate(http, server, "abc123", body)
    assert status == 200, payload
    marked = payload["generations"][0]["generation_id"]
    body = {"variables": {"product": "Phone"}, "webhook_url": hook_url}
    status, payload = await template_generate(http, server, "product-unboxing", body)
    assert status == 200, payload
    forced = payload["generations"][0]["generation_id"]

    server.fail_generation(forced, "Content policy")
    await server.drain_webhooks()
    server.advance(SECONDS)
    await server.drain_webhooks()

    by_id = {p["generation_id"]: p for p in received}
    assert set(by_id) == {marked, forced}
    assert by_id[forced] == {
        "generation_id": forced,
        "status": "failed",
        "template_id": "product-unboxing",
        "video_url": None,
        "error": "Content policy",
    }
    assert by_id[marked]["status"] == "failed"
    assert by_id[marked]["video_url"] is None
    assert isinstance(by_id[marked]["error"], str)
    assert by_id[marked]["error"]


async def test_webhook_to_a_receiver_that_is_down_is_recorded(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A webhook to a dead receiver is recorded with status None and an error, never raised."""
    hook_url = f"http://127.0.0.1:{free_port()}/hook"
    status, payload = await template_generate(
        http, server, "featured-ugc-pitch", {"variables": {}, "webhook_url": hook_url}
    )
    assert status == 200, payload
    server.advance(SECONDS)
    await server.drain_webhooks()
    assert len(server.webhook_deliveries) == 1
    delivery = server.webhook_deliveries[0]
    assert delivery.url == hook_url
    assert delivery.status is None
    assert delivery.error
    assert delivery.payload["status"] == "completed"
    assert (await call(http, "GET", f"{server.base_url}/templates"))[0] == 200


async def test_drain_webhooks_waits_for_a_slow_receiver(
    server: FakePrismServer, http: aiohttp.ClientSession, serve: Serve
) -> None:
    """``drain_webhooks`` returns only once a due webhook has been delivered and recorded."""
    hook_url, received = await start_receiver(serve, delay=0.3)
    status, payload = await template_generate(
        http, server, "featured-ugc-pitch", {"variables": {}, "webhook_url": hook_url}
    )
    assert status == 200, payload
    server.advance(SECONDS)
    await server.drain_webhooks()
    deliveries_at_drain = list(server.webhook_deliveries)
    for _ in range(200):  # let the in-flight POST finish, so the teardown stays clean
        if server.webhook_deliveries:
            break
        await asyncio.sleep(0.01)
    assert len(received) == 1
    assert len(deliveries_at_drain) == 1
    assert deliveries_at_drain[0].status == 200


async def test_bad_webhook_url_is_refused(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A ``webhook_url`` that is not an HTTP(S) URL answers 400 validation_error."""
    status, payload = await template_generate(
        http, server, "featured-ugc-pitch", {"variables": {}, "webhook_url": "not a url"}
    )
    assert_error(status, payload, 400, "validation_error")
