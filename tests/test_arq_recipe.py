"""The README's arq recipe (``tests/apps/arq_recipe.py``), run for real.

A real ``redis-server``, the fake API in this process, and ``arq`` workers as subprocesses
running the recipe's ``WorkerSettings`` unchanged (environment variables point them at the
fake and at Redis). Ten jobs are enqueued; the first worker is killed with SIGKILL while they
wait for their videos (or while their POSTs are in flight); arq runs them again on a second
worker once their in-progress keys expire (``job_timeout`` + 10 s after they started), and the
ledger turns each re-run into a replay (or a reconciliation): one POST per job, one download
per video, every job done. An ambiguous key whose videos the history lists only once they are
finished keeps its job waiting (deferred, try after try: the recipe's job is the SDK's
``prism_async.integrations.jobs.create_wait_download`` with ``defer=True``, its ``RetryLater``
turned into arq's ``Retry``) until it is reconciled and delivered.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.jobs import Job
from redis import asyncio as redis

from prism_async import PrismClient, PrismError
from prism_async.ledger import RedisLedger
from prism_async.testing import FakePrismServer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RECIPE = ROOT / "tests" / "apps" / "arq_recipe.py"
JOBS = 10
JOB_TIMEOUT = 5
"""arq's ``job_timeout`` in the test: a killed worker's jobs run again 15 s after they started."""
RECONCILE_SECONDS = 0.2
"""The ledger's ``reconcile_interval`` in the test: an ambiguous key's job is deferred by it."""
REDIS_DB = 13
"""A database of the session's Redis for these tests alone (arq's and the ledger's default keys)."""


def prompt_of(index: int) -> str:
    """Distinct prompts, none a substring of another (reconciliation searches by prompt)."""
    return f"arq recipe clip <{index:02d}>: a lighthouse at dusk"


class Worker:
    """``python -m arq tests.apps.arq_recipe.WorkerSettings``, its output in a file."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM, as a deploy stops it: arq cancels its jobs and runs ``on_shutdown``."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            await self.kill()
            raise


StartWorker = Callable[[str], Awaitable[Worker]]


@pytest.fixture
async def workers(
    server: FakePrismServer, redis_url: str, tmp_path: Path
) -> AsyncIterator[StartWorker]:
    """Start recipe workers (``await start(name)``); every one still running is killed after."""
    started: list[Worker] = []
    env = {
        **os.environ,
        "PRISM_API_KEY": server.api_key,
        "PRISM_BASE_URL": server.base_url,
        "REDIS_URL": db_url(redis_url),
        "VIDEO_DIR": str(tmp_path / "videos"),
        "POLL_SECONDS": "0.1",
        "RECONCILE_SECONDS": str(RECONCILE_SECONDS),
        "JOB_TIMEOUT": str(JOB_TIMEOUT),
        "PYTHONUNBUFFERED": "1",
    }

    async def start(name: str) -> Worker:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "arq", "tests.apps.arq_recipe.WorkerSettings",
                cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        worker = Worker(process, log)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            await worker.kill()


def db_url(redis_url: str) -> str:
    return re.sub(r"/\d+$", f"/{REDIS_DB}", redis_url)


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[ArqRedis]:
    """An arq pool on an emptied database of the session's Redis."""
    url = db_url(redis_url)
    flush = redis.Redis.from_url(url)
    await flush.flushdb()
    await flush.aclose()
    pool = await create_pool(RedisSettings.from_dsn(url))
    try:
        yield pool
    finally:
        await pool.flushdb()
        await pool.aclose()


@pytest.fixture
async def ledger(redis_url: str, queue: ArqRedis) -> AsyncIterator[RedisLedger]:
    """The recipe's ledger, seen from the test."""
    ledger = RedisLedger(db_url(redis_url))
    try:
        yield ledger
    finally:
        await ledger.aclose()


async def until(check: Callable[[], bool], what: str, *workers: Worker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.log.name}\n{w.output()}" for w in workers)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        for worker in workers:
            assert worker.process.returncode is None, f"{worker.log.name} exited\n{worker.output()}"
        await asyncio.sleep(0.05)


