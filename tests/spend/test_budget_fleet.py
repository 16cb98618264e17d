"""Budgets no fleet can pass: real ``taskiq worker`` processes on a real Redis race one budget.

4 workers of ``tests.taskiq_fleet_app`` (their clients spending from the budget ``race``,
``FLEET_BUDGET``) run 200 submit jobs (200 keys) against 2,000 credits at a stable price (120 a
video): the fake charges at most 2,000, exactly 16 are accepted, and every other job met
BudgetExceededError (the task ends ``refused``) without a POST. Then the same with a worker
killed (``kill -9``) while it holds reservations for POSTs in flight (answered 1 s late by the
fake, which charged them on arrival): the cap still holds; its keys are reconciled (by the
fleet's tracker, here in this process, and by their redelivered jobs) and its reservations
settled, so the budget ends with nothing reserved and exactly what the fake charged spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from taskiq.kicker import AsyncKicker

from prism_async import GenerationRequest, PrismClient
from prism_async.integrations.taskiq import (
    SUBMIT_TASK,
    TASK_LABELS,
    PrismStreamBroker,
    Tracker,
)
from prism_async.ledger import Budget, RedisLedger, SubmissionState
from prism_async.ledger._model import Owner
from prism_async.ledger._prices import shape_of
from prism_async.testing import MODEL_PRICES, FakePrismServer
from tests.conftest import NO_WAIT
from tests.taskiq_helpers import FAST, eventually, posts_by_prompt, prompt_of, unique
from tests.test_taskiq_fleet import Fleet, _count, logs

__all__ = ["logs"]

pytestmark = [pytest.mark.processes, pytest.mark.redis]

MODEL = "veo-3.1"
PRICE = MODEL_PRICES[MODEL]
CAP = 2_000
START = 1_000_000
WORKERS = 4
JOBS = 200
WINDOW = "3"  # the workers' reconcile window: a key killed before its POST is sent again soon
SHAPE = shape_of(GenerationRequest(prompt="x", model_name=MODEL)).key
REFUSED = ("refused", None)  # the submit task: its budget could not hold the price, unsent

KEYS = [f"race/{i:03d}" for i in range(JOBS)]
PROMPTS = {prompt_of("race", i): key for i, key in enumerate(KEYS)}


@contextlib.asynccontextmanager
async def started(redis_url: str, logs: Path) -> AsyncIterator[Fleet]:
    """4 workers spending from the budget ``race`` (2,000 credits), and the fake; the workers'
    output is printed if the test fails."""
    prefix = f"{unique('budget')}:"
    async with (
        FakePrismServer(credits=START, generation_seconds=0.2) as fake,
        Redis.from_url(redis_url, decode_responses=True) as redis,
    ):
        env = {
            **os.environ,
            "FLEET_REDIS": redis_url,
            "FLEET_QUEUE": unique("budget-queue"),
            "FLEET_PREFIX": prefix,
            "FLEET_BUDGET": "race",
            "FLEET_RECONCILE_WINDOW": WINDOW,
            "PRISM_API_KEY": fake.api_key,
            "PRISM_BASE_URL": fake.base_url,
        }
        ledger = RedisLedger(redis_url, prefix=prefix, reconcile_window=float(WINDOW))
        running = Fleet(fake, redis, ledger, prefix, env, logs)
        try:
            await ledger.set_budget("race", CAP)
            for index in range(WORKERS):
                running.spawn(f"worker-{index}", [
                    sys.executable, "-m", "taskiq", "worker", "tests.taskiq_fleet_app:broker",
                    "--workers", "1", "--max-async-tasks", "20", "--ack-type", "when_executed",
                    "--shutdown-timeout", "1", "--wait-tasks-timeout", "1",
                ])  # fmt: skip
            await eventually(
                lambda: _count(running, WORKERS), timeout=30, what="the workers to start"
            )
            yield running
        except BaseException:
            print(running.output())
            raise
        finally:
            kill(running)
            await ledger.aclose()


def kill(fleet: Fleet) -> None:
    """SIGKILL the fleet's process groups at once (its own only): nothing to shut down
    gracefully, and a graceful stop costs a second a worker."""
    for process in fleet.processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    for process in fleet.processes:
        process.wait(5)


async def kick_all(fleet: Fleet) -> None:
    """The 200 submit jobs, one key each (distinct prompts: reconciliation tells them apart)."""
    client = PrismStreamBroker(fleet.env["FLEET_REDIS"], queue_name=fleet.env["FLEET_QUEUE"])
    await client.startup()
    try:
        submit: AsyncKicker[Any, Any] = AsyncKicker(SUBMIT_TASK, client, dict(TASK_LABELS))
        for prompt, key in PROMPTS.items():
            await submit.kiq(key, {"prompt": prompt, "model_name": MODEL})
    finally:
        await client.shutdown()


async def outcomes(fleet: Fleet) -> dict[str, tuple[str | None, str | None]]:
    """How each key's job ended last: (its ``state``, or the type of the error it raised)."""
    entries = cast(list[str], await fleet.redis.lrange(f"{fleet.prefix}ended", 0, -1))
    ended = {}
    for entry in map(json.loads, entries):
        ended[entry["args"][0]] = (entry["state"], entry["error"])
    return ended


async def all_ended(fleet: Fleet) -> None:
    async def done() -> bool:
        return len(await outcomes(fleet)) == JOBS

    await eventually(done, timeout=40, what="every job to end", every=0.2)


