"""Fixtures of the ledger tests: a ledger file, a client on the fake with it, a hook server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from prism_async import (
    PrismClient,
)
from prism_async.ledger import Ledger
from prism_async.testing import FakePrismServer
from prism_async.webhooks import WebhookHub
from tests.ledger.helpers import Serve, open_client
from tests.ledger_helpers import STORES, Store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
async def prism(server: FakePrismServer, db: Path) -> AsyncIterator[PrismClient]:
    async with open_client(server, db) as client:
        yield client


@pytest.fixture
async def hook_root(serve: Serve) -> tuple[str, list[WebhookHub]]:
    """A loopback app whose ``/hook/<n>`` routes to the n-th hub of the returned list."""
    hubs: list[WebhookHub] = []

    async def route(request: web.Request) -> web.StreamResponse:
        return await hubs[int(request.match_info["n"])].aiohttp_handler(request)

    app = web.Application()
    app.router.add_post("/hook/{n}", route)
    return await serve(app), hubs


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each backend."""
    return STORES[request.param](tmp_path, lambda: str(request.getfixturevalue("redis_url")))


@pytest.fixture
async def ledger(store: Store) -> AsyncIterator[Ledger]:
    """A ledger object on the store, closed after the test."""
    opened = store.open()
    try:
        yield opened
    finally:
        await opened.aclose()