async def enqueue(queue: ArqRedis, keys: list[str]) -> list[Job]:
    jobs = []
    for index, key in enumerate(keys):
        job = await queue.enqueue_job("make_video", key, prompt_of(index))
        assert job is not None
        jobs.append(job)
    return jobs


def gets(server: FakePrismServer, generation_id: str) -> int:
    return len(server.requests_to("GET", f"/api/generations/{generation_id}"))


def downloads(server: FakePrismServer, generation_id: str) -> int:
    return len(server.requests_to("GET", f"/storage/videos/{generation_id}.mp4"))


def posts(server: FakePrismServer) -> int:
    return len(server.requests_to("POST", "/api/generations"))


async def states(ledger: RedisLedger, keys: list[str]) -> list[str | None]:
    rows = await ledger.get_many(keys)
    return [rows[key].state if key in rows else None for key in keys]


def ids_by_prompt(server: FakePrismServer) -> dict[str, str]:
    return {g.prompt: g.id for g in server.generations.values()}


async def start_and_send(
    server: FakePrismServer, queue: ArqRedis, workers: StartWorker, keys: list[str]
) -> tuple[list[Job], Worker]:
    """Enqueue a job per key and start a first worker; return once every POST has arrived."""
    jobs = await enqueue(queue, keys)
    first = await workers("first")

    def sent() -> bool:
        return posts(server) == JOBS and len(server.generations) == JOBS

    await until(sent, "every POST", first, timeout=20)
    return jobs, first


async def finish(
    server: FakePrismServer, second: Worker, seen: dict[str, int], timeout: float
) -> None:
    """Once the second worker polls every generation, complete them all."""
    ids = list(server.generations)
    await until(
        lambda: all(gets(server, i) > seen.get(i, 0) for i in ids),
        "the re-run jobs to wait",
        second,
        timeout=timeout,
    )
    for generation_id in ids:
        server.complete_generation(generation_id)


async def test_a_worker_killed_mid_wait_pays_nothing_twice(
    server: FakePrismServer,
    queue: ArqRedis,
    ledger: RedisLedger,
    workers: StartWorker,
) -> None:
    keys = [f"clip-{i}-{uuid.uuid4().hex[:8]}" for i in range(JOBS)]
    jobs, first = await start_and_send(server, queue, workers, keys)
    ids = ids_by_prompt(server)
    await until(lambda: all(gets(server, i) for i in ids.values()), "the waits", first, timeout=10)
    assert await states(ledger, keys) == ["accepted"] * JOBS
    await first.kill()  # SIGKILL while all ten wait
    seen = {i: gets(server, i) for i in ids.values()}

    second = await workers("second")
    await finish(server, second, seen, timeout=JOB_TIMEOUT + 20)
    paths = [await job.result(timeout=JOB_TIMEOUT + 5) for job in jobs]

    assert posts(server) == JOBS  # one per job, re-runs included
    assert [downloads(server, i) for i in ids.values()] == [1] * JOBS
    for index, (job, path) in enumerate(zip(jobs, paths, strict=True)):
        generation_id = ids[prompt_of(index)]
        assert [Path(p).name for p in path] == [f"{generation_id}.mp4"]
        assert Path(path[0]).read_bytes() == server.video
        await ran_twice(job)

    # The same keys enqueued again (a double click, a replayed event): new arq jobs, no POST,
    # no download: the ledger replays the batches and knows the files.
    again = await enqueue(queue, keys)
    assert [await job.result(timeout=10) for job in again] == paths
    assert posts(server) == JOBS
    assert [downloads(server, i) for i in ids.values()] == [1] * JOBS

    await stopped_cleanly(second)