def charged(fake: FakePrismServer) -> int:
    return START - fake.credits


async def budget(fleet: Fleet) -> Budget:
    found = await fleet.ledger.budget("race")
    assert found is not None
    return found


def posted(fake: FakePrismServer) -> Counter[str]:
    """How many POSTs each key sent."""
    return Counter({PROMPTS[prompt]: n for prompt, n in posts_by_prompt(fake).items()})


async def test_four_workers_never_pass_the_budget(redis_url: str, logs: Path) -> None:
    async with started(redis_url, logs) as fleet:
        await _race(fleet)


async def _race(fleet: Fleet) -> None:
    await kick_all(fleet)
    await all_ended(fleet)
    ended = await outcomes(fleet)
    tally = Counter(ended.values())
    assert set(tally) <= {("accepted", None), REFUSED}, tally
    accepted = [key for key, outcome in ended.items() if outcome == ("accepted", None)]
    assert len(accepted) == CAP // PRICE  # a stable price: the budget is used to the last video
    assert charged(fleet.fake) == len(accepted) * PRICE <= CAP
    # Every refusal was made before sending: one POST per accepted key, none for the others.
    assert posted(fleet.fake) == Counter(accepted)
    refused = [key for key, outcome in ended.items() if outcome == REFUSED]
    assert await fleet.ledger.get_many(refused) == {}  # no key row either
    found = await budget(fleet)
    assert (found.spent, found.reserved) == (charged(fleet.fake), 0)


async def test_a_killed_worker_holding_reservations_never_lets_the_budget_pass(
    redis_url: str, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with started(redis_url, logs) as fleet:
        await _race_with_a_kill(fleet, monkeypatch)


async def _race_with_a_kill(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fleet.fake
    fake.inject("POST", "/api/generations", processed=True, delay=1.0, times=1000)
    await kick_all(fleet)
    victim, held = await holder_of_posts_in_flight(fleet)
    os.kill(victim, signal.SIGKILL)

    # The fleet's tracker (in this process) reconciles the dead worker's keys and settles the
    # budget's reservations on its cadence; their jobs come back to the other workers too.
    ledger = RedisLedger(
        fleet.env["FLEET_REDIS"], prefix=fleet.prefix, reconcile_window=float(WINDOW)
    )
    sweeps: list[int] = []
    settle = ledger.settle_reservations

    async def counted() -> int:
        sweeps.append(await settle())
        return sweeps[-1]

    monkeypatch.setattr(ledger, "settle_reservations", counted)
    async with PrismClient(
        fake.api_key, base_url=fake.base_url, retry=NO_WAIT, poll=FAST, ledger=ledger
    ) as prism:

        async def enqueue(generation_id: str) -> None:
            pass

        tracker = Tracker(prism, enqueue, scan_interval=0.5, reconcile_interval=0.3)
        tracking = asyncio.create_task(tracker.run())
        try:
            await all_ended(fleet)
            assert charged(fake) <= CAP

            async def settled() -> bool:
                found = await budget(fleet)
                return found.reserved == 0 and found.spent == charged(fake)

            await eventually(settled, timeout=10, what="the reservations to be settled")
        finally:
            tracking.cancel()
            stopped, _ = await asyncio.wait({tracking}, timeout=10)
            assert stopped, "the tracker went on after its cancellation"
    assert sweeps  # the tracker swept the reservations on its reconcile cadence
    assert tracker.stats.settled == sum(sweeps)

    ended = await outcomes(fleet)
    allowed = {("accepted", None), ("reconciled", None), REFUSED}
    assert set(ended.values()) <= allowed, Counter(ended.values())
    # The victim's POSTs in flight were charged: their keys were settled from the history.
    assert {ended[key] for key in held} == {("reconciled", None)}
    # At most one POST per key, each charged once; every refused key sent none.
    posts = posted(fake)
    assert max(posts.values()) == 1
    assert charged(fake) == sum(posts.values()) * PRICE <= CAP
    paid = {key for key, outcome in ended.items() if outcome != REFUSED}
    assert set(posts) == paid
    found = await budget(fleet)
    assert (found.spent, found.reserved) == (charged(fake), 0)
    assert [r async for r in fleet.ledger.reservations()] == []


async def holder_of_posts_in_flight(fleet: Fleet) -> tuple[int, list[str]]:
    """Once the price is learnt: a live worker holding reservations for keys whose POSTs
    reached the fake and are not answered yet (their rows still ``sending``), and those keys."""
    found: list[tuple[int, list[str]]] = []

    async def holding() -> bool:
        if await fleet.ledger.price(SHAPE) is None:
            return False
        sent = {PROMPTS[str(r.json["prompt"])] for r in fleet.fake.requests_to("POST", "/api/*")}
        workers = await fleet.workers()
        keys: dict[int, list[str]] = {}
        async for held in fleet.ledger.reservations():
            owner = Owner.parse(held.owner or "")
            if owner is not None and owner.pid in workers and held.id in sent:
                keys.setdefault(owner.pid, []).append(held.id)
        for pid, ids in keys.items():
            rows = await fleet.ledger.get_many(ids)
            in_flight = [k for k, row in rows.items() if row.state == SubmissionState.SENDING]
            if in_flight:
                found.append((pid, in_flight))
                return True
        return False

    await eventually(holding, timeout=30, what="a worker with POSTs in flight", every=0.01)
    return found[0]
