"""A 429's ``Retry-After`` seen by one process holds back every process sharing the Redis ledger.

A real ``redis-server``, the fake API in this process, and clients in real processes
(``tests/apps/pause_client.py``) or in this one. The fake's request log is timed here: it runs
in this event loop, so each request is logged between two ticks of a 2 ms clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis import asyncio as redis

from prism_async import PrismClient, RateLimitError, RetryPolicy
from prism_async.ledger import RedisLedger, SQLiteLedger
from prism_async.ledger._pauses import REFRESH
from prism_async.testing import FakePrismServer, RecordedRequest
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.05
"""Seconds the timing of two logged requests may be off by (clock ticks of a busy loop)."""
LIMITED = {"error": "rate_limited", "message": "Too many requests"}


def prefix() -> str:
    """A ledger of its own for each test (the session's Redis is shared)."""
    return f"prism:test-pauses:{uuid.uuid4().hex[:8]}:"


class Arrivals:
    """When each request in the fake's log arrived: after ``bounds[i][0]``, before
    ``bounds[i][1]`` (for the i-th request logged)."""

    def __init__(self, server: FakePrismServer) -> None:
        self.server = server
        self.bounds: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        previous = time.monotonic()
        while True:
            logged = len(self.server.requests_to("*", "*"))
            now = time.monotonic()
            self.bounds += [(previous, now)] * (logged - len(self.bounds))
            previous = now
            await asyncio.sleep(0.002)

    async def __aenter__(self) -> Arrivals:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def of(self, wanted: Callable[[RecordedRequest], bool]) -> list[tuple[float, float]]:
        """The arrival bounds of the logged requests ``wanted`` picks, in order."""
        await asyncio.sleep(0.01)  # the clock catches up with the log
        log = self.server.requests_to("*", "*")
        return [self.bounds[i] for i, request in enumerate(log) if wanted(request)]


def templates_of(name: str) -> Callable[[RecordedRequest], bool]:
    return lambda r: r.path == "/api/templates" and r.query.get("q") == name


def post_of(name: str) -> Callable[[RecordedRequest], bool]:
    return lambda r: r.method == "POST" and (r.json or {}).get("prompt") == f"clip from {name}"


class Child:
    """``tests/apps/pause_client.py`` in a process of its own."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    async def read(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert line, f"the child exited: {await self.errors()}"
        result: dict[str, Any] = json.loads(line)
        return result

    async def errors(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode(errors="replace")

    async def close(self) -> str:
        """End its input; it closes its client and exits 0. Returns its stderr."""
        self.send("")
        stderr = await asyncio.wait_for(self.errors(), 10)
        assert await asyncio.wait_for(self.process.wait(), 10) == 0, stderr
        return stderr


StartChild = Callable[[str, str], Awaitable[Child]]


@pytest.fixture
async def children(server: FakePrismServer, redis_url: str) -> AsyncIterator[StartChild]:
    """Start clients in processes (``await start(name, prefix)``); killed after the test."""
    started: list[Child] = []

    async def start(name: str, ledger_prefix: str) -> Child:
        env = {
            **os.environ,
            "PRISM_API_KEY": server.api_key,
            "PRISM_BASE_URL": server.base_url,
            "REDIS_URL": redis_url,
            "LEDGER_PREFIX": ledger_prefix,
            "NAME": name,
            "PYTHONUNBUFFERED": "1",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.apps.pause_client", cwd=ROOT, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        child = Child(process)
        started.append(child)
        return child

    try:
        yield start
    finally:
        for child in started:
            if child.process.returncode is None:
                child.process.kill()
                await child.process.wait()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[redis.Redis]:
    """The test's own connection to the session's Redis."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def following(store: redis.Redis, key: str, clients: int) -> None:
    """Wait until ``clients`` clients are subscribed to the pause's notices."""

    async def subscribed() -> bool:
        counts = await store.pubsub_numsub(key)
        return bool(counts) and int(counts[0][1]) == clients

    await eventually(subscribed, f"{clients} clients to follow {key}")


async def shared(store: redis.Redis, key: str) -> int:
    """Wait until a pause is recorded in Redis, then for its notice to reach the clients (one
    Redis hop, and a turn of their event loops). Returns the milliseconds it had left when
    first seen."""
    left: list[int] = []

    async def recorded() -> bool:
        left.append(int(await store.pttl(key)))
        return left[-1] > 0

    await eventually(recorded, "the pause in Redis")
    await asyncio.sleep(0.2)
    return left[-1]


async def test_a_429_in_one_process_holds_the_next_requests_of_another(
    server: FakePrismServer, children: StartChild, store: redis.Redis
) -> None:
    ledger = prefix()
    key = f"{ledger}paused"
    a, b = await asyncio.gather(children("alpha", ledger), children("beta", ledger))
    assert [await a.read(20), await b.read(20)] == [{"ready": True}] * 2
    await following(store, key, 2)
    server.inject("GET", "/api/templates", status=429, headers={"Retry-After": "2"}, body=LIMITED)

    async with Arrivals(server) as arrivals:
        a.send("get")
        left = await shared(store, key)  # A has had its 429 and shared the pause
        assert 1500 < left <= 2000  # its Retry-After
        b.send("get post")
        done_b = [await b.read(), await b.read()]
        done_a = await a.read()

        limited, *again = await arrivals.of(templates_of("alpha"))
        held = [*await arrivals.of(templates_of("beta")), *await arrivals.of(post_of("beta"))]

    # A: its 429, then one retry once the Retry-After had passed: nothing more.
    assert done_a["error"] is None
    assert len(again) == 1
    assert again[0][1] - limited[0] >= 2.0 - TOLERANCE
    # B: each request sent once (the wait is not an attempt), none before the pause ended.
    assert sorted(d["command"] for d in done_b) == ["get", "post"]
    assert [d["error"] for d in done_b] == [None, None]
    assert len(held) == 2
    assert all(after - limited[1] >= 2.0 - TOLERANCE for after, _ in held)
    assert all(1.3 < d["seconds"] < 3.0 for d in done_b)  # B waited, then went at once
    assert len(server.requests_to("GET", "/api/templates")) == 3
    assert len(server.requests_to("POST", "/api/generations")) == 1

    for child in (a, b):
        stderr = await child.close()
        assert "Traceback" not in stderr, stderr
        assert "Unclosed" not in stderr, stderr
        assert "destroyed" not in stderr, stderr


async def test_a_lost_notice_is_learnt_within_a_second(
    server: FakePrismServer, redis_url: str, store: redis.Redis
) -> None:
    ledger = RedisLedger(redis_url, prefix=prefix())
    key = f"{ledger.prefix}paused"
    async with PrismClient(server.api_key, base_url=server.base_url, ledger=ledger) as prism:
        await following(store, key, 1)
        async with Arrivals(server) as arrivals:
            # Another process's pause whose notice never came: only the key, no PUBLISH.
            recorded = time.monotonic()
            await store.set(key, 2000, px=2000)
            await asyncio.sleep(REFRESH + 0.25)
            await prism.templates.list(q="late")
            [(arrived, _)] = await arrivals.of(templates_of("late"))
    assert arrived - recorded >= 2.0 - TOLERANCE


async def test_a_request_held_by_a_pause_is_cancelled_unsent(
    server: FakePrismServer, redis_url: str, store: redis.Redis
) -> None:
    name = prefix()
    once = RetryPolicy(max_retries=0)
    x = PrismClient(
        server.api_key,
        base_url=server.base_url,
        retry=once,
        ledger=RedisLedger(redis_url, prefix=name),
    )
    y = PrismClient(
        server.api_key, base_url=server.base_url, ledger=RedisLedger(redis_url, prefix=name)
    )
    async with x, y:
        await following(store, f"{name}paused", 2)
        server.inject(
            "GET", "/api/templates", status=429, headers={"Retry-After": "3"}, body=LIMITED
        )
        with pytest.raises(RateLimitError):
            await x.templates.list(q="xx")
        await shared(store, f"{name}paused")
        held = asyncio.create_task(y.templates.list(q="yy"))
        await asyncio.sleep(0.5)
        assert not held.done()
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
    queries = [r.query.get("q") for r in server.requests_to("GET", "/api/templates")]
    assert queries == ["xx"]  # y's request was never sent


async def test_a_pause_longer_than_max_retry_after_raises_unsent(
    server: FakePrismServer, redis_url: str, store: redis.Redis
) -> None:
    name = prefix()
    once = RetryPolicy(max_retries=0)
    impatient = RetryPolicy(max_retry_after=1.0)
    x = PrismClient(
        server.api_key,
        base_url=server.base_url,
        retry=once,
        ledger=RedisLedger(redis_url, prefix=name),
    )
    y = PrismClient(
        server.api_key,
        base_url=server.base_url,
        retry=impatient,
        ledger=RedisLedger(redis_url, prefix=name),
    )
    async with x, y:
        await following(store, f"{name}paused", 2)
        server.inject(
            "GET", "/api/templates", status=429, headers={"Retry-After": "30"}, body=LIMITED
        )
        with pytest.raises(RateLimitError):
            await x.templates.list(q="xx")
        await shared(store, f"{name}paused")
        started = time.monotonic()
        for call in (
            y.templates.list(q="yy"),
            y.generations.create(prompt="p", model_name="veo-3.1"),
        ):
            with pytest.raises(RateLimitError) as info:
                await call
            assert info.value.retry_after is not None
            assert 25 < info.value.retry_after <= 30
            assert info.value.maybe_sent is False
        assert time.monotonic() - started < 0.5
    assert len(server.requests_to("GET", "/api/templates")) == 1
    assert not server.requests_to("POST", "/api/generations")


async def test_redis_down_never_fails_a_request(
    server: FakePrismServer, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = RedisLedger(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix())
    caplog.set_level(logging.WARNING, logger="prism_async")
    server.inject("GET", "/api/templates", status=429, headers={"Retry-After": "0.5"}, body=LIMITED)
    async with PrismClient(server.api_key, base_url=server.base_url, ledger=ledger) as prism:
        started = time.monotonic()
        await prism.templates.list()  # the 429, then a retry: the pause is kept locally
        assert time.monotonic() - started >= 0.5
        await asyncio.gather(*(prism.templates.list() for _ in range(5)))
        await prism.generations.create(prompt="still sent", model_name="veo-3.1")
    assert len(server.requests_to("GET", "/api/templates")) == 7
    warnings = [r for r in caplog.records if "429 pauses cannot be shared" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    # the paid POST did not wait out the ledger's retries for its 402 check and its charge
    # record (a client without a budget): one bounded try, then they are skipped for a while
    skipped = [r for r in caplog.records if "the ledger is not answering" in r.getMessage()]
    assert len(skipped) == 1


async def commands(store: redis.Redis) -> dict[str, int]:
    """How many times the Redis server ran each command so far."""
    stats = await store.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}


async def test_the_success_path_makes_no_redis_round_trip(
    server: FakePrismServer, redis_url: str, store: redis.Redis
) -> None:
    ledger = RedisLedger(redis_url, prefix=prefix())
    reads = (await commands(store)).get("pttl", 0)
    async with PrismClient(server.api_key, base_url=server.base_url, ledger=ledger) as prism:
        await following(store, f"{ledger.prefix}paused", 1)

        async def first_read() -> bool:  # the follower has connected and read the pause
            return (await commands(store)).get("pttl", 0) > reads

        await eventually(first_read, "the follower's first read")
        before = await commands(store)
        started = time.monotonic()
        await asyncio.gather(*(prism.templates.list() for _ in range(200)))
        elapsed = time.monotonic() - started
        after = await commands(store)
    ran = {name: calls - before.get(name, 0) for name, calls in after.items()}
    ran = {name: calls for name, calls in ran.items() if calls and name != "info"}  # ours
    # Nothing but the follower's re-reads of the pause, one a second.
    assert set(ran) <= {"pttl"}, ran
    assert ran.get("pttl", 0) <= int(elapsed / REFRESH) + 1, ran


@pytest.mark.parametrize("kind", ["sqlite", "none"])
async def test_without_a_redis_ledger_only_the_429d_request_waits(
    server: FakePrismServer, tmp_path: Path, kind: str
) -> None:
    def ledger() -> SQLiteLedger | None:
        return SQLiteLedger(tmp_path / "ledger.db") if kind == "sqlite" else None

    once = RetryPolicy(max_retries=0)
    x = PrismClient(server.api_key, base_url=server.base_url, retry=once, ledger=ledger())
    y = PrismClient(server.api_key, base_url=server.base_url, ledger=ledger())
    async with x, y:
        server.inject(
            "GET", "/api/templates", status=429, headers={"Retry-After": "5"}, body=LIMITED
        )
        with pytest.raises(RateLimitError):
            await x.templates.list()
        started = time.monotonic()
        await y.templates.list()
        await x.templates.list()  # no pause kept either: the next request goes out at once
        assert time.monotonic() - started < 1.0
