"""FakePrismServer's catalog, spoken to in raw HTTP: characters and asset search.

These tests never use the SDK client: they send what the documented API (prism-api.md) receives
and check what it answers, so that tests written against the fake prove something about the real
API. Every server runs with ``generation_seconds=100`` so that only :meth:`advance` moves a
generation along, never real time. The account's own generations (``source=history``) are
tested in tests/test_fake_history.py.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import aiohttp
import pytest

from prism_async.testing import FakePrismServer
from tests.fake_http import ASSET_KEYS, PNG, SECONDS, assert_error, call, create, create_one

CHARACTER_KEYS = {"id", "name", "description", "created_at"}


def is_ms(value: Any) -> bool:
    """Whether ``value`` is a plausible Unix timestamp in milliseconds (an int, not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 10**12


# -- characters --------------------------------------------------------------------------------


def assert_character(status: int, payload: Any, name: str, description: str | None) -> None:
    """201 with ``{"data": {id (UUID), name, description, created_at (int ms)}}``."""
    assert status == 201, payload
    assert set(payload) == {"data"}
    character = payload["data"]
    assert set(character) == CHARACTER_KEYS
    assert str(uuid.UUID(character["id"])) == character["id"]
    assert character["name"] == name
    assert character["description"] == description
    assert is_ms(character["created_at"])
    assert abs(character["created_at"] - time.time() * 1000) < 60_000


async def test_create_character_from_urls(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A JSON body with image URLs creates a character (201, wrapped in ``data``)."""
    status, payload = await call(
        http,
        "POST",
        f"{server.base_url}/characters",
        json={
            "name": "Ava",
            "description": "Friendly presenter",
            "images": ["https://example.com/a.png", "http://example.com/b.jpg"],
        },
    )
    assert_character(status, payload, "Ava", "Friendly presenter")
    status, payload = await call(
        http,
        "POST",
        f"{server.base_url}/characters",
        json={"name": "N" * 60, "images": [f"https://example.com/{i}.png" for i in range(10)]},
    )
    assert_character(status, payload, "N" * 60, None)


@pytest.mark.parametrize("field_name", ["images", "images[]"])
async def test_create_character_from_files(
    server: FakePrismServer, http: aiohttp.ClientSession, field_name: str
) -> None:
    """A multipart body with image files and name/description fields creates a character."""
    form = aiohttp.FormData()
    form.add_field("name", "Bo")
    form.add_field("description", "Uploaded")
    for n in range(2):
        form.add_field(field_name, PNG, filename=f"bo{n}.png", content_type="image/png")
    status, payload = await call(http, "POST", f"{server.base_url}/characters", data=form)
    assert_character(status, payload, "Bo", "Uploaded")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "N" * 61, "images": ["https://example.com/a.png"]},
        {"name": "", "images": ["https://example.com/a.png"]},
        {"images": ["https://example.com/a.png"]},
        {"name": "Ava", "images": []},
        {"name": "Ava", "images": [f"https://example.com/{i}.png" for i in range(11)]},
        {"name": "Ava", "images": ["ftp://example.com/a.png"]},
        {"name": "Ava", "images": ["users/u/user-uploads/a.png"]},
        {"name": "Ava", "images": "https://example.com/a.png"},
        {"name": "Ava"},
        {"name": "Ava", "description": "d" * 301, "images": ["https://example.com/a.png"]},
    ],
    ids=[
        "name-61",
        "name-empty",
        "name-missing",
        "no-images",
        "11-images",
        "ftp-url",
        "s3-key",
        "images-not-list",
        "images-missing",
        "description-301",
    ],
)
async def test_create_character_json_validation(
    server: FakePrismServer, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    """Names outside 1-60 chars, 0 or 11 images, non-URL images, long descriptions answer 400."""
    status, payload = await call(http, "POST", f"{server.base_url}/characters", json=body)
    assert_error(status, payload, 400, "validation_error")
    assert server.characters == []


@pytest.mark.parametrize(
    ("name", "files"),
    [("Ava", 0), ("Ava", 11), ("N" * 61, 1), (None, 1)],
    ids=["no-files", "11-files", "name-61", "name-missing"],
)
async def test_create_character_multipart_validation(
    server: FakePrismServer, http: aiohttp.ClientSession, name: str | None, files: int
) -> None:
    """Multipart bodies follow the same rules: 1-10 files and a 1-60 character name."""
    form = aiohttp.FormData()
    if name is not None:
        form.add_field("name", name)
    for n in range(files):
        form.add_field("images", PNG, filename=f"{n}.png", content_type="image/png")
    if files == 0:
        form.add_field("description", "no files at all")
    status, payload = await call(http, "POST", f"{server.base_url}/characters", data=form)
    assert_error(status, payload, 400, "validation_error")
    assert server.characters == []


async def test_list_characters(server: FakePrismServer, http: aiohttp.ClientSession) -> None:
    """The character list pages with limit 24 by default and filters by ``q``."""
    url = f"{server.base_url}/characters"
    for name, description in [("Ava", "presenter"), ("Bo", "chef"), ("Cy", "surfer presenter")]:
        body = {"name": name, "description": description, "images": ["https://e.com/a.png"]}
        assert (await call(http, "POST", url, json=body))[0] == 201

    status, payload = await call(http, "GET", url)
    assert status == 200
    assert set(payload) == {"data", "pagination"}
    assert payload["pagination"] == {"offset": 0, "limit": 24, "has_more": False}
    assert len(payload["data"]) == 3
    for character in payload["data"]:
        assert set(character) == CHARACTER_KEYS
        assert is_ms(character["created_at"])
    assert {c["name"] for c in payload["data"]} == {"Ava", "Bo", "Cy"}

    _, first = await call(http, "GET", url, params={"limit": 2})
    assert len(first["data"]) == 2
    assert first["pagination"] == {"offset": 0, "limit": 2, "has_more": True}
    _, second = await call(http, "GET", url, params={"limit": 2, "offset": 2})
    assert len(second["data"]) == 1
    assert second["pagination"]["has_more"] is False
    assert {c["id"] for c in first["data"] + second["data"]} == {c["id"] for c in payload["data"]}

    _, found = await call(http, "GET", url, params={"q": "presenter"})
    assert {c["name"] for c in found["data"]} == {"Ava", "Cy"}
    assert (await call(http, "GET", url, params={"limit": 60}))[0] == 200
    for params in ({"q": "a"}, {"limit": "61"}, {"limit": "0"}, {"offset": "-2"}):
        status, error = await call(http, "GET", url, params=params)
        assert_error(status, error, 400, "validation_error")


# -- assets ------------------------------------------------------------------------------------


async def search(
    http: aiohttp.ClientSession, server: FakePrismServer, **params: Any
) -> tuple[int, Any]:
    """GET /api/assets/search with ``params``."""
    return await call(http, "GET", f"{server.base_url}/assets/search", params=params)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "a"},
        {"q": "cat", "type": "audio"},
        {"q": "cat", "source": "mine"},
        {"q": "cat", "limit": "61"},
        {"q": "cat", "limit": "0"},
        {"q": "cat", "offset": "-1"},
    ],
    ids=repr,
)
async def test_asset_search_validation(
    server: FakePrismServer, http: aiohttp.ClientSession, params: dict[str, str]
) -> None:
    """``q`` is required (at least 2 chars); type, source and limit are validated (400)."""
    status, payload = await search(http, server, **params)
    assert_error(status, payload, 400, "validation_error")


async def test_asset_search_items_and_pagination(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Items carry every documented field with ms timestamps; pages default to 24, max 60."""
    status, payload = await search(http, server, q="take")
    assert status == 200
    assert set(payload) == {"data", "pagination"}
    assert payload["pagination"]["limit"] == 24
    assert len(payload["data"]) == 24
    for item in payload["data"]:
        assert set(item) == ASSET_KEYS
        assert is_ms(item["published_at"])
        assert is_ms(item["created_at"])
        assert item["asset_type"] in ("image", "video")
        assert item["source"] == "community"
        assert isinstance(item["metadata"], dict)
        assert "take" in item["prompt"].lower()
    status, most = await search(http, server, q="take", limit=60)
    assert status == 200
    assert most["pagination"] == {"offset": 0, "limit": 60, "has_more": False}
    _, page = await search(http, server, q="take", limit=10, offset=20)
    assert page["pagination"] == {"offset": 20, "limit": 10, "has_more": False}
    assert page["data"] == most["data"][20:30]
    _, first = await search(http, server, q="take", limit=10)
    assert first["pagination"]["has_more"] is True


async def test_asset_search_filters(server: FakePrismServer, http: aiohttp.ClientSession) -> None:
    """``q`` matches prompts, ``type`` filters images/videos, ``source`` community/history."""
    _, everything = await search(http, server, q="cat")
    assert everything["data"]
    assert all("cat" in a["prompt"].lower() for a in everything["data"])
    _, videos = await search(http, server, q="cat", type="video")
    _, images = await search(http, server, q="cat", type="image")
    assert videos["data"]
    assert images["data"]
    assert all(a["asset_type"] == "video" for a in videos["data"])
    assert all(a["asset_type"] == "image" for a in images["data"])
    assert len(videos["data"]) + len(images["data"]) == len(everything["data"])
    _, explicit = await search(http, server, q="cat", type="all", source="all")
    assert explicit["data"] == everything["data"]
    _, community = await search(http, server, q="cat", source="community")
    assert community["data"] == everything["data"]
    _, history = await search(http, server, q="cat", source="history")
    assert history["data"] == []
    _, none = await search(http, server, q="no such subject")
    assert none["data"] == []


# -- asset keys as generation inputs -----------------------------------------------------------


async def test_seeded_asset_key_is_accepted(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A community asset's ``asset_s3_key`` from assets search is a valid key input."""
    status, page = await call(
        http, "GET", f"{server.base_url}/assets/search", params={"q": "sneaker", "type": "image"}
    )
    assert status == 200
    key = page["data"][0]["asset_s3_key"]
    status, payload = await create(http, server, startFrameKey=key, ingredientImageKeys=[key])
    assert status == 200, payload


async def test_history_asset_key_is_accepted(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A ``history`` asset's ``asset_s3_key`` is also a valid key input, as prism-api.md says."""
    await create_one(http, server, prompt="A glowing jellyfish in the deep sea")
    server.advance(SECONDS)
    status, page = await call(
        http,
        "GET",
        f"{server.base_url}/assets/search",
        params={"q": "jellyfish", "source": "history"},
    )
    assert status == 200
    key = page["data"][0]["asset_s3_key"]
    status, payload = await create(http, server, sourceVideoKey=key, referenceVideoKeys=[key])
    assert status == 200, payload
