"""The webhook bus through a Redis outage: a real Redis server stopped, then started again on
the same port (no persistence: it comes back empty).

While Redis is down, webhooks are still answered 200 at once; the events that could not be
published are kept and published once it is back (the other processes' waits still get them);
waits that count on webhooks poll at their normal cadence, never their slow fallback; and each
process logs one WARNING for the outage.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from statistics import median

import pytest
from aiohttp import web

from prism_async import PollPolicy, PrismClient
from prism_async.testing import FakePrismServer
from prism_async.webhooks import RedisWebhookBus, WebhookHub
from prism_async.webhooks import _link as _webhook_link
from tests.conftest import free_port
from tests.redis_server import redis_server_binary, wait_for_pong
from tests.test_webhook_bus import QUERY, SECRET, completed, polls, until

ROOT = Path(__file__).resolve().parent.parent
NORMAL = PollPolicy(initial_delay=0.05, interval=0.3, max_interval=0.3, jitter=0, timeout=60)
"""The normal cadence (0.3 s); a wait expecting a webhook polls every 30 s instead."""
DOWN = "webhook bus down"
HOOK = {"hook": "Hi"}


class Redis:
    """A throwaway Redis server on a fixed port, stopped and started again by the test."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            redis_server_binary(),
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--save", "", "--appendonly", "no"),
            stdout=asyncio.subprocess.DEVNULL,
        )
        await wait_for_pong(self.port, 10)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[Redis]:
    server = Redis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def stream() -> str:
    return f"prism:test:{uuid.uuid4().hex}"


@pytest.fixture
async def hubs(redis: Redis, stream: str) -> AsyncIterator[Callable[[], WebhookHub]]:
    made: list[WebhookHub] = []

    def make() -> WebhookHub:
        bus = RedisWebhookBus(redis.url, stream=stream)
        made.append(WebhookHub(secret=SECRET, fallback_interval=30, bus=bus))
        return made[-1]

    yield make
    for hub in made:
        await hub.aclose()


