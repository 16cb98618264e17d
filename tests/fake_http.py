"""Raw-HTTP helpers for the tests of FakePrismServer itself (tests/test_fake_*.py).

Those tests never use the SDK client: they send what the documented API (prism-api.md) receives
and check what it answers. These helpers only send requests and check the documented error body;
every other check stays in the tests.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from prism_async.testing import FakePrismServer
from tests.conftest import GENERATION_SECONDS

SECONDS = GENERATION_SECONDS
"""How long a generation runs on the ``server`` fixture's clock: only ``advance`` moves it."""
MB = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


async def call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    """Send one request; return its status and its JSON body (None when empty, text if not JSON)."""
    async with session.request(method, url, **kwargs) as response:
        text = await response.text()
    if not text:
        return response.status, None
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    """The documented flat error body: exactly ``error`` and a non-empty ``message``."""
    assert status == expected_status, body
    assert isinstance(body, dict)
    assert set(body) == {"error", "message"}
    assert body["error"] == code
    assert isinstance(body["message"], str)
    assert body["message"]


async def create(
    http: aiohttp.ClientSession, server: FakePrismServer, **body: Any
) -> tuple[int, Any]:
    """POST /api/generations with ``body`` (camelCase), defaulting prompt and modelName."""
    body.setdefault("prompt", "A surfing cat at golden hour")
    body.setdefault("modelName", "veo-3.1")
    return await call(http, "POST", f"{server.base_url}/generations", json=body)


async def create_one(http: aiohttp.ClientSession, server: FakePrismServer, **body: Any) -> str:
    """Create one generation and return its id."""
    status, payload = await create(http, server, **body)
    assert status == 200, payload
    return str(payload["data"]["generations"][0]["id"])


async def get_generation(
    http: aiohttp.ClientSession, server: FakePrismServer, generation_id: str
) -> dict[str, Any]:
    """GET /api/generations/:id, which must answer 200."""
    status, payload = await call(http, "GET", f"{server.base_url}/generations/{generation_id}")
    assert status == 200, payload
    return dict(payload)


async def template_generate(
    http: aiohttp.ClientSession, server: FakePrismServer, template_id: str, body: Any
) -> tuple[int, Any]:
    """POST /api/templates/:id/generate with ``body`` (snake_case)."""
    url = f"{server.base_url}/templates/{template_id}/generate"
    return await call(http, "POST", url, json=body)


async def presign(
    http: aiohttp.ClientSession, server: FakePrismServer, content_type: str = "image/png"
) -> dict[str, Any]:
    """POST /api/s3/presign-upload for an ``upload`` of ``content_type``."""
    body = {"kind": "upload", "contentType": content_type, "fileName": "product.png"}
    status, payload = await call(http, "POST", f"{server.base_url}/s3/presign-upload", json=body)
    assert status == 200, payload
    return dict(payload)


ASSET_KEYS = {  # every field of an asset search item (prism-api.md)
    "id",
    "asset_id",
    "asset_s3_key",
    "asset_url",
    "asset_type",
    "prompt",
    "model_name",
    "published_at",
    "created_at",
    "metadata",
    "source",
}
