"""A fleet through a Redis outage: real taskiq workers and a real tracker process on a Redis
server that is killed (SIGKILL) for 8 s while POST answers are in flight and waits run, then
started again on the same port with the same append-only file.

Nothing crash-loops (the same worker processes, the tracker still running), every video is
downloaded exactly once, there is one POST per key, and nothing blames the API.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from taskiq.kicker import AsyncKicker

from prism_async.integrations.taskiq import (
    CREATE_WAIT_DOWNLOAD_TASK,
    SUBMIT_TASK,
    TASK_LABELS,
    PrismStreamBroker,
)
from prism_async.ledger import RedisLedger
from prism_async.testing import FakePrismServer
from tests.taskiq_helpers import eventually, request_of, unique
from tests.taskiq_workers import RestartableRedis
from tests.test_taskiq_fleet import Fleet, _count, logs

__all__ = ["logs"]

SUBMITS = 15
SIMPLES = 15
WORKERS = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_redis_outage_is_weather_for_the_fleet(tmp_path: Path, logs: Path) -> None:
    data = tmp_path / "redis"
    data.mkdir()
    server = RestartableRedis(_free_port(), data)
    await server.start()
    prefix, queue, folder = f"{unique('outage')}:", unique("outage-queue"), tmp_path / "videos"
    submit_keys = [f"scalable/{i}" for i in range(SUBMITS)]
    simple_keys = [f"simple/{i}" for i in range(SIMPLES)]
    keys = submit_keys + simple_keys
    async with FakePrismServer(generation_seconds=lambda: random.uniform(1.0, 3.0)) as fake:
        env = {
            **os.environ,
            "FLEET_REDIS": server.url,
            "FLEET_QUEUE": queue,
            "FLEET_PREFIX": prefix,
            "FLEET_DOWNLOADS": str(folder),
            "PRISM_API_KEY": fake.api_key,
            "PRISM_BASE_URL": fake.base_url,
        }
        redis = Redis.from_url(server.url, decode_responses=True)
        fleet = Fleet(fake, redis, RedisLedger(server.url, prefix=prefix), prefix, env, logs)
        client = PrismStreamBroker(server.url, queue_name=queue)
        try:
            await _run(fleet, client, server, keys, submit_keys, simple_keys, folder)
        except BaseException:
            print(fleet.output())
            raise
        finally:
            fleet.stop()
            await client.shutdown()
            await fleet.ledger.aclose()
            await redis.aclose()
            await server.kill()


async def _run(
    fleet: Fleet,
    client: PrismStreamBroker,
    server: RestartableRedis,
    keys: list[str],
    submit_keys: list[str],
    simple_keys: list[str],
    folder: Path,
) -> None:
    fake, python = fleet.fake, sys.executable
    command = [
        python, "-m", "taskiq", "worker", "tests.taskiq_fleet_app:broker",
        "--workers", "1", "--max-async-tasks", "30", "--ack-type", "when_executed",
    ]  # fmt: skip
    workers = [fleet.spawn(f"worker-{index}", command) for index in range(WORKERS)]
    tracker = fleet.spawn("tracker", [
        python, "-m", "prism_async", "--json", "track",
        "--ledger", server.url, "--ledger-prefix", fleet.prefix,
        "--broker", server.url, "--queue", fleet.env["FLEET_QUEUE"],
        "--poll-interval", "0.3", "--scan-interval", "0.2",
    ])  # fmt: skip
    await eventually(lambda: _count(fleet, WORKERS), timeout=30, what="the workers to start")
    pids = await fleet.workers()

    # Five answers held for 3 s: the fake queues and charges, Redis dies before they arrive.
    fake.inject("POST", "/api/generations", processed=True, delay=3.0, times=5)
    await client.startup()
    submit: AsyncKicker[Any, Any] = AsyncKicker(SUBMIT_TASK, client, dict(TASK_LABELS))
    simple: AsyncKicker[Any, Any] = AsyncKicker(
        CREATE_WAIT_DOWNLOAD_TASK, client, dict(TASK_LABELS)
    )
    for key in submit_keys:
        await submit.kiq(key, request_of(key, 0))
    for key in simple_keys:
        await simple.kiq(key, request_of(key, 0))

    async def answers_in_flight() -> bool:
        return len(fake.requests_to("POST", "/api/generations")) >= 5

    await eventually(answers_in_flight, timeout=20, what="POSTs in flight")
    await server.kill()
    await asyncio.sleep(8.0)
    assert all(worker.poll() is None for worker in workers)
    assert tracker.poll() is None
    await server.start()

    await eventually(
        lambda: fleet.delivered(keys), timeout=90, what="every video to be downloaded", every=0.5
    )
    rows = await fleet.ledger.get_many(keys)
    ids = sorted(i for row in rows.values() for i in row.generation_ids)
    assert ids == sorted(fake.generations)  # every video paid for belongs to one key
    posts = fake.requests_to("POST", "/api/generations")
    assert sorted(str(r.json["prompt"]) for r in posts) == sorted(
        str(request_of(key, 0)["prompt"]) for key in keys
    )  # exactly one POST per key
    gets = fake.requests_to("GET", "/storage/videos/*")
    assert sorted(r.path.rsplit("/", 1)[-1].removesuffix(".mp4") for r in gets) == ids
    for generation_id in ids:
        assert (folder / f"{generation_id}.mp4").read_bytes() == fake.video
    # nothing crash-looped: the same worker processes, the tracker still running
    assert all(worker.poll() is None for worker in workers)
    assert await fleet.workers() == pids
    assert tracker.poll() is None
    output = fleet.output()
    for blame in ("APIConnectionError", "InternalServerError", "Traceback"):
        assert blame not in output, blame
