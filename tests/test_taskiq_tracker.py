"""The tracker (``Tracker``, ``prism-async track``) on a Redis ledger and the fake API: it waits
on every accepted generation not yet downloaded, enqueues each completed one once, follows new
submissions as they come, bounds its waits, and resumes from its checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from redis.asyncio import Redis

from prism_async import PollPolicy, PrismClient, PrismError
from prism_async.integrations.taskiq import (
    DOWNLOAD_TASK,
    RedisCheckpoint,
    Tracker,
    TrackEvent,
)
from prism_async.ledger import Charge, GenerationRecord, Ledger, RedisLedger, Reservation
from prism_async.ledger._model import Owner
from prism_async.testing import FakePrismServer
from prism_async.webhooks import WebhookEvent, WebhookHub
from tests.conftest import NO_WAIT
from tests.ledger_helpers import ROOT
from tests.taskiq_helpers import FAST, MODEL, eventually, prompt_of, unique


@attrs.define
class World:
    fake: FakePrismServer
    prism: PrismClient
    prefix: str
    enqueued: list[str] = attrs.field(factory=list)
    events: list[TrackEvent] = attrs.field(factory=list)

    @property
    def ledger(self) -> Ledger:
        assert self.prism.ledger is not None
        return self.prism.ledger

    async def enqueue(self, generation_id: str) -> None:
        self.enqueued.append(generation_id)

    def tracker(self, **options: Any) -> Tracker:
        options.setdefault("scan_interval", 0.05)
        return Tracker(self.prism, self.enqueue, on_event=self.events.append, **options)

    async def submit(self, key: str, *, count: int = 1, fail: bool = False) -> list[str]:
        prompt = ("[fail] " if fail else "") + prompt_of(key, 0)
        batch = await self.prism.generations.create(
            key=key, prompt=prompt, model_name=MODEL, count=count
        )
        return batch.ids


@pytest.fixture
async def world(redis_url: str) -> AsyncIterator[World]:
    async with FakePrismServer(generation_seconds=0.3) as fake:
        prefix = f"{unique('track')}:"
        async with PrismClient(
            fake.api_key,
            base_url=fake.base_url,
            poll=FAST,
            retry=NO_WAIT,
            ledger=RedisLedger(redis_url, prefix=prefix),
        ) as prism:
            yield World(fake, prism, prefix)


def kinds(world: World, kind: str) -> list[str]:
    return [event.generation_id for event in world.events if event.kind == kind]


async def test_every_completed_generation_is_enqueued_once(world: World) -> None:
    """Accepted keys (one with two videos, one failing): each completed video is enqueued once,
    the failed one is not; the waits recorded the statuses in the ledger."""
    ok = await world.submit("a") + await world.submit("b", count=2)
    failing = await world.submit("c", fail=True)
    tracker = world.tracker()
    await asyncio.wait_for(tracker.run(until_idle=True), 20)
    assert sorted(world.enqueued) == sorted(ok)
    assert kinds(world, "failed") == failing
    assert (tracker.stats.tracked, tracker.stats.enqueued, tracker.stats.failed) == (4, 3, 1)
    for generation_id in ok:
        record = await world.ledger.generation(generation_id)
        assert record is not None
        assert record.status == "completed"


async def test_new_submissions_are_picked_up_while_it_runs(world: World) -> None:
    """Keys accepted after the tracker started (by other processes, say) are followed too;
    a row still ``sending`` is taken once it is accepted."""
    tracker = world.tracker()
    running = asyncio.create_task(tracker.run())
    try:
        first = await world.submit("early")
        await asyncio.sleep(0.2)
        later = await world.submit("late", count=2)

        async def all_enqueued() -> bool:
            return sorted(world.enqueued) == sorted(first + later)

        await eventually(all_enqueued, timeout=15, what="every video to be enqueued")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_what_the_ledger_knows_is_not_waited_for(world: World) -> None:
    """A downloaded or failed generation is skipped; a completed one not yet downloaded is
    enqueued at once, with no status request."""
    done, completed, failed = [(await world.submit(key))[0] for key in ("d", "c", "f")]
    await world.ledger.record(GenerationRecord(done, path="/v/d.mp4", size=1))
    await world.ledger.record(GenerationRecord(completed, status="completed"))
    await world.ledger.record(GenerationRecord(failed, status="failed"))
    await asyncio.wait_for(world.tracker().run(until_idle=True), 10)
    assert world.enqueued == [completed]
    assert world.fake.requests_to("GET", "/api/generations/*") == []


async def test_waits_are_bounded_by_max_pending(world: World) -> None:
    """With ``max_pending=2`` never more than two waits run; all eight videos get through."""
    ids = [generation_id for i in range(8) for generation_id in await world.submit(f"k{i}")]
    tracker = world.tracker(max_pending=2)
    most = 0

    def watch(event: TrackEvent) -> None:
        nonlocal most
        most = max(most, tracker.pending)
        world.events.append(event)

    tracker.on_event = watch
    await asyncio.wait_for(tracker.run(until_idle=True), 20)
    assert most <= 2
    assert sorted(world.enqueued) == sorted(ids)


async def test_a_restart_goes_on_from_the_checkpoint(world: World, redis_url: str) -> None:
    """A tracker that finished its rows saves its cursor: the next one reads only rows written
    since. One killed with waits pending resumes them."""
    async with Redis.from_url(redis_url, decode_responses=True) as redis:
        checkpoint = RedisCheckpoint(redis, f"{world.prefix}cursor")
        first = await world.submit("one")
        await asyncio.wait_for(world.tracker(checkpoint=checkpoint).run(until_idle=True), 10)
        assert world.enqueued == first

        world.fake.generation_seconds = 60.0  # the next one stays pending
        slow = await world.submit("two")
        interrupted = world.tracker(checkpoint=checkpoint)
        running = asyncio.create_task(interrupted.run())
        await eventually(
            lambda: _true(interrupted.pending == 1), timeout=5, what="the wait to start"
        )
        running.cancel()  # a crash with a wait pending
        await asyncio.gather(running, return_exceptions=True)

        world.fake.complete_generation(slow[0])
        resumed = world.tracker(checkpoint=checkpoint)
        await asyncio.wait_for(resumed.run(until_idle=True), 10)
        assert resumed.stats.rows == 1  # "two" again, not "one"
        assert world.enqueued == first + slow


async def _true(value: bool) -> bool:
    return value


async def test_a_failed_enqueue_is_sent_again(world: World) -> None:
    """The broker is down for a moment: the download is enqueued on a later pass."""
    ids = await world.submit("x")
    failures = [RuntimeError("broker down")]

    async def flaky(generation_id: str) -> None:
        if failures:
            raise failures.pop()
        world.enqueued.append(generation_id)

    tracker = Tracker(world.prism, flaky, scan_interval=0.05)
    await asyncio.wait_for(tracker.run(until_idle=True), 10)
    assert world.enqueued == ids


async def test_a_webhook_wakes_its_wait(redis_url: str) -> None:
    """With a hub on the client, a terminal webhook for a generation makes its wait confirm
    at once, long before its slow poll would."""
    async with FakePrismServer(generation_seconds=0.2) as fake:
        hub = WebhookHub()
        slow = PollPolicy(initial_delay=30, interval=30, max_interval=30, timeout=60)
        async with PrismClient(
            fake.api_key,
            base_url=fake.base_url,
            poll=slow,
            webhooks=hub,
            ledger=RedisLedger(redis_url, prefix=f"{unique('hook')}:"),
        ) as prism:
            world = World(fake, prism, "")
            (generation_id,) = await world.submit("hooked")
            tracker = world.tracker()
            running = asyncio.create_task(tracker.run(until_idle=True))
            await eventually(lambda: _true(tracker.pending == 1), timeout=5, what="a wait")
            await asyncio.sleep(0.3)  # the video is done; the wait sleeps for 30 s
            hub.dispatch(WebhookEvent(generation_id, "completed"))
            await asyncio.wait_for(running, 5)
            assert world.enqueued == [generation_id]
            await hub.aclose()


# -- the command ---------------------------------------------------------------------------------


async def test_track_command_enqueues_download_tasks_on_the_broker(
    world: World, redis_url: str, tmp_path: Path
) -> None:
    """``prism-async track --until-idle`` in a process of its own: one ``prism_async.download``
    message per completed video on the workers' stream, with the folder; a JSON line each; its
    checkpoint saved on the broker's Redis."""
    ids = await world.submit("cli", count=2)
    queue = unique("queue")
    env = {
        **os.environ,
        "PRISM_API_KEY": world.fake.api_key,
        "PRISM_BASE_URL": world.fake.base_url,
    }
    command = [
        sys.executable, "-m", "prism_async", "--json", "track",
        "--ledger", redis_url, "--ledger-prefix", world.prefix,
        "--broker", redis_url, "--queue", queue, "--download", str(tmp_path),
        "--poll-interval", "0.1", "--scan-interval", "0.1", "--until-idle",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert sorted(line["generation_id"] for line in lines if line["event"] == "enqueued") == (
        sorted(ids)
    )
    assert lines[-1]["event"] == "stopped"
    async with Redis.from_url(redis_url, decode_responses=True) as redis:
        messages = cast(list[tuple[str, dict[str, str]]], await redis.xrange(queue))
        checkpoint = await redis.get(f"{queue}:tracker:{world.prefix}")  # for a restart
    assert checkpoint is not None
    assert int(checkpoint) > 0
    sent = [json.loads(fields["data"]) for _, fields in messages]
    assert sorted(m["args"][0] for m in sent) == sorted(ids)
    assert {m["task_name"] for m in sent} == {DOWNLOAD_TASK}
    assert {m["args"][1] for m in sent} == {str(tmp_path)}
    assert {m["labels"]["ack_type"] for m in sent} == {"when_executed"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--ledger", "redis://127.0.0.1:1/0"], "--broker"),
        (["--broker", "redis://127.0.0.1:1/0"], "--ledger"),
        (["--broker", "redis://x", "--ledger", "/no/such/ledger.db"], "no ledger"),
        (["--broker", "redis://x", "--ledger", "redis://x", "--max-pending", "0"], "max-pending"),
    ],
)
def test_track_refuses_bad_usage(
    arguments: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Missing or bad options are exit 2, before anything is opened."""
    from prism_async.cli import EXIT_USAGE, main

    monkeypatch.setenv("PRISM_API_KEY", "prism_sk_test_0123456789")
    monkeypatch.delenv("PRISM_LEDGER", raising=False)
    monkeypatch.delenv("PRISM_BROKER", raising=False)
    assert main(["track", *arguments]) == EXIT_USAGE
    assert message in capsys.readouterr().err


async def test_the_tracker_reconciles_ambiguous_keys_itself(world: World) -> None:
    """Keys whose answers were lost (two of one request, one alone) are settled by the tracker
    from the history on its own cadence, then followed and enqueued: no person needed."""
    assert world.prism.ledger is not None
    world.fake.history_completed_only = True
    lost: list[str] = []
    for key, tag in (("twin-1", "twin"), ("twin-2", "twin"), ("alone", "alone")):
        world.fake.inject("POST", "/api/generations", status=502, processed=True)
        with pytest.raises(PrismError):
            await world.prism.generations.create(
                key=key, prompt=prompt_of(tag, 0), model_name=MODEL
            )
        lost.append(key)
    assert {(await world.ledger.get(k)).state for k in lost} == {"ambiguous"}  # type: ignore[union-attr]
    tracker = world.tracker(reconcile_interval=0.1)
    running = asyncio.create_task(tracker.run())
    try:

        async def delivered() -> bool:
            return sorted(world.enqueued) == sorted(world.fake.generations)

        await eventually(delivered, timeout=15, what="every lost video to be enqueued")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    rows = await world.ledger.get_many(lost)
    assert {row.state for row in rows.values()} == {"reconciled"}
    assert sorted(i for row in rows.values() for i in row.generation_ids) == sorted(
        world.fake.generations
    )
    assert len(world.fake.requests_to("POST", "/api/generations")) == 3
    assert tracker.stats.reconciled >= 2  # the twins settle together
    assert {e.key for e in world.events if e.kind == "reconciled"} <= set(lost)


async def test_the_tracker_settles_budget_reservations(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On its reconcile cadence the tracker settles the budget's reservations: one whose process
    died before its key's row was written is released (nothing was sent), one of a live process
    is kept. A ledger that keeps no money, or fails to settle, does not stop it."""
    ledger, now = world.ledger, datetime.now(UTC)
    await ledger.set_budget("b", 1000)
    gone = Owner(socket.gethostname(), 2**22 + 1, "?")  # above any pid_max: no such process
    for key, owner in (("dead/1", gone), ("live/1", Owner.me())):
        charge = Charge(key, now, 120.0, "generation", MODEL, "shape", 1, {}, "b")
        reservation = Reservation(key, "b", 120.0, now, charge, owner=str(owner))
        assert (await ledger.reserve(reservation, now))[0] == "reserved"
    tracker = world.tracker(reconcile_interval=0.1)
    await asyncio.wait_for(tracker.run(until_idle=True), 10)
    assert tracker.stats.settled == 1
    assert [r.id async for r in ledger.reservations()] == ["live/1"]
    assert (await ledger.budget("b")).reserved == 120  # type: ignore[union-attr]

    async def keeps_none() -> int:
        raise NotImplementedError

    async def fails() -> int:
        raise RuntimeError("boom")

    for broken in (keeps_none, fails):
        monkeypatch.setattr(ledger, "settle_reservations", broken)
        await asyncio.wait_for(world.tracker(reconcile_interval=0.1).run(until_idle=True), 10)
    assert "could not settle the budget reservations: boom" in caplog.text


async def test_a_cancellation_swallowed_on_the_way_still_stops_the_tracker(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's ``wait_for`` (inside redis-py) can swallow a cancellation: the tracker
    still stops, as the task says it was cancelled."""
    inside = asyncio.Event()

    async def swallowing() -> int:
        if not inside.is_set():  # once
            inside.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)
        return 0

    monkeypatch.setattr(world.ledger, "settle_reservations", swallowing)
    running = asyncio.create_task(world.tracker(reconcile_interval=0.1).run())
    await asyncio.wait_for(inside.wait(), 5)
    running.cancel()
    try:
        done, _ = await asyncio.wait({running}, timeout=5)
        assert done, "the tracker went on after its cancellation"
        assert running.cancelled()
    finally:
        while not running.done():  # (it failed: the next cancellation is not swallowed)
            running.cancel()
            await asyncio.wait({running}, timeout=0.5)
