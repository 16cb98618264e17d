"""The webhook bus on a real Redis: a webhook received by one hub wakes the waits of another.

Hubs that share a stream stand for the processes of one app (two in this process, or one in a
real second process: ``tests/apps/hub_receiver.py``); waits run on :class:`FakePrismServer`,
whose template webhooks go to the receiving hub. Each test uses a stream of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from statistics import median
from typing import Any

import pytest
from aiohttp import web

from prism_async import PollPolicy, PrismClient
from prism_async.testing import FakePrismServer
from prism_async.webhooks import TOKEN_PARAM, RedisWebhookBus, WebhookEvent, WebhookHub
from prism_async.webhooks import _link as _webhook_link
from tests.conftest import free_port

Serve = Callable[[web.Application], Awaitable[str]]
MakeHub = Callable[..., WebhookHub]
ROOT = Path(__file__).resolve().parent.parent
SECRET = "bus-secret-0123456789abcdef"
QUERY = {TOKEN_PARAM: SECRET}
SLOW = PollPolicy(initial_delay=0.05, interval=0.1, max_interval=0.1, jitter=0, timeout=60)
"""A wait polls once after 0.05 s, then (its webhook expected) every 30 s: the fallback."""


def completed(generation_id: str) -> str:
    return json.dumps({"generation_id": generation_id, "status": "completed"})


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def polls(fake: FakePrismServer, generation_id: str) -> int:
    return len(fake.requests_to("GET", f"/api/generations/{generation_id}"))


@pytest.fixture
def stream() -> str:
    return f"prism:test:{uuid.uuid4().hex}"


@pytest.fixture
async def hubs(redis_url: str, stream: str) -> AsyncIterator[MakeHub]:
    """Makes hubs sharing one secret and one stream (each closed after the test)."""
    made: list[WebhookHub] = []

    def make(url: str = redis_url, **options: Any) -> WebhookHub:
        options.setdefault("fallback_interval", 30)
        hub = WebhookHub(secret=SECRET, bus=RedisWebhookBus(url, stream=stream), **options)
        made.append(hub)
        return hub

    yield make
    for hub in made:
        await hub.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakePrismServer]:
    async with FakePrismServer(generation_seconds=100) as server:
        yield server


async def test_a_webhook_received_by_one_hub_wakes_a_wait_on_another(
    hubs: MakeHub, serve: Serve, fake: FakePrismServer
) -> None:
    """The receiving hub publishes; the waiting hub's wait, sleeping for its 30 s fallback,
    wakes and confirms with one GET."""
    receiver, waiter = hubs(), hubs()
    app = web.Application()
    app.router.add_post("/hook", receiver.aiohttp_handler)
    url = waiter.url_for(f"{await serve(app)}/hook")  # the same secret: the receiver's token
    async with PrismClient(
        fake.api_key, base_url=fake.base_url, webhooks=waiter, poll=SLOW
    ) as prism:
        batch = await prism.templates.generate("abc123", variables={"hook": "Hi"}, webhook_url=url)
        generation_id = batch.ids[0]
        assert waiter.expects(generation_id)
        wait = asyncio.create_task(prism.wait_for_generation(generation_id))
        await until(lambda: polls(fake, generation_id) == 1)
        await asyncio.sleep(0.1)  # sleeping for the fallback now
        fake.complete_generation(generation_id)
        video = await asyncio.wait_for(wait, 5)
    await fake.drain_webhooks()  # (its record may come after the wait ended)
    assert video.is_completed
    assert [d.status for d in fake.webhook_deliveries] == [200]
    assert polls(fake, generation_id) == 2  # the first poll, then the confirmation
    assert waiter._waiters == {}


async def test_a_hub_does_not_dispatch_its_own_events_twice(hubs: MakeHub) -> None:
    """The receiving hub's events() sees its webhook once (not again from the bus); the other
    hub's sees it once too."""
    first, second = hubs(), hubs()
    seen: dict[WebhookHub, list[WebhookEvent]] = {first: [], second: []}

    async def consume(hub: WebhookHub) -> None:
        async for event in hub.events():
            seen[hub].append(event)

    consumers = [asyncio.create_task(consume(hub)) for hub in seen]
    await asyncio.gather(first.start(), second.start())
    await asyncio.sleep(0.1)
    assert (await first.handle(completed("gen_once"), QUERY)).status == 200
    await until(lambda: bool(seen[second]))
    await asyncio.sleep(0.5)  # time for a duplicate to show up
    for consumer in consumers:
        consumer.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    assert seen[first] == seen[second] == [WebhookEvent("gen_once", "completed")]


