"""Budgets no fleet can pass: real processes race against one budget on a shared ledger.

8 processes on one SQLite file send 200 keyed submissions against a budget of 2,000 credits at a
stable price (120 a video): the fake charges at most 2,000, and every refused submission raised
BudgetExceededError without a POST. Then the same with a process killed (``kill -9``) while it
holds reservations for POSTs in flight: the cap still holds, and once its keys are reconciled
its reservations are settled.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from prism_async import GenerationRequest, PrismClient
from prism_async.ledger import Ledger, SQLiteLedger, SubmissionState
from prism_async.ledger._prices import shape_of
from prism_async.testing import MODEL_PRICES, FakePrismServer
from tests.conftest import NO_WAIT

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parents[2]
PRICE = MODEL_PRICES["veo-3.1"]
CAP = 2_000
START = 1_000_000
REQUEST = GenerationRequest(prompt="any", model_name="veo-3.1")  # the shape every child sends


@pytest.fixture
async def fake() -> AsyncIterator[FakePrismServer]:
    async with FakePrismServer(credits=START, generation_seconds=0.2) as server:
        yield server


async def start(
    fake: FakePrismServer, ledger: str, name: str, count: int
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.spend.budget_child",
        ledger,
        fake.base_url,
        fake.api_key,
        "race",
        name,
        str(count),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def outcomes(process: asyncio.subprocess.Process) -> list[dict[str, str]]:
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode in (0, -signal.SIGKILL), err.decode()
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def posts(fake: FakePrismServer) -> int:
    return len(fake.requests_to("POST", "/api/generations"))


async def race(fake: FakePrismServer, ledger: Ledger, url: str) -> None:
    await ledger.set_budget("race", CAP)
    processes = [await start(fake, url, f"p{n}", 25) for n in range(8)]
    results = [o for p in processes for o in await outcomes(p)]
    tally = Counter(o["outcome"] for o in results)
    assert set(tally) <= {"accepted", "refused"}, tally
    assert tally["accepted"] + tally["refused"] == 200
    charged = START - fake.credits
    assert charged <= CAP
    assert charged == tally["accepted"] * PRICE
    assert tally["accepted"] == CAP // PRICE  # a stable price: the budget is used to the last video
    assert posts(fake) == tally["accepted"]  # every refusal was made before sending
    budget = await ledger.budget("race")
    assert budget is not None
    assert (budget.spent, budget.reserved) == (charged, 0)


async def test_eight_sqlite_processes_never_pass_the_budget(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    async with SQLiteLedger(db) as ledger:
        await race(fake, ledger, str(db))


async def test_a_killed_process_holding_reservations_never_lets_the_budget_pass(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    async with SQLiteLedger(db) as ledger:
        await ledger.set_budget("race", CAP)
        fake.inject("POST", "/api/generations", delay=0.5, times=1000)
        victim = await start(fake, str(db), "victim", 8)
        others = [await start(fake, str(db), f"p{n}", 25) for n in range(3)]
        # Once the price is learnt (a probe of a process that died would keep the others
        # waiting for the request timeout, 60 s) and the victim's POSTs are in flight:
        async with asyncio.timeout(30):
            while await ledger.price(shape_of(REQUEST).key) is None or not any(
                r.json["prompt"].startswith("victim ") for r in fake.requests_to("POST", "/api/*")
            ):
                await asyncio.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        await outcomes(victim)
        results = [o for p in others for o in await outcomes(p)]
        assert {o["outcome"] for o in results} <= {"accepted", "refused"}
        await fake.drain_webhooks()
        await asyncio.sleep(0.3)  # the victim's POSTs that reached the fake were charged
        charged = START - fake.credits
        assert charged <= CAP
        # Its keys are reconciled from the history (or found never queued), which settles
        # their reservations: what the budget counts is then exactly what the fake charged.
        settle = SQLiteLedger(db, reconcile_window=1)
        async with PrismClient(
            fake.api_key, base_url=fake.base_url, retry=NO_WAIT, ledger=settle
        ) as prism:
            await asyncio.sleep(1.1)  # past the window: an unqueued key may be rejected
            async for row in settle.list():
                if row.state in (SubmissionState.SENDING, SubmissionState.AMBIGUOUS):
                    settled = await prism.reconcile(row.key)
                    assert settled.state in (SubmissionState.RECONCILED, SubmissionState.REJECTED)
            await settle.settle_reservations()
            budget = await settle.budget("race")
            assert budget is not None
            assert budget.reserved == 0
            assert budget.spent == START - fake.credits <= CAP
