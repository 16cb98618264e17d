"""What the ledger tests share: constants, a client on the fake with a ledger, small steps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from prism_async import (
    GenerationBatch,
    InsufficientCreditsError,
    PollPolicy,
    PrismClient,
    PrismError,
)
from prism_async.ledger import Ledger, SQLiteLedger, Submission, SubmissionState
from prism_async.testing import FakePrismServer
from prism_async.webhooks import WebhookHub
from tests.conftest import NO_WAIT

S = SubmissionState
Serve = Callable[[web.Application], Awaitable[str]]
PROMPT = "A red fox trotting through fresh snow"
MODEL = "veo-3.1"
PRICE = 120  # veo-3.1 on the fake, per video
FAST = PollPolicy(initial_delay=0, interval=0.05, max_interval=0.05, jitter=0, timeout=10)
CREATE_PATH = "/api/generations"
TEMPLATE_PATH = "/api/templates/*/generate"
LEDGER_LOGGER = "prism_async.ledger"


def open_client(server: FakePrismServer, db: Path, **options: Any) -> PrismClient:
    """A client on the fake with a ledger of its own on ``db`` (a new ledger object)."""
    options.setdefault("retry", NO_WAIT)
    options.setdefault("poll", FAST)
    return PrismClient(server.api_key, base_url=server.base_url, ledger=SQLiteLedger(db), **options)


def ledger_of(prism: PrismClient) -> Ledger:
    assert prism.ledger is not None
    return prism.ledger


async def row(prism: PrismClient, key: str) -> Submission:
    found = await ledger_of(prism).get(key)
    assert found is not None, key
    return found


def posts(server: FakePrismServer, path: str = CREATE_PATH) -> int:
    return len(server.requests_to("POST", path))


async def create(prism: PrismClient, key: str | None, **options: Any) -> GenerationBatch:
    options.setdefault("prompt", PROMPT)
    options.setdefault("model_name", MODEL)
    return await prism.generations.create(key=key, **options)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds (polling every 10 ms)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def make_ambiguous(
    prism: PrismClient, server: FakePrismServer, key: str, **options: Any
) -> Submission:
    """Send ``key`` through a processed 502 (queued and charged, answer lost): ambiguous."""
    server.inject("POST", CREATE_PATH, status=502, processed=True)
    with pytest.raises(PrismError) as info:
        await create(prism, key, **options)
    assert info.value.maybe_sent
    found = await row(prism, key)
    assert found.state == S.AMBIGUOUS
    return found


async def make_rejected(prism: PrismClient, server: FakePrismServer, key: str) -> Submission:
    """Send ``key`` with no credits: a 402, nothing queued, ``rejected``; credits restored."""
    credits, server.credits = server.credits, 0
    with pytest.raises(InsufficientCreditsError):
        await create(prism, key)
    server.credits = credits
    assert prism.ledger is not None  # the 402 paused paid POSTs on the ledger: topped up, go on
    await prism.ledger.clear_paid_pause()
    found = await row(prism, key)
    assert found.state == S.REJECTED
    return found


def new_hub(hook_root: tuple[str, list[WebhookHub]]) -> tuple[WebhookHub, str]:
    root, hubs = hook_root
    hub = WebhookHub()
    hubs.append(hub)
    return hub, hub.url_for(f"{root}/hook/{len(hubs) - 1}")


async def keys_of(ledger: Ledger, state: str | None = None) -> list[str]:
    return [s.key async for s in ledger.list(state)]
