"""A fleet under fire: real taskiq worker processes on a real Redis, the tracker in a process of
its own, the fake API in this one; workers killed with SIGKILL mid-POST and mid-wait.

Three ``taskiq worker tests.taskiq_fleet_app:broker`` processes (each restarted by taskiq's
process manager when killed) run 20 submit jobs (the scalable pattern: the tracker waits and
enqueues the downloads) and 12 simple-pattern jobs (create, wait, download in one job). The first
POST is held by the fake (queued and charged, its answer delayed): the worker sending it is
killed; so is a worker while a simple job of it waits. Their jobs come back to other workers once
idle for the broker's short ``idle_timeout``, with no new traffic needed. Then: at most one POST
per key, every generation the fake made is known to the ledger (the held one reconciled from
the history) or its key reported ambiguous, and every video was fetched exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from redis.asyncio import Redis
from taskiq.kicker import AsyncKicker

from prism_async.integrations.taskiq import (
    CREATE_WAIT_DOWNLOAD_TASK,
    SUBMIT_TASK,
    TASK_LABELS,
    PrismStreamBroker,
)
from prism_async.ledger import RedisLedger, Submission
from prism_async.testing import FakePrismServer
from tests.ledger_helpers import ROOT
from tests.taskiq_helpers import eventually, posts_by_prompt, prompt_of, request_of, unique

WORKERS = 3
SUBMITS = 20
SIMPLES = 12


@attrs.define
class Fleet:
    """The processes of one fleet, the fake, and what the test reads back."""

    fake: FakePrismServer
    redis: Redis
    ledger: RedisLedger
    prefix: str
    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen[bytes]] = attrs.field(factory=list)

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        """A process group of its own (the taskiq manager and its worker), output to a log."""
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """Kill every process group this fleet started (its own ids only)."""
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def output(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in self.logs.glob("*.log"))

    async def workers(self) -> set[int]:
        return {int(pid) for pid in await self.redis.smembers(f"{self.prefix}workers")}

    async def running(self) -> list[dict[str, Any]]:
        entries = cast(dict[str, str], await self.redis.hgetall(f"{self.prefix}running"))
        return [json.loads(entry) for entry in entries.values()]

    async def runs(self) -> list[dict[str, Any]]:
        entries = cast(list[str], await self.redis.lrange(f"{self.prefix}runs", 0, -1))
        return [json.loads(entry) for entry in entries]

    async def rows(self, keys: list[str]) -> dict[str, Submission]:
        return dict(await self.ledger.get_many(keys))

    async def delivered(self, keys: list[str]) -> bool:
        """Whether every key has its ids and every one of their videos was downloaded."""
        rows = await self.ledger.get_many(keys)
        if len(rows) < len(keys) or not all(row.done for row in rows.values()):
            return False
        for row in rows.values():
            for generation_id in row.generation_ids:
                record = await self.ledger.generation(generation_id)
                if record is None or record.path is None:
                    return False
        return True


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir()
    return folder


async def test_a_fleet_pays_once_and_downloads_every_video_once(
    redis_url: str, tmp_path: Path, logs: Path
) -> None:
    """32 jobs on 3 worker processes and a tracker; one worker killed mid-POST, one mid-wait."""
    prefix, queue, folder = f"{unique('fleet')}:", unique("fleet-queue"), tmp_path / "videos"
    submit_keys = [f"scalable/{i}" for i in range(SUBMITS)]
    simple_keys = [f"simple/{i}" for i in range(SIMPLES)]
    keys = submit_keys + simple_keys
    prompts = {prompt_of(key, 0): key for key in keys}
    async with (
        FakePrismServer(generation_seconds=lambda: random.uniform(2.0, 3.5)) as fake,
        Redis.from_url(redis_url, decode_responses=True) as redis,
    ):
        env = {
            **os.environ,
            "FLEET_REDIS": redis_url,
            "FLEET_QUEUE": queue,
            "FLEET_PREFIX": prefix,
            "FLEET_DOWNLOADS": str(folder),
            "PRISM_API_KEY": fake.api_key,
            "PRISM_BASE_URL": fake.base_url,
        }
        fleet = Fleet(fake, redis, RedisLedger(redis_url, prefix=prefix), prefix, env, logs)
        client = PrismStreamBroker(redis_url, queue_name=queue)
        try:
            await _run(fleet, client, keys, submit_keys, simple_keys, prompts, folder)
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
    submit_keys: list[str],
    simple_keys: list[str],
    prompts: dict[str, str],
    folder: Path,
) -> None:
    fake, python = fleet.fake, sys.executable
    for index in range(WORKERS):
        fleet.spawn(f"worker-{index}", [
            python, "-m", "taskiq", "worker", "tests.taskiq_fleet_app:broker",
            "--workers", "1", "--max-async-tasks", "20", "--ack-type", "when_executed",
            "--shutdown-timeout", "1", "--wait-tasks-timeout", "1",
        ])  # fmt: skip
    fleet.spawn("tracker", [
        python, "-m", "prism_async", "--json", "track",
        "--ledger", fleet.env["FLEET_REDIS"], "--ledger-prefix", fleet.prefix,
        "--broker", fleet.env["FLEET_REDIS"], "--queue", fleet.env["FLEET_QUEUE"],
        "--poll-interval", "0.2", "--scan-interval", "0.2",
    ])  # fmt: skip
    await eventually(lambda: _count(fleet, WORKERS), timeout=30, what="the workers to start")

    # The first POST is queued and charged, and its answer held: its worker dies waiting.
    fake.inject("POST", "/api/generations", processed=True, delay=30, times=1)
    await client.startup()
    submit: AsyncKicker[Any, Any] = AsyncKicker(SUBMIT_TASK, client, dict(TASK_LABELS))
    simple: AsyncKicker[Any, Any] = AsyncKicker(
        CREATE_WAIT_DOWNLOAD_TASK, client, dict(TASK_LABELS)
    )
    for index in range(max(SUBMITS, SIMPLES)):
        if index < SUBMITS:
            await submit.kiq(submit_keys[index], request_of(submit_keys[index], 0))
        if index < SIMPLES:
            await simple.kiq(simple_keys[index], request_of(simple_keys[index], 0))

    held_key, first_victim = await _kill_mid_post(fleet, prompts)
    waiting_key, second_victim = await _kill_mid_wait(fleet, first_victim)

    async def finished() -> bool:
        rows = await fleet.rows(keys)
        if len(rows) < len(keys) or any(
            not r.done and r.state != "ambiguous" for r in rows.values()
        ):
            return False
        for row in rows.values():
            for generation_id in row.generation_ids:
                record = await fleet.ledger.generation(generation_id)
                if record is None or record.path is None:
                    return False
        return True

    await eventually(finished, timeout=45, what="every video to be downloaded", every=0.2)
    rows = await fleet.rows(keys)

    # At most one POST per key. A key with none was killed between its commit and its POST
    # (the mid-wait kill may catch a submit there): it is reported ambiguous, never re-sent.
    posts = posts_by_prompt(fake)
    assert max(posts.values()) == 1
    ambiguous = [row for row in rows.values() if row.state == "ambiguous"]
    assert {prompts[prompt] for prompt in set(prompts) - set(posts)} <= {r.key for r in ambiguous}
    # Every generation the fake made is known to the ledger, or its key reported ambiguous.
    claimed = await fleet.ledger.claimed_ids()
    assert len(set(fake.generations) - claimed) <= sum(
        int(row.request.get("count") or 1) for row in ambiguous
    )
    assert rows[held_key].state == "reconciled"  # settled from the history, not sent again
    # Every video fetched exactly once, and on disk.
    gets = fake.requests_to("GET", "/storage/videos/*")
    fetched = sorted(request.path.rsplit("/", 1)[-1].removesuffix(".mp4") for request in gets)
    assert fetched == sorted(claimed)
    for generation_id in claimed:
        assert (folder / f"{generation_id}.mp4").read_bytes() == fake.video
    assert list(folder.glob("*.part")) == []

    # The killed workers' jobs ran again on other workers (redelivered within the test).
    async def redelivered() -> bool:
        runs = await fleet.runs()
        for key, victim in ((held_key, first_victim), (waiting_key, second_victim)):
            pids = {run["pid"] for run in runs if run["args"] and run["args"][0] == key}
            if victim not in pids or len(pids) < 2:
                return False
        return True

    await eventually(redelivered, timeout=15, what="the killed workers' jobs to run again")


async def _count(fleet: Fleet, wanted: int) -> bool:
    return len(await fleet.workers()) >= wanted


async def _kill_mid_post(fleet: Fleet, prompts: dict[str, str]) -> tuple[str, int]:
    """Kill the worker whose POST the fake holds (found by its ledger row's lease)."""

    async def held() -> bool:
        return not fleet.fake.faults and bool(fleet.fake.requests_to("POST", "/api/generations"))

    await eventually(held, timeout=15, what="the held POST")
    key = prompts[str(fleet.fake.requests_to("POST", "/api/generations")[0].json["prompt"])]
    row = await fleet.ledger.get(key)
    assert row is not None
    assert row.state == "sending"
    assert row.lease_owner is not None
    pid = int(row.lease_owner.rsplit(":", 2)[1])
    os.kill(pid, signal.SIGKILL)
    return key, pid


async def _kill_mid_wait(fleet: Fleet, spared: int) -> tuple[str, int]:
    """Kill a worker while a simple job of it waits (no terminal status recorded yet)."""
    found: list[tuple[str, int]] = []

    async def waiting() -> bool:
        for entry in await fleet.running():
            key, pid = entry["args"][0], entry["pid"]
            if entry["task"] != CREATE_WAIT_DOWNLOAD_TASK or pid == spared or not alive(pid):
                continue
            row = await fleet.ledger.get(key)
            if row is None or not row.done:
                continue
            records = [await fleet.ledger.generation(g) for g in row.generation_ids]
            if all(record is None or record.status is None for record in records):
                found.append((key, pid))
                return True
        return False

    await eventually(waiting, timeout=15, what="a simple job waiting")
    key, pid = found[0]
    os.kill(pid, signal.SIGKILL)
    return key, pid