async def test_a_stream_that_does_not_exist_yet(hubs: MakeHub, stream: str, redis_url: str) -> None:
    """Listening on a stream nobody created yet works; a hub that starts just after an event
    was published still learns of it (replay), so a wait that starts later ends at once."""
    from redis import asyncio as aioredis

    redis: Any = aioredis.Redis.from_url(redis_url)
    try:
        listener = hubs()
        await listener.start()
        await asyncio.sleep(0.2)
        assert await redis.exists(stream) == 0
        woken = listener.subscribe("gen_new")
        assert (await hubs().handle(completed("gen_new"), QUERY)).status == 200
        await asyncio.wait_for(woken.wait(), 3)
        assert await redis.exists(stream) == 1
    finally:
        await redis.aclose()
    latecomer = hubs()
    await latecomer.start()  # after the event: replays the stream's last seconds
    await until(lambda: "gen_new" in latecomer._recent, 3)
    assert latecomer.subscribe("gen_new").is_set()


async def test_publish_failures_are_logged_once_and_answered_200_at_once(
    hubs: MakeHub,
    caplog: pytest.LogCaptureFixture,
    raw_server: Callable[..., Awaitable[tuple[str, list[bytes]]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No Redis at the URL, or one that never answers: the webhooks still get 200 (the first
    within the publish timeout, the next at once), one WARNING says the bus is down, the
    events are kept to publish later, and this process's waits still wake."""

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    root, _ = await raw_server(stall)
    monkeypatch.setattr(_webhook_link, "_PUBLISH_TIMEOUT", 0.3)
    for url in (f"redis://127.0.0.1:{free_port()}/0", root.replace("http", "redis")):
        hub = hubs(url)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="prism_async"):
            for n in range(3):
                woken = hub.subscribe(f"gen_lost{n}")
                started = time.monotonic()
                reply = await hub.handle(completed(f"gen_lost{n}"), QUERY)
                assert reply.status == 200
                assert time.monotonic() - started < (2 if n == 0 else 0.1)
                assert woken.is_set()
        assert [r.getMessage()[:30] for r in caplog.records] == ["webhook bus down (publish fail"]
        assert hub._link is not None
        assert hub._link.kept == 3
        assert not hub.reliable
        await hub.aclose()


async def test_close_on_signal_closes_then_runs_the_previous_handler() -> None:
    """The hub closes when the signal arrives, and the handler installed before still runs
    (once, however often the hub installs its own: each lifespan does)."""
    hub = WebhookHub(secret=SECRET)
    received: list[int] = []
    original = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        hub.close_on_signal(signal.SIGUSR1)
        hub.close_on_signal(signal.SIGUSR1)
        woken = hub.subscribe("gen_sleeping")
        signal.raise_signal(signal.SIGUSR1)
        await until(lambda: hub.closed, 1)
        assert woken.is_set()
        assert received == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, original)


async def test_a_hub_with_a_bus_but_no_secret_warns_of_wrong_tokens(
    caplog: pytest.LogCaptureFixture, redis_url: str, stream: str
) -> None:
    """Each process would mint its own token: the first refused token logs why (once)."""
    hub = WebhookHub(bus=RedisWebhookBus(redis_url, stream=stream))
    try:
        with caplog.at_level(logging.WARNING, logger="prism_async"):
            for _ in range(2):
                assert (await hub.handle(completed("gen_x"), QUERY)).status == 401
        assert [r.getMessage() for r in caplog.records] == [
            "webhook hub: wrong token; give every process the same secret="
        ]
    finally:
        await hub.aclose()


async def test_closing_the_hub_sends_slow_waits_back_to_their_normal_cadence(
    hubs: MakeHub, fake: FakePrismServer
) -> None:
    """A wait sleeping for the 30 s fallback polls at once when the hub closes, then at the
    client's cadence (0.1 s); a wait started after is not slow either. aclose is idempotent."""
    hub = hubs()
    nowhere = hub.url_for(f"http://127.0.0.1:{free_port()}/hook")  # its webhooks never arrive
    async with PrismClient(fake.api_key, base_url=fake.base_url, webhooks=hub, poll=SLOW) as prism:
        batch = await prism.templates.generate(
            "abc123", variables={"hook": "Hi"}, webhook_url=nowhere
        )
        generation_id = batch.ids[0]
        wait = asyncio.create_task(prism.wait_for_generation(generation_id))
        await until(lambda: polls(fake, generation_id) == 1)
        await asyncio.sleep(0.5)
        assert polls(fake, generation_id) == 1  # slow: the 30 s fallback
        await hub.aclose()
        await hub.aclose()
        assert hub.closed
        assert not hub.expects(generation_id)
        await until(lambda: polls(fake, generation_id) == 2, 0.5)  # at once
        await asyncio.sleep(0.55)
        assert 4 <= polls(fake, generation_id) <= 9  # then every 0.1 s (not 30 s)
        fake.complete_generation(generation_id)
        video = await asyncio.wait_for(wait, 2)
        assert video.is_completed

        later = await prism.templates.generate(
            "abc123", variables={"hook": "Hi"}, webhook_url=nowhere
        )
        assert not hub.expects(later.ids[0])
        fake.complete_generation(later.ids[0])
        await asyncio.wait_for(prism.wait_for_generation(later.ids[0]), 2)


def test_a_hub_serves_one_event_loop_after_another(redis_url: str, stream: str) -> None:
    """A hub made at import time serves one loop after another (each test's, each
    lifespan's), closed at the end of each and reopened by the next."""
    hub = WebhookHub(secret=SECRET, bus=RedisWebhookBus(redis_url, stream=stream))

    async def lifespan(n: int) -> None:
        other = WebhookHub(secret=SECRET, bus=RedisWebhookBus(redis_url, stream=stream))
        async with hub, other:
            woken = other.subscribe(f"gen_{n}")
            assert (await hub.handle(completed(f"gen_{n}"), QUERY)).status == 200
            await asyncio.wait_for(woken.wait(), 3)
        assert hub.closed

    asyncio.run(lifespan(1))
    asyncio.run(lifespan(2))


async def test_a_webhook_received_by_another_process_wakes_a_wait_here(
    redis_url: str, stream: str, fake: FakePrismServer
) -> None:
    """A real second process receives every webhook; each wait here, sleeping for its 30 s
    fallback, ends within a fraction of a second of its generation completing."""
    child = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.apps.hub_receiver"),
        cwd=ROOT,
        env={
            **os.environ,
            "PRISM_WEBHOOK_SECRET": SECRET,
            "REDIS_URL": redis_url,
            "PRISM_STREAM": stream,
        },
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    latencies: list[float] = []
    try:
        port = int(await asyncio.wait_for(child.stdout.readline(), 15))
        hub = WebhookHub(
            secret=SECRET, fallback_interval=30, bus=RedisWebhookBus(redis_url, stream=stream)
        )
        url = hub.url_for(f"http://127.0.0.1:{port}/hook")
        async with (
            hub,
            PrismClient(fake.api_key, base_url=fake.base_url, webhooks=hub, poll=SLOW) as prism,
        ):
            for _ in range(10):
                batch = await prism.templates.generate(
                    "abc123", variables={"hook": "Hi"}, webhook_url=url
                )
                generation_id = batch.ids[0]
                wait = asyncio.create_task(prism.wait_for_generation(generation_id))
                await until(lambda: polls(fake, generation_id) == 1)  # noqa: B023
                await asyncio.sleep(0.05)  # sleeping for the fallback now
                started = time.monotonic()
                fake.complete_generation(generation_id)
                video = await asyncio.wait_for(wait, 5)
                latencies.append(time.monotonic() - started)
                assert video.is_completed
                assert polls(fake, generation_id) == 2
    finally:
        child.stdin.close()  # the child stops
        try:
            await asyncio.wait_for(child.wait(), 10)
        except TimeoutError:
            child.kill()
            await child.wait()
    await fake.drain_webhooks()
    assert [d.status for d in fake.webhook_deliveries] == [200] * 10
    print(
        f"cross-process wake-up (completed -> wait returned, GET included): "
        f"median {median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert max(latencies) < 2.0
