"""Webhooks: parsing, the receiver's checks, and waits woken by real deliveries from the fake."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from prism_async import InvalidRequestError, PollPolicy, PrismClient
from prism_async.testing import FakePrismServer
from prism_async.webhooks import (
    TOKEN_PARAM,
    InvalidWebhookError,
    WebhookEvent,
    WebhookHub,
    parse_webhook,
)

Serve = Callable[[web.Application], Awaitable[str]]
SLOW = PollPolicy(initial_delay=0.05, interval=30, max_interval=30, timeout=30)
COMPLETED = {
    "generation_id": "gen_abc123",
    "status": "completed",
    "template_id": "abc123",
    "video_url": "https://presigned-s3-url...",
    "error": None,
}
FAILED = {
    "generation_id": "gen_abc123",
    "status": "failed",
    "template_id": "abc123",
    "video_url": None,
    "error": "Generation timed out",
}


def test_parse_documented_payloads() -> None:
    """Both documented payloads parse; extra keys are ignored."""
    done = parse_webhook(json.dumps(COMPLETED))
    assert done == WebhookEvent("gen_abc123", "completed", "abc123", "https://presigned-s3-url...")
    assert done.is_terminal
    failed = parse_webhook(json.dumps({**FAILED, "attempt": 2}).encode())
    assert failed.error == "Generation timed out"
    assert failed.video_url is None
    running = parse_webhook('{"generation_id": "g", "status": "generating"}')
    assert not running.is_terminal


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"status": "completed"}', "generation_id"),
        ('{"generation_id": "", "status": "completed"}', "generation_id"),
        ('{"generation_id": 7, "status": "completed"}', "generation_id"),
        ('{"generation_id": "g"}', "status"),
        ('{"generation_id": "g", "status": null}', "status"),
    ],
)
def test_malformed_payloads_are_refused(body: str | bytes, reason: str) -> None:
    """A body without a generation_id string and a status string is InvalidWebhookError."""
    with pytest.raises(InvalidWebhookError, match=reason):
        parse_webhook(body)


def test_url_for_carries_the_token() -> None:
    """url_for adds the token, keeps other query parameters, and owns() recognises it."""
    hub = WebhookHub(secret="s" * 32)
    url = hub.url_for("https://myapp.example/prism/hook?tenant=7")
    assert url == f"https://myapp.example/prism/hook?tenant=7&{TOKEN_PARAM}={'s' * 32}"
    assert hub.owns(url)
    assert not hub.owns("https://myapp.example/prism/hook?prism_token=guess")
    assert not WebhookHub().owns(url)
    with pytest.raises(ValueError):
        hub.url_for("/relative/hook")
    with pytest.raises(ValueError):
        WebhookHub(secret="short")


async def test_handle_checks_token_size_and_shape() -> None:
    """The core receiver answers 401, 413, 400 or 200."""
    hub = WebhookHub(secret="t" * 32, max_body=200)
    good = {TOKEN_PARAM: "t" * 32}
    assert (await hub.handle(json.dumps(COMPLETED), {})).status == 401
    assert (await hub.handle(json.dumps(COMPLETED), {TOKEN_PARAM: "t" * 31 + "x"})).status == 401
    assert (await hub.handle("x" * 201, good)).status == 413
    assert (await hub.handle("{}", good)).status == 400
    reply = await hub.handle(json.dumps(COMPLETED), good)
    assert (reply.status, reply.message) == (200, "ok")


@pytest.fixture
async def receiver(serve: Serve) -> tuple[WebhookHub, str]:
    """A hub mounted on an aiohttp app on loopback; yields (hub, webhook URL)."""
    hub = WebhookHub(max_body=4096, fallback_interval=30)
    app = web.Application()
    app.router.add_post("/prism/hook", hub.aiohttp_handler)
    root = await serve(app)
    return hub, hub.url_for(f"{root}/prism/hook")


async def test_aiohttp_handler_over_http(receiver: tuple[WebhookHub, str]) -> None:
    """Over real HTTP: wrong token 401, oversized 413, malformed 400, good 200."""
    _hub, url = receiver
    bare = url.split("?")[0]
    async with aiohttp.ClientSession() as http:
        async with http.post(bare, json=COMPLETED) as response:
            assert response.status == 401
        async with http.post(f"{bare}?{TOKEN_PARAM}=wrong", json=COMPLETED) as response:
            assert response.status == 401
        async with http.post(url, data=b"x" * 5000) as response:
            assert response.status == 413
        async with http.post(url, data=b"{not json") as response:
            assert response.status == 400
        async with http.post(url, json=COMPLETED) as response:
            assert response.status == 200


@pytest.fixture
async def fake() -> AsyncIterator[FakePrismServer]:
    async with FakePrismServer(generation_seconds=0.4) as server:
        yield server


async def test_wait_finishes_when_the_webhook_arrives(
    fake: FakePrismServer, receiver: tuple[WebhookHub, str]
) -> None:
    """With a 30 s fallback cadence, the wait still ends right after the real webhook."""
    hub, url = receiver
    async with PrismClient(fake.api_key, base_url=fake.base_url, webhooks=hub, poll=SLOW) as prism:
        batch = await prism.templates.generate("abc123", variables={"hook": "Hi"}, webhook_url=url)
        assert hub.expects(batch.ids[0])
        started = time.monotonic()
        video = await prism.wait_for_generation(batch.ids[0])
        elapsed = time.monotonic() - started
    assert video.is_completed
    assert elapsed < 5  # a fraction of the 30 s fallback interval
    assert fake.webhook_deliveries[0].status == 200
    assert video.video_url is not None
    assert video.video_url.startswith(fake.root)
    gets = fake.requests_to("GET", f"/api/generations/{video.id}")
    assert len(gets) <= 3  # the first poll, then the confirmation


async def test_forged_completed_cannot_end_a_running_wait(
    receiver: tuple[WebhookHub, str],
) -> None:
    """A forged 'completed' wakes the wait, which confirms, sees it running and keeps waiting."""
    hub, url = receiver
    async with (
        FakePrismServer(generation_seconds=100) as fake,
        PrismClient(fake.api_key, base_url=fake.base_url, webhooks=hub, poll=SLOW) as prism,
    ):
        batch = await prism.templates.generate("abc123", variables={"hook": "Hi"}, webhook_url=url)
        generation_id = batch.ids[0]
        wait = asyncio.create_task(prism.wait_for_generation(generation_id))
        await asyncio.sleep(0.3)
        gets_before = len(fake.requests_to("GET", f"/api/generations/{generation_id}"))
        forged = {**COMPLETED, "generation_id": generation_id, "video_url": "https://evil.test/x"}
        async with aiohttp.ClientSession() as http, http.post(url, json=forged) as response:
            assert response.status == 200
        await asyncio.sleep(0.3)
        assert not wait.done()
        assert len(fake.requests_to("GET", f"/api/generations/{generation_id}")) == gets_before + 1
        fake.complete_generation(generation_id)  # the real webhook follows
        video = await asyncio.wait_for(wait, 5)
    assert video.is_completed
    assert video.video_url is not None
    assert "evil" not in video.video_url


async def test_webhook_before_the_wait_is_not_lost(
    fake: FakePrismServer, receiver: tuple[WebhookHub, str]
) -> None:
    """An event that arrives before the wait starts ends the wait at once (no 30 s delay)."""
    hub, url = receiver
    patient = PollPolicy(initial_delay=30, interval=30, max_interval=30, timeout=60)
    async with PrismClient(
        fake.api_key, base_url=fake.base_url, webhooks=hub, poll=patient
    ) as prism:
        batch = await prism.templates.generate("abc123", variables={"hook": "Hi"}, webhook_url=url)
        fake.advance(10)
        await fake.drain_webhooks()
        started = time.monotonic()
        video = await prism.wait_for_generation(batch.ids[0])
    assert time.monotonic() - started < 2
    assert video.is_completed


async def test_failed_webhook_gives_generation_failed(
    fake: FakePrismServer, receiver: tuple[WebhookHub, str]
) -> None:
    """A 'failed' delivery wakes the wait, which confirms the failure from the API."""
    from prism_async import GenerationFailedError

    hub, url = receiver
    async with PrismClient(fake.api_key, base_url=fake.base_url, webhooks=hub, poll=SLOW) as prism:
        batch = await prism.templates.generate(
            "abc123", variables={"hook": "[fail] please"}, webhook_url=url
        )
        with pytest.raises(GenerationFailedError, match="Generation timed out"):
            await asyncio.wait_for(prism.wait_for_generation(batch.ids[0]), 5)


async def test_duplicates_and_out_of_order_events_are_harmless(
    fake: FakePrismServer, receiver: tuple[WebhookHub, str]
) -> None:
    """Repeated and stale deliveries neither break a wait nor leak waiters."""
    hub, url = receiver
    async with PrismClient(fake.api_key, base_url=fake.base_url, webhooks=hub, poll=SLOW) as prism:
        batch = await prism.templates.generate("abc123", variables={"hook": "Hi"}, webhook_url=url)
        generation_id = batch.ids[0]
        for status in ("completed", "completed", "generating", "failed"):
            hub.dispatch(WebhookEvent(generation_id, status))
        video = await asyncio.wait_for(prism.wait_for_generation(generation_id), 5)
        assert video.is_completed
        again = await asyncio.wait_for(prism.wait_for_generation(generation_id), 5)
        assert again.id == generation_id
    assert hub._waiters == {}


async def test_a_burst_of_events_is_received_and_memory_stays_bounded(
    serve: Serve,
) -> None:
    """Thousands of deliveries at once are all accepted; remembered events stay bounded."""
    hub = WebhookHub(keep=100)
    app = web.Application()
    app.router.add_post("/hook", hub.aiohttp_handler)
    url = hub.url_for(f"{await serve(app)}/hook")
    received: list[WebhookEvent] = []

    async def consume() -> None:
        async for event in hub.events():
            received.append(event)
            if len(received) == 2000:
                return

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post(n: int) -> int:
            payload = {**COMPLETED, "generation_id": f"gen_{n}"}
            async with http.post(url, json=payload) as response:
                return response.status

        statuses = await asyncio.gather(*(post(n) for n in range(2000)))
    assert set(statuses) == {200}
    await asyncio.wait_for(consumer, 5)
    assert len({event.generation_id for event in received}) == 2000
    assert len(hub._recent) == 100
    assert not hub._subscribers


async def test_prompt_generations_keep_the_normal_cadence(
    fake: FakePrismServer, receiver: tuple[WebhookHub, str]
) -> None:
    """Ids not submitted with the hub's URL poll at the client's cadence, not the fallback."""
    hub, _ = receiver
    fast = PollPolicy(initial_delay=0.05, interval=0.1, max_interval=0.2, timeout=10)
    async with PrismClient(fake.api_key, base_url=fake.base_url, webhooks=hub, poll=fast) as prism:
        batch = await prism.generations.create(prompt="A cat", model_name="veo-3.1")
        assert not hub.expects(batch.ids[0])
        started = time.monotonic()
        await prism.wait_for_generation(batch.ids[0])
    assert time.monotonic() - started < 3


async def test_closing_the_client_leaves_no_task(
    fake: FakePrismServer, receiver: tuple[WebhookHub, str]
) -> None:
    """Waits with a hub start no task of their own; cancelling one cleans up its waiter."""
    hub, url = receiver
    before = asyncio.all_tasks()
    prism = PrismClient(fake.api_key, base_url=fake.base_url, webhooks=hub, poll=SLOW)
    fake.generation_seconds = 100
    batch = await prism.templates.generate("abc123", variables={"hook": "Hi"}, webhook_url=url)
    wait = asyncio.create_task(prism.wait_for_generation(batch.ids[0]))
    await asyncio.sleep(0.2)
    wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait
    await prism.aclose()

    def source(task: asyncio.Task[Any]) -> str:
        code = getattr(task.get_coro(), "cr_code", None)
        return str(getattr(code, "co_filename", ""))

    leftover = [
        task
        for task in asyncio.all_tasks() - before
        if "prism_async" in source(task) and "testing" not in source(task)
    ]
    assert leftover == []  # (the receiver's own keep-alive handlers are aiohttp's)
    assert hub._waiters == {}


def test_client_refuses_a_non_hub() -> None:
    """webhooks= must be a WebhookHub."""
    bad: Any = object()
    with pytest.raises(InvalidRequestError) as info:
        PrismClient("prism_sk_x", base_url="http://127.0.0.1:1/api", webhooks=bad)
    assert info.value.field == "webhooks"
