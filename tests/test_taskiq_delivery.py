"""Every paid video delivered: real taskiq workers on a real Redis run 50 simple-pattern jobs
(25 of one identical request, 25 distinct) against a fake whose history lists a generation
only once it has finished; the worker whose POST the fake holds is killed with SIGKILL.

Its jobs come back to other workers: the keys it left ``sending`` are ambiguous, wait (the
history does not show them yet), and are reconciled once their videos finish, the identical
requests sharing their candidates. Then: 50/50 videos downloaded, exactly one POST per key,
no key left ambiguous.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from taskiq.kicker import AsyncKicker

from prism_async.integrations.taskiq import (
    CREATE_WAIT_DOWNLOAD_TASK,
    TASK_LABELS,
    PrismStreamBroker,
)
from prism_async.ledger import RedisLedger
from prism_async.testing import FakePrismServer
from tests.taskiq_helpers import eventually, request_of, unique
from tests.test_taskiq_fleet import Fleet, _count, logs

__all__ = ["logs"]

JOBS = 50
WORKERS = 3


async def test_a_kill_mid_post_loses_no_paid_video(
    redis_url: str, tmp_path: Path, logs: Path
) -> None:
    prefix, queue, folder = f"{unique('deliver')}:", unique("deliver-queue"), tmp_path / "videos"
    keys = [f"job/{i}" for i in range(JOBS)]
    requests = {
        key: request_of("same", 0) if i % 2 else request_of("distinct", i)
        for i, key in enumerate(keys)
    }
    async with (
        FakePrismServer(generation_seconds=lambda: random.uniform(1.0, 2.0)) as fake,
        Redis.from_url(redis_url, decode_responses=True) as redis,
    ):
        fake.history_completed_only = True
        env = {
            **os.environ,
            "FLEET_REDIS": redis_url,
            "FLEET_QUEUE": queue,
            "FLEET_PREFIX": prefix,
            "FLEET_DOWNLOADS": str(folder),
            "FLEET_RECONCILE_WINDOW": "10",
            "FLEET_RECONCILE_INTERVAL": "0.3",
            "PRISM_API_KEY": fake.api_key,
            "PRISM_BASE_URL": fake.base_url,
        }
        fleet = Fleet(fake, redis, RedisLedger(redis_url, prefix=prefix), prefix, env, logs)
        client = PrismStreamBroker(redis_url, queue_name=queue)
        try:
            await _run(fleet, client, keys, requests, folder)
        except BaseException:
            print(fleet.output())
            raise
        finally:
            fleet.stop()
            await client.shutdown()
            await fleet.ledger.aclose()


async def _run(
    fleet: Fleet,
    client: PrismStreamBroker,
    keys: list[str],
    requests: dict[str, dict[str, Any]],
    folder: Path,
) -> None:
    fake = fleet.fake
    for index in range(WORKERS):
        fleet.spawn(f"worker-{index}", [
            sys.executable, "-m", "taskiq", "worker", "tests.taskiq_fleet_app:broker",
            "--workers", "1", "--max-async-tasks", "30", "--ack-type", "when_executed",
            "--shutdown-timeout", "1", "--wait-tasks-timeout", "1",
        ])  # fmt: skip
    await eventually(lambda: _count(fleet, WORKERS), timeout=30, what="the workers to start")

    # The first POST is queued and charged, its answer held: its worker dies waiting.
    fake.inject("POST", "/api/generations", processed=True, delay=30, times=1)
    await client.startup()
    simple: AsyncKicker[Any, Any] = AsyncKicker(
        CREATE_WAIT_DOWNLOAD_TASK, client, dict(TASK_LABELS)
    )
    for key in keys:
        await simple.kiq(key, requests[key])

    async def held() -> bool:
        return not fake.faults and bool(fake.requests_to("POST", "/api/generations"))

    await eventually(held, timeout=15, what="the held POST")
    sending = [row async for row in fleet.ledger.list(state="sending")]
    owners = {row.lease_owner for row in sending if row.lease_owner is not None}
    assert owners
    victim = int(sorted(owners)[0].rsplit(":", 2)[1])
    os.kill(victim, signal.SIGKILL)

    await eventually(
        lambda: fleet.delivered(keys), timeout=60, what="every video to be downloaded", every=0.3
    )
    rows = await fleet.ledger.get_many(keys)
    ids = [generation_id for row in rows.values() for generation_id in row.generation_ids]
    assert len(ids) == len(set(ids)) == JOBS  # one video per key, none shared
    assert sorted(ids) == sorted(fake.generations)  # and every video paid for is one of them
    assert len(fake.requests_to("POST", "/api/generations")) == JOBS  # no duplicate POST
    assert {row.state for row in rows.values()} <= {"accepted", "reconciled"}
    assert "reconciled" in {row.state for row in rows.values()}  # the killed worker's
    for key, row in rows.items():
        (generation_id,) = row.generation_ids
        assert fake.generations[generation_id].prompt == requests[key]["prompt"]
    gets = fake.requests_to("GET", "/storage/videos/*")
    assert sorted(r.path.rsplit("/", 1)[-1].removesuffix(".mp4") for r in gets) == sorted(ids)
    for generation_id in ids:
        assert (folder / f"{generation_id}.mp4").read_bytes() == fake.video
