"""A 402 seen by one client pauses the paid POSTs of every client sharing its ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from prism_async import InsufficientCreditsError, PrismClient
from prism_async.ledger import SQLiteLedger
from prism_async.testing import FakePrismServer
from tests.conftest import NO_WAIT


@pytest.fixture
async def fake() -> AsyncIterator[FakePrismServer]:
    async with FakePrismServer() as server:
        yield server


def client(fake: FakePrismServer, db: Path, pause: float) -> PrismClient:
    # Each client has its own ledger object (its own connection): as another process would.
    return PrismClient(
        fake.api_key,
        base_url=fake.base_url,
        retry=NO_WAIT,
        ledger=SQLiteLedger(db),
        pause_on_402=pause,
    )


def posts(fake: FakePrismServer) -> int:
    return len(fake.requests_to("POST", "/api/*"))


async def test_a_402_pauses_every_client_then_one_probe_goes_through(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    async with client(fake, db, pause=0.5) as first, client(fake, db, pause=60) as second:
        fake.credits = 0
        with pytest.raises(InsufficientCreditsError) as seen:
            await first.generations.create(prompt="no money", model_name="veo-3.1")
        assert seen.value.paused_until is None  # the API's own 402
        assert posts(fake) == 1
        fake.credits = 10_000  # topped up: the pause still holds until it ends
        for prism in (second, first):
            with pytest.raises(InsufficientCreditsError) as paused:
                await prism.generations.create(prompt="paused", model_name="veo-3.1")
            assert paused.value.paused_until is not None
            assert not paused.value.maybe_sent
        templates = second.templates.generate("abc123", variables={"hook": "h", "benefit": "b"})
        with pytest.raises(InsufficientCreditsError):
            await templates
        assert posts(fake) == 1  # none of them was sent
        await asyncio.sleep(0.6)  # the pause was the first client's: 0.5 s
        fake.inject("POST", "/api/generations", delay=0.3)
        probe = asyncio.create_task(second.generations.create(prompt="probe", model_name="veo-3.1"))
        await asyncio.sleep(0.1)
        with pytest.raises(InsufficientCreditsError):  # only one probe while it is in flight
            await first.generations.create(prompt="not yet", model_name="veo-3.1")
        await probe
        await first.generations.create(prompt="open again", model_name="veo-3.1")
        assert posts(fake) == 3


async def test_a_402_to_the_probe_pauses_again(fake: FakePrismServer, tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    async with client(fake, db, pause=0.2) as prism:
        fake.credits = 0
        for _ in range(2):
            with pytest.raises(InsufficientCreditsError):
                await prism.generations.create(prompt="no money", model_name="veo-3.1")
        assert posts(fake) == 1
        await asyncio.sleep(0.3)
        with pytest.raises(InsufficientCreditsError) as probe:  # the probe: sent, and refused
            await prism.generations.create(prompt="probe", model_name="veo-3.1")
        assert probe.value.paused_until is None
        assert posts(fake) == 2
        with pytest.raises(InsufficientCreditsError) as paused:
            await prism.generations.create(prompt="paused again", model_name="veo-3.1")
        assert paused.value.paused_until is not None
        assert posts(fake) == 2
