"""The SDK's taskiq tasks on taskiq's InMemoryBroker, a real Redis (ledger and leases) and the
fake API: ``submit`` never sends a key twice, ``download`` fetches a video at most once, the
simple pattern survives running again, and each worker has one client, made at startup."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import attrs
import pytest
from taskiq import InMemoryBroker, TaskiqDepends

from prism_async import PrismClient
from prism_async.integrations.taskiq import (
    DOWNLOAD_TASK,
    PrismStreamBroker,
    PrismTasks,
    prism_client,
)
from prism_async.ledger import GenerationRecord, Ledger
from prism_async.ledger._model import Owner
from prism_async.testing import FakePrismServer
from tests.conftest import NO_WAIT
from tests.ledger_helpers import dead_owner
from tests.taskiq_helpers import (
    FAST,
    MODEL,
    eventually,
    posts_by_prompt,
    prompt_of,
    request_of,
    unique,
    video_gets,
)


@attrs.define
class World:
    fake: FakePrismServer
    broker: InMemoryBroker
    tasks: PrismTasks
    folder: Path

    @property
    def ledger(self) -> Ledger:
        ledger = self.tasks.client.ledger
        assert ledger is not None
        return ledger

    async def run(self, task: Any, *args: Any) -> Any:
        """Enqueue ``task`` and return its result's value (raising its error)."""
        sent = await task.kiq(*args)
        result = await sent.wait_result(timeout=20)
        result.raise_for_error()
        return result.return_value

    async def completed(self, key: str, index: int = 0) -> str:
        """Submit a clip under ``key`` and finish it on the fake; its generation id."""
        out = await self.run(self.tasks.submit, key, request_of(key, index))
        (generation_id,) = out["generation_ids"]
        self.fake.complete_generation(generation_id)
        return str(generation_id)


