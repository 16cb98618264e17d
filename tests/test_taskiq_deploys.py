"""Deploys and Redis outages with real ``taskiq worker`` processes on a real Redis.

* SIGTERM: a worker exits within ``shutdown_timeout`` (the app sets 3 s; taskiq's manager adds
  up to a second to relay the signal), a job that can finish in that time finishes there, and
  the message of one that cannot is handed back and runs on another worker at once (the app's
  ``idle_timeout`` is a minute: nothing else would bring it back within the test).
* A Redis killed (SIGKILL) for 5 s and started again on the same port, data and AOF: the worker
  neither exits nor restarts, says so once, and the jobs enqueued before, during and after all
  complete, once each, their acknowledgements retried.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from prism_async.integrations.taskiq import PrismStreamBroker
from tests.taskiq_helpers import eventually, unique
from tests.taskiq_workers import Journal, RestartableRedis, kick, workers

SHUTDOWN = 3.0


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.log")


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir()
    return folder


def environment(redis_url: str, queue: str, journal: Journal, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEPLOY_REDIS": redis_url,
        "DEPLOY_QUEUE": queue,
        "DEPLOY_JOURNAL": str(journal.path),
        "DEPLOY_SHUTDOWN": str(SHUTDOWN),
        **extra,
    }


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[PrismStreamBroker]:
    """The enqueuing side, on a queue of its own."""
    broker = PrismStreamBroker(redis_url, queue_name=unique("deploy"))
    await broker.startup()
    yield broker
    await broker.shutdown()


async def settled(redis: Redis, queue: str) -> bool:
    """Nothing left on the stream: every message acknowledged (and deleted)."""
    pending = await redis.xpending(queue, "prism")
    return int(pending["pending"]) == 0 and await redis.xlen(queue) == 0


async def test_sigterm_lets_a_short_job_finish_and_hands_a_long_one_to_another_worker(
    redis_url: str, client: PrismStreamBroker, journal: Journal, logs: Path
) -> None:
    """SIGTERM to a worker's process group while it runs a job ending 1.5 s later and a 60 s
    one: it exits within shutdown_timeout; the short job finished there, once; the long one
    runs again on the other worker right away, not after idle_timeout (60 s)."""
    env = environment(redis_url, client.queue_name, journal)
    with workers(env, logs) as fleet:
        first = fleet.spawn("first")
        await eventually(lambda: _count(journal.workers(), 1), timeout=15, what="a worker")
        await kick(client, "deploy.sleep", "long", 60.0, 0.2)
        await kick(client, "deploy.sleep", "short", 4.0, 4.0)

        async def both_started() -> bool:
            return bool(journal.pids("start", "long") and journal.pids("start", "short"))

        await eventually(both_started, timeout=10, what="both jobs to start")
        started = time.monotonic()
        fleet.spawn("second")
        await eventually(lambda: _count(journal.workers(), 2), timeout=15, what="a 2nd worker")
        (stopped,) = journal.pids("start", "long")
        # SIGTERM about 1.5 s before the short job ends: it has until SHUTDOWN - 0.75 s.
        await asyncio.sleep(max(0.0, started + 2.5 - time.monotonic()))
        assert not journal.pids("done", "short"), "the short job ended before the SIGTERM"

        sent = time.monotonic()
        os.killpg(first.pid, signal.SIGTERM)  # the manager and its worker, as systemd does
        await eventually(lambda: _exited(first.poll()), timeout=SHUTDOWN + 5, what="the exit")
        took = time.monotonic() - sent
        assert took <= SHUTDOWN + 1.0, f"exited {took:.1f} s after SIGTERM"
        assert first.returncode == 0

        async def long_done() -> bool:
            return bool(journal.pids("done", "long"))

        await eventually(long_done, timeout=5, what="the long job to run again")
        assert time.monotonic() - sent < 10  # handed back: far sooner than idle_timeout
        (other,) = set(journal.workers()) - {stopped}
        assert journal.pids("start", "long") == [stopped, other]
        assert journal.pids("done", "long") == [other]
        assert journal.pids("start", "short") == journal.pids("done", "short") == [stopped]
        assert "2 running job(s) have 3 s to finish" in fleet.output("first")
        assert "1 message(s) handed back for immediate redelivery" in fleet.output("first")
        async with Redis.from_url(redis_url) as redis:
            await eventually(lambda: settled(redis, client.queue_name), timeout=5, what="acks")


async def test_an_idle_worker_exits_at_once_on_sigterm_to_its_manager(
    redis_url: str, client: PrismStreamBroker, journal: Journal, logs: Path
) -> None:
    """``docker stop`` signals the manager only: it relays the signal (within a second) and
    the idle worker stops at once, not after shutdown_timeout (taskiq 0.13 alone: never)."""
    env = environment(redis_url, client.queue_name, journal, DEPLOY_SHUTDOWN="30")
    with workers(env, logs) as fleet:
        manager = fleet.spawn("idle")
        await eventually(lambda: _count(journal.workers(), 1), timeout=15, what="a worker")
        await kick(client, "deploy.sleep", "quick", 0.05, 0.05)
        await eventually(lambda: _count(journal.pids("done", "quick"), 1), timeout=5, what="a job")
        sent = time.monotonic()
        manager.send_signal(signal.SIGTERM)
        await eventually(lambda: _exited(manager.poll()), timeout=10, what="the exit")
        assert time.monotonic() - sent < 3.5  # not 30 s
        assert manager.returncode == 0
        assert "Stopping prefetching messages" in fleet.output("idle")


async def test_a_worker_rides_out_a_redis_outage(
    tmp_path: Path, journal: Journal, logs: Path
) -> None:
    """Redis killed while a job runs and started again 5 s later (same port, same AOF): the
    worker process neither exits nor restarts, logs the outage once, and every job enqueued
    before, during and after completes once; the failed acknowledgement goes through later."""
    data = tmp_path / "redis"
    data.mkdir()
    server = RestartableRedis(_free_port(), data)
    await server.start()
    client = PrismStreamBroker(server.url, queue_name="outage")
    try:
        await client.startup()
        env = environment(server.url, "outage", journal)
        with workers(env, logs) as fleet:
            manager = fleet.spawn("weather")
            await eventually(lambda: _count(journal.workers(), 1), timeout=15, what="a worker")
            for index in range(3):
                await kick(client, "deploy.sleep", f"before-{index}", 0.05, 0.05)
            await kick(client, "deploy.sleep", "during", 1.5, 1.5)

            async def during_started() -> bool:
                return bool(journal.pids("start", "during"))

            await eventually(during_started, timeout=10, what="the job to start")
            await server.kill()
            await asyncio.sleep(5.0)  # the job ends (its ack fails), reads and heartbeats fail
            assert manager.poll() is None
            await server.start()
            for index in range(3):
                await kick(client, "deploy.sleep", f"after-{index}", 0.05, 0.05)
            tags = [f"before-{i}" for i in range(3)] + ["during"] + [f"after-{i}" for i in range(3)]

            async def all_done() -> bool:
                return all(journal.pids("done", tag) for tag in tags)

            await eventually(all_done, timeout=15, what="every job to complete")
            async with Redis.from_url(server.url) as redis:
                await eventually(lambda: settled(redis, "outage"), timeout=10, what="the acks")
            assert manager.poll() is None
            assert len(journal.workers()) == 1  # never restarted
            for tag in tags:
                assert len(journal.pids("start", tag)) == 1, tag
            output = fleet.output("weather")
            assert output.count("Redis is unreachable") == 1, output
            assert "Redis is back after" in output
            assert "Traceback" not in output
    finally:
        await client.shutdown()
        await server.kill()


async def _count(items: list[int], wanted: int) -> bool:
    return len(items) >= wanted


async def _exited(code: int | None) -> bool:
    return code is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