async def test_events_kept_while_redis_is_down_are_published_when_it_is_back(
    redis: Redis,
    hubs: Callable[[], WebhookHub],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Webhooks received while Redis is down are answered 200 at once; once Redis is back the
    other hub gets every one of them (no webhook sent again); one WARNING per hub."""
    monkeypatch.setattr(_webhook_link, "_SETTLE", 0.3)
    receiver, listener = hubs(), hubs()
    await asyncio.gather(receiver.start(), listener.start())
    await until(lambda: receiver.reliable and listener.reliable)
    caplog.set_level(logging.INFO, logger="prism_async")

    await redis.stop()
    await until(lambda: not listener.reliable)  # its read failed
    for n in range(3):
        started = time.monotonic()
        assert (await receiver.handle(completed(f"gen_during{n}"), QUERY)).status == 200
        assert time.monotonic() - started < 0.5
    assert not receiver.reliable
    await asyncio.sleep(0.5)

    await redis.start()
    await until(lambda: all(f"gen_during{n}" in listener._recent for n in range(3)), 10)
    await until(lambda: receiver.reliable and listener.reliable, 5)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert sum(DOWN in text for _, text in messages) == 2  # one per hub
    assert {level for level, text in messages if DOWN in text} == {"WARNING"}
    assert any("kept events published: 3" in text for _, text in messages)
    assert all(level in ("INFO", "WARNING") for level, _ in messages)


async def test_a_wait_polls_at_its_normal_cadence_while_the_bus_is_down(
    redis: Redis,
    hubs: Callable[[], WebhookHub],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wait sleeping for its 30 s fallback polls at once when the bus goes down, then every
    0.3 s; once the bus is back (and settled) it sleeps for its fallback again."""
    monkeypatch.setattr(_webhook_link, "_SETTLE", 0.3)
    hub = hubs()
    nowhere = hub.url_for(f"http://127.0.0.1:{free_port()}/hook")  # no webhook ever comes
    async with (
        FakePrismServer(generation_seconds=100) as fake,
        hub,
        PrismClient(fake.api_key, base_url=fake.base_url, webhooks=hub, poll=NORMAL) as prism,
    ):
        batch = await prism.templates.generate(
            "abc123", variables={"hook": "Hi"}, webhook_url=nowhere
        )
        generation_id = batch.ids[0]
        wait = asyncio.create_task(prism.wait_for_generation(generation_id))
        await until(lambda: polls(fake, generation_id) == 1)
        await asyncio.sleep(0.5)
        assert polls(fake, generation_id) == 1  # sleeping for the fallback

        await redis.stop()
        await until(lambda: polls(fake, generation_id) == 2, 1)  # at once
        await asyncio.sleep(1.0)
        assert 4 <= polls(fake, generation_id) <= 7  # every 0.3 s

        await redis.start()
        await until(lambda: hub.reliable, 5)
        await asyncio.sleep(0.4)  # (a poll planned before it settled)
        settled = polls(fake, generation_id)
        await asyncio.sleep(1.0)
        assert polls(fake, generation_id) == settled  # the fallback again
        wait.cancel()
        await asyncio.gather(wait, return_exceptions=True)


async def test_events_still_kept_when_the_hub_closes_are_logged(
    redis: Redis, hubs: Callable[[], WebhookHub], caplog: pytest.LogCaptureFixture
) -> None:
    """Closing a hub while Redis is down tries once more, then names the events it drops."""
    hub = hubs()
    await hub.start()
    await redis.stop()
    assert (await hub.handle(completed("gen_stranded"), QUERY)).status == 200
    with caplog.at_level(logging.WARNING, logger="prism_async"):
        await hub.aclose()
    [message] = [r.getMessage() for r in caplog.records if "at close" in r.getMessage()]
    assert message.startswith("webhook bus still down at close (ConnectionError: Error 111")
    assert message.endswith("): kept events not published (1): gen_stranded")


async def read_child(
    stream: asyncio.StreamReader, lines: list[str], on_line: Callable[[str], None]
) -> None:
    async for raw in stream:
        lines.append(raw.decode(errors="replace").rstrip())
        on_line(lines[-1])


async def test_waits_in_two_processes_ride_out_a_redis_restart(
    redis: Redis,
    stream: str,
    serve: Callable[[web.Application], Awaitable[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two processes, each waiting on 6 generations whose webhooks reach the *other* one.
    Generations complete before, during and right after a Redis restart: every wait ends
    within a small multiple of the 0.3 s cadence (none sleeps for its 30 s fallback)."""
    count = 6
    hub = WebhookHub(
        secret=SECRET, fallback_interval=30, bus=RedisWebhookBus(redis.url, stream=stream)
    )
    app = web.Application()
    app.router.add_post("/hook", hub.aiohttp_handler)
    root = await serve(app)
    done: dict[str, float] = {}
    completed_at: dict[str, float] = {}
    out: list[str] = []
    err: list[str] = []

    def child_line(line: str) -> None:
        words = line.split()
        if words[:1] == ["done"]:
            done[words[1]] = float(words[2])

    async with FakePrismServer(generation_seconds=100) as fake:
        child = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests.apps.bus_waiter"),
            cwd=ROOT,
            env={
                **os.environ,
                "PRISM_API_KEY": fake.api_key,
                "PRISM_BASE_URL": fake.base_url,
                "PRISM_WEBHOOK_SECRET": SECRET,
                "REDIS_URL": redis.url,
                "PRISM_STREAM": stream,
                "PEER_HOOK": f"{root}/hook",
                "COUNT": str(count),
            },
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None
        assert child.stdout is not None
        assert child.stderr is not None
        readers = [
            asyncio.create_task(read_child(child.stdout, out, child_line)),
            asyncio.create_task(read_child(child.stderr, err, lambda line: None)),
        ]
        try:
            async with (
                hub,
                PrismClient(
                    fake.api_key, base_url=fake.base_url, webhooks=hub, poll=NORMAL
                ) as prism,
            ):
                await until(lambda: any(line.startswith("port") for line in out), 15)
                peer = hub.url_for(f"http://127.0.0.1:{out[0].split()[1]}/hook")

                async def wait(generation_id: str) -> None:
                    await prism.wait_for_generation(generation_id)
                    done[generation_id] = time.time()

                ours = [
                    (
                        await prism.templates.generate("abc123", variables=HOOK, webhook_url=peer)
                    ).ids[0]
                    for _ in range(count)
                ]
                waits = [asyncio.create_task(wait(generation_id)) for generation_id in ours]
                await until(lambda: sum(line.startswith("queued") for line in out) == count, 10)
                theirs = [line.split()[1] for line in out if line.startswith("queued")]
                await until(lambda: all(polls(fake, g) == 1 for g in ours + theirs), 10)
                await asyncio.sleep(0.3)  # every wait sleeps for its fallback now

                def complete(n: int) -> None:
                    for generation_id in (ours[n], theirs[n]):
                        fake.complete_generation(generation_id)
                        completed_at[generation_id] = time.time()

                complete(0)  # the bus works
                await until(lambda: {ours[0], theirs[0]} <= done.keys(), 5)
                await redis.stop()
                for n in (1, 2, 3):  # the bus is down
                    await asyncio.sleep(0.5)
                    complete(n)
                await asyncio.sleep(0.5)
                await redis.start()
                complete(4)  # right as it comes back
                await asyncio.sleep(1.0)
                complete(5)
                await asyncio.wait_for(asyncio.gather(*waits), 10)
                await until(lambda: set(theirs) <= done.keys(), 10)
        finally:
            child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()
                await child.wait()
            await asyncio.gather(*readers, return_exceptions=True)
    latencies = {g: done[g] - completed_at[g] for g in completed_at}
    print(
        f"completed -> wait returned through a Redis restart: median "
        f"{median(latencies.values()) * 1000:.0f} ms, max {max(latencies.values()) * 1000:.0f} ms"
    )
    assert max(latencies.values()) < 2.0, latencies
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [m[: len(DOWN)] for m in warnings] == [DOWN]
    assert [line[: len(DOWN) + 20] for line in err] == [f"WARNING prism_async {DOWN}"]