async def test_a_worker_killed_mid_post_reconciles_instead_of_paying_again(
    server: FakePrismServer,
    queue: ArqRedis,
    ledger: RedisLedger,
    workers: StartWorker,
) -> None:
    # Every POST is queued and charged by the API, but its answer never comes back in time.
    server.inject("POST", "/api/generations", processed=True, delay=30, times=JOBS)
    keys = [f"post-{i}-{uuid.uuid4().hex[:8]}" for i in range(JOBS)]
    jobs, first = await start_and_send(server, queue, workers, keys)
    assert await states(ledger, keys) == ["sending"] * JOBS
    await first.kill()  # SIGKILL with ten POSTs in flight
    ids = ids_by_prompt(server)

    second = await workers("second")
    await finish(server, second, {}, timeout=JOB_TIMEOUT + 20)
    paths = [await job.result(timeout=JOB_TIMEOUT + 5) for job in jobs]

    assert posts(server) == JOBS  # no second POST: the re-runs reconciled
    assert len(server.requests_to("GET", "/api/assets/search")) >= JOBS
    assert await states(ledger, keys) == ["reconciled"] * JOBS
    assert [downloads(server, i) for i in ids.values()] == [1] * JOBS
    for index, (key, job, path) in enumerate(zip(keys, jobs, paths, strict=True)):
        generation_id = ids[prompt_of(index)]
        submission = await ledger.get(key)
        assert submission is not None
        assert submission.generation_ids == (generation_id,)
        assert [Path(p).name for p in path] == [f"{generation_id}.mp4"]
        assert Path(path[0]).read_bytes() == server.video
        await ran_twice(job)

    await stopped_cleanly(second)


async def test_an_ambiguous_key_waits_until_the_history_lists_its_video(
    server: FakePrismServer,
    queue: ArqRedis,
    ledger: RedisLedger,
    workers: StartWorker,
    redis_url: str,
) -> None:
    # As the real API may: a generation shows up in the history only once it has finished.
    server.history_completed_only = True
    keys = [f"late-{i}-{uuid.uuid4().hex[:8]}" for i in range(3)]
    # Each POST is queued and charged, but its answer is lost: the keys are ambiguous.
    server.inject("POST", "/api/generations", processed=True, drop=True, times=len(keys))
    async with PrismClient(
        server.api_key, base_url=server.base_url, ledger=RedisLedger(db_url(redis_url))
    ) as prism:
        for index, key in enumerate(keys):
            with pytest.raises(PrismError):
                await prism.generations.create(
                    key=key, prompt=prompt_of(index), model_name="veo-3.1"
                )
    assert await states(ledger, keys) == ["ambiguous"] * len(keys)

    jobs = await enqueue(queue, keys)
    worker = await workers("only")
    searches = len(keys) * 7  # more tries than arq's default max_tries (5) would allow

    def looked() -> bool:
        return len(server.requests_to("GET", "/api/assets/search")) >= searches

    await until(looked, "the jobs to look at the history, try after try", worker, timeout=15)
    assert await states(ledger, keys) == ["ambiguous"] * len(keys)  # still waiting
    for generation_id in server.generations:
        server.complete_generation(generation_id)
    paths = [await job.result(timeout=15) for job in jobs]

    assert posts(server) == len(keys)  # never sent again
    assert await states(ledger, keys) == ["reconciled"] * len(keys)
    ids = ids_by_prompt(server)
    for index, (job, path) in enumerate(zip(jobs, paths, strict=True)):
        assert [Path(p).name for p in path] == [f"{ids[prompt_of(index)]}.mp4"]
        info = await job.result_info()
        assert info is not None
        assert info.success
        assert info.job_try > 5
    assert [downloads(server, i) for i in ids.values()] == [1] * len(keys)
    await stopped_cleanly(worker)


async def ran_twice(job: Job) -> None:
    """The job succeeded on its second try, which arq started only once the first try's
    in-progress key had expired (``job_timeout`` + 10 s after the first try started)."""
    info = await job.result_info()
    assert info is not None
    assert info.success
    assert info.job_try == 2
    assert info.start_time - info.enqueue_time >= timedelta(seconds=JOB_TIMEOUT + 10)


async def stopped_cleanly(worker: Worker) -> None:
    """SIGTERM ends the worker with status 0, having closed the client (``on_shutdown``)."""
    assert await worker.stop() == 0
    output = worker.output()
    assert "Traceback" not in output, output
    assert "Unclosed" not in output, output


def readme_recipe() -> str:
    text = README.read_text()
    section = text.split("## Job queues (arq)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return next(str(b) for b in blocks if "class WorkerSettings" in b)


def test_the_readme_shows_the_recipe_verbatim() -> None:
    assert readme_recipe() == RECIPE.read_text()