@pytest.fixture
async def world(redis_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with FakePrismServer(generation_seconds=0.3) as fake:
        broker = InMemoryBroker()
        tasks = PrismTasks(
            broker,
            ledger_url=redis_url,
            ledger_prefix=f"{unique('tasks')}:",
            download_dir=tmp_path / "videos",
            lease_seconds=1.0,
            reconcile_window=3.0,
            reconcile_interval=0.1,
            api_key=fake.api_key,
            base_url=fake.base_url,
            poll=FAST,
            retry=NO_WAIT,
        )
        await broker.startup()
        try:
            yield World(fake, broker, tasks, tmp_path / "videos")
        finally:
            await broker.shutdown()


# -- submit ------------------------------------------------------------------------------------


async def test_submit_sends_once_then_replays(world: World) -> None:
    """The same job run twice (a redelivery) posts once and returns the same ids."""
    first = await world.run(world.tasks.submit, "clip-1", request_of("a", 1))
    again = await world.run(world.tasks.submit, "clip-1", request_of("a", 1))
    assert first["state"] == again["state"] == "accepted"
    assert first["generation_ids"] == again["generation_ids"] != []
    assert posts_by_prompt(world.fake)[prompt_of("a", 1)] == 1


async def test_submit_reconciles_a_key_whose_answer_was_lost(world: World) -> None:
    """The server queued the video but its answer was lost: the key is ambiguous; the job (and
    a redelivery of it) settles it from the history, with no second POST."""
    world.fake.inject("POST", "/api/generations", status=502, processed=True, times=1)
    out = await world.run(world.tasks.submit, "lost-1", request_of("lost", 1))
    again = await world.run(world.tasks.submit, "lost-1", request_of("lost", 1))
    assert out["state"] == "reconciled"
    assert out["generation_ids"] == again["generation_ids"] == list(world.fake.generations)
    assert posts_by_prompt(world.fake)[prompt_of("lost", 1)] == 1


async def test_submit_waits_for_a_key_another_process_is_sending(world: World) -> None:
    """A row leased to a live process (this one, say) is in flight: the job sends nothing and
    waits for that process's answer, then returns its ids."""
    prism = world.tasks.client
    world.fake.inject("POST", "/api/generations", delay=1.0, times=1)
    sending = asyncio.create_task(
        prism.generations.create(key="busy", prompt=prompt_of("busy", 1), model_name=MODEL)
    )
    await eventually(
        lambda: _state(world, "busy", "sending"), timeout=5, what="the row to be sending"
    )
    out = await world.run(world.tasks.submit, "busy", request_of("busy", 1))
    batch = await sending
    assert out["state"] == "accepted"
    assert out["generation_ids"] == batch.ids
    assert posts_by_prompt(world.fake)[prompt_of("busy", 1)] == 1


async def test_submit_waits_for_a_history_that_lists_only_finished_work(world: World) -> None:
    """A lost answer the history does not show yet: the job keeps the key waiting (ambiguous)
    until the video is finished and listed, then returns it: delivered, never sent again.
    A POST that queued nothing is sent again once the window closed."""
    world.fake.history_completed_only = True
    world.fake.generation_seconds = 1.0
    world.fake.inject("POST", "/api/generations", status=502, processed=True, times=1)
    out = await world.run(world.tasks.submit, "slow-1", request_of("slow", 1))
    assert out["state"] == "reconciled"
    assert out["generation_ids"] == list(world.fake.generations)
    assert posts_by_prompt(world.fake)[prompt_of("slow", 1)] == 1
    world.fake.inject("POST", "/api/generations", status=502, times=1)
    out = await world.run(world.tasks.submit, "never-1", request_of("never", 1))
    assert out["state"] == "accepted"
    assert posts_by_prompt(world.fake)[prompt_of("never", 1)] == 2
    assert len(world.fake.generations) == 2


async def _state(world: World, key: str, state: str) -> bool:
    row = await world.ledger.get(key)
    return row is not None and row.state == state


async def test_submit_rejected_then_sent_again(world: World) -> None:
    """A refusal (402) queued nothing: the job says ``rejected``; a later run sends again."""
    world.fake.credits = 0
    out = await world.run(world.tasks.submit, "poor", request_of("poor", 1))
    assert out["state"] == "rejected"
    assert "credit" in out["error"].lower()
    world.fake.credits = 10_000
    paused = await world.run(world.tasks.submit, "poor", request_of("poor", 1))
    assert paused["state"] == "rejected"  # the 402 paused paid POSTs fleet-wide: not sent
    assert len(world.fake.requests_to("POST", "/api/generations")) == 1
    await world.ledger.clear_paid_pause()  # topped up
    assert (await world.run(world.tasks.submit, "poor", request_of("poor", 1)))["state"] == (
        "accepted"
    )


async def test_a_bad_request_fails_the_job_before_any_post(world: World) -> None:
    """Unknown fields and bad values are an error of the job; nothing is sent."""
    for request in ({"prompt": "x" * 20, "model_name": "veo-3.1", "colour": "red"}, {}):
        sent = await world.tasks.submit.kiq("bad", request)
        result = await sent.wait_result(timeout=10)
        assert result.is_err
    assert world.fake.requests_to("POST", "/api/generations") == []


async def test_a_key_reused_for_another_request_fails_the_job(world: World) -> None:
    """Another request under a recorded key is a conflict (an error of the job), not a POST."""
    await world.run(world.tasks.submit, "same", request_of("same", 1))
    sent = await world.tasks.submit.kiq("same", request_of("other", 2))
    result = await sent.wait_result(timeout=10)
    assert result.is_err
    assert type(result.error).__name__ == "SubmissionConflictError"
    assert posts_by_prompt(world.fake)[prompt_of("other", 2)] == 0


# -- download ----------------------------------------------------------------------------------


async def test_concurrent_downloads_fetch_the_video_once(world: World) -> None:
    """Four download jobs for one generation at once (redeliveries, the tracker and a simple
    job racing): one downloads, the others find it done; one storage GET."""
    generation_id = await world.completed("dl-1")
    outs = await asyncio.gather(*(world.run(world.tasks.download, generation_id) for _ in range(4)))
    states = sorted(out["state"] for out in outs)
    assert states == ["already_downloaded"] * 3 + ["downloaded"]
    assert video_gets(world.fake)[generation_id] == 1
    record = await world.ledger.generation(generation_id)
    assert record is not None
    assert record.path is not None
    assert Path(record.path).read_bytes() == world.fake.video
    assert {out["path"] for out in outs} == {record.path}


async def test_a_dead_holders_lease_is_taken_over_at_once(world: World) -> None:
    """A lease left by a process of this host that died (killed mid-download, with a ``.part``
    file) does not hold the redelivered job: it downloads now and removes the stale part."""
    generation_id = await world.completed("dl-2")
    redis = world.tasks.leases.redis
    await redis.set(world.tasks.leases.key(generation_id), f"{dead_owner()}|t0ken", px=60_000)
    world.folder.mkdir(parents=True)
    stale = world.folder / f".{generation_id}.mp4.dead.part"
    stale.write_bytes(b"half a video")
    out = await world.run(world.tasks.download, generation_id)
    assert out["state"] == "downloaded"
    assert not stale.exists()
    assert video_gets(world.fake)[generation_id] == 1


async def test_a_live_holders_lease_is_waited_for(world: World) -> None:
    """A lease held on another host ends with its ttl (its holder died there): the job waits
    for it, then downloads. While it lasts, nothing is fetched."""
    generation_id = await world.completed("dl-3")
    key = world.tasks.leases.key(generation_id)
    await world.tasks.leases.redis.set(key, "elsewhere:1:1|t0ken", px=700)
    job = asyncio.create_task(world.run(world.tasks.download, generation_id))
    await asyncio.sleep(0.4)
    assert video_gets(world.fake)[generation_id] == 0
    assert (await job)["state"] == "downloaded"


async def test_a_lease_held_longer_than_the_patience_is_busy(world: World) -> None:
    """A live holder that keeps its lease past the job's patience: the job ends ``busy``
    (that holder's own job finishes the download), having fetched nothing."""
    from prism_async.integrations.taskiq import download

    generation_id = await world.completed("dl-4")
    mine = Owner.me()
    await world.tasks.leases.redis.set(
        world.tasks.leases.key(generation_id), f"{mine}|t0ken", px=5000
    )
    out = await download(
        world.tasks.client, world.tasks.leases, generation_id, world.folder, patience=0.3
    )
    assert out["state"] == "busy"
    assert video_gets(world.fake)[generation_id] == 0


async def test_a_recorded_download_is_never_fetched_again(world: World) -> None:
    """The ledger records the file: the job does not even take the lease."""
    await world.ledger.record(GenerationRecord("gen_done", path="/videos/gen_done.mp4", size=9))
    out = await world.run(world.tasks.download, "gen_done")
    assert out == {
        "generation_id": "gen_done",
        "state": "already_downloaded",
        "path": "/videos/gen_done.mp4",
        "error": None,
    }
    assert await world.tasks.leases.redis.get(world.tasks.leases.key("gen_done")) is None


async def test_a_failed_generation_is_recorded_not_downloaded(world: World) -> None:
    """A download job for a generation that failed records the failure and fetches nothing."""
    out = await world.run(world.tasks.submit, "f", request_of("f", 1, prompt="[fail] " * 3))
    (generation_id,) = out["generation_ids"]
    world.fake.fail_generation(generation_id, "NSFW")
    got = await world.run(world.tasks.download, generation_id)
    assert got["state"] == "failed"
    record = await world.ledger.generation(generation_id)
    assert record is not None
    assert (record.status, record.error) == ("failed", "NSFW")


# -- the simple pattern ------------------------------------------------------------------------


async def test_create_wait_download_run_twice_pays_and_downloads_once(world: World) -> None:
    """The whole job, then the same job again (redelivered after it finished): one POST, one
    GET of each video, the same files."""
    request = request_of("simple", 1, count=2)
    first = await world.run(world.tasks.create_wait_download, "simple-1", request)
    again = await world.run(world.tasks.create_wait_download, "simple-1", request)
    assert first["state"] == again["state"] == "downloaded"
    assert len(first["paths"]) == 2
    assert sorted(first["paths"]) == sorted(again["paths"])
    assert posts_by_prompt(world.fake)[prompt_of("simple", 1)] == 1
    assert sorted(video_gets(world.fake).values()) == [1, 1]


async def test_create_wait_download_redelivered_mid_wait(world: World) -> None:
    """Two runs of one job at once (a redelivery while the first still waits): one POST,
    each video fetched once."""
    request = request_of("twice", 1)
    outs = await asyncio.gather(
        world.run(world.tasks.create_wait_download, "twice", request),
        world.run(world.tasks.create_wait_download, "twice", request),
    )
    states = sorted(out["state"] for out in outs)
    assert states in (["downloaded", "downloaded"], ["downloaded", "in_flight"])
    assert posts_by_prompt(world.fake)[prompt_of("twice", 1)] == 1
    assert list(video_gets(world.fake).values()) == [1]


# -- the worker's client -----------------------------------------------------------------------


async def test_one_client_per_worker_made_at_startup_closed_at_shutdown(
    redis_url: str, tmp_path: Path
) -> None:
    """No client before the worker starts (none at import time); one at startup, reachable
    by your own tasks (``tasks.client`` or the ``prism_client`` dependency); closed, with its
    ledger and lease connection, at shutdown."""
    broker = InMemoryBroker()
    tasks = PrismTasks(broker, ledger_url=redis_url, api_key="prism_sk_test_0123456789")

    @broker.task
    async def mine(prism: Annotated[PrismClient, TaskiqDepends(prism_client)]) -> bool:
        return prism is tasks.client

    with pytest.raises(RuntimeError, match="not started"):
        _ = tasks.client
    await broker.startup()
    client = tasks.client
    assert broker.state.prism is client
    assert not client.closed
    no_arguments: Any = mine  # its one parameter is a dependency: kicked with none
    result = await (await no_arguments.kiq()).wait_result(timeout=10)
    assert result.return_value is True
    await broker.shutdown()
    assert client.closed
    with pytest.raises(RuntimeError):
        _ = tasks.client


def test_settings_that_would_run_live_jobs_twice_are_refused(redis_url: str) -> None:
    """Heartbeats off and an ``idle_timeout`` shorter than a wait: refused at once; so is a
    ledger given twice. The tasks carry ``ack_type=when_executed``."""
    from prism_async import InvalidRequestError

    unsafe = PrismStreamBroker(redis_url, idle_timeout=60_000, heartbeat_interval=0)
    with pytest.raises(InvalidRequestError, match="twice"):
        PrismTasks(unsafe, ledger_url=redis_url)
    with pytest.raises(InvalidRequestError):
        PrismTasks(InMemoryBroker(), ledger_url=redis_url, ledger=object())
    broker = InMemoryBroker()
    tasks = PrismTasks(broker, ledger_url=redis_url)
    assert tasks.download.labels["ack_type"] == "when_executed"
    assert broker.find_task(DOWNLOAD_TASK) is tasks.download
