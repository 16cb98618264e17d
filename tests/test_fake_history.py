"""FakePrismServer's history search, spoken to in raw HTTP: the account's own generations.

``GET /api/assets/search?source=history`` is how the SDK reconciles an ambiguous submission
(design.md, "Durable submissions: the ledger"): each item's ``id`` is the generation id and
``created_at`` its creation time in Unix ms. By default every generation is listed whatever its
status; ``history_completed_only=True`` lists one only once it has completed. Every server runs
with ``generation_seconds=100`` so that only :meth:`advance` moves a generation along.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import aiohttp

from prism_async.testing import FakePrismServer
from tests.fake_http import (
    ASSET_KEYS,
    SECONDS,
    assert_error,
    call,
    create,
    create_one,
    get_generation,
    template_generate,
)


async def history(
    http: aiohttp.ClientSession, server: FakePrismServer, q: str, **params: Any
) -> list[dict[str, Any]]:
    """The items of one ``source=history`` search page (which must answer 200)."""
    params = {"q": q, "source": "history", **params}
    status, payload = await call(http, "GET", f"{server.base_url}/assets/search", params=params)
    assert status == 200, payload
    return list(payload["data"])


async def test_every_generation_is_a_history_asset_from_creation(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """A queued generation is listed at once (id = generation id, no URL until completed)."""
    status, created = await create(http, server, prompt="A glowing jellyfish", modelName="sora-2")
    assert status == 200, created
    queued = created["data"]["generations"][0]

    (item,) = await history(http, server, "jellyfish")
    assert set(item) == ASSET_KEYS
    assert item["id"] == queued["id"]
    assert item["id"].startswith("gen_")
    assert item["asset_id"] == queued["asset_id"]
    assert item["asset_s3_key"] == f"users/user_fake/generations/{queued['id']}.mp4"
    assert item["asset_url"] is None
    assert item["asset_type"] == "video"
    assert item["source"] == "history"
    assert item["prompt"] == "A glowing jellyfish"
    assert item["model_name"] == "sora-2"
    assert item["published_at"] is None
    assert item["metadata"] == {"status": "queued"}

    server.advance(SECONDS / 2)
    (generating,) = await history(http, server, "jellyfish")
    assert generating["metadata"] == {"status": "generating"}
    assert generating["asset_url"] is None

    server.advance(SECONDS)
    (completed,) = await history(http, server, "jellyfish", type="video")
    assert completed["id"] == queued["id"]
    assert completed["metadata"] == {"status": "completed"}
    assert isinstance(completed["asset_url"], str)
    async with storage.get(completed["asset_url"]) as response:
        assert response.status == 200
        assert await response.read() == server.video
    assert {k: v for k, v in completed.items() if k not in ("asset_url", "metadata")} == {
        k: v for k, v in item.items() if k not in ("asset_url", "metadata")
    }

    assert await history(http, server, "jellyfish", type="image") == []
    status, community = await call(
        http,
        "GET",
        f"{server.base_url}/assets/search",
        params={"q": "jellyfish", "source": "community"},
    )
    assert status == 200
    assert community["data"] == []


async def test_created_at_is_the_creation_time_in_ms(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``created_at`` is when the generation was created, and stays so as the clock moves."""
    before = time.time()
    generation_id = await create_one(http, server, prompt="A red fox in the snow")
    after = time.time()
    (item,) = await history(http, server, "red fox")
    created_at = item["created_at"]
    assert isinstance(created_at, int)
    assert not isinstance(created_at, bool)
    assert before * 1000 - 1000 <= created_at <= after * 1000 + 1000  # wall clock, in ms
    shown = await get_generation(http, server, generation_id)
    iso = datetime.fromisoformat(shown["created_at"].replace("Z", "+00:00"))
    assert abs(iso.timestamp() * 1000 - created_at) <= 1

    server.advance(SECONDS)  # 100 s later: completed, yet created when it was created
    (later,) = await history(http, server, "red fox")
    assert later["metadata"] == {"status": "completed"}
    assert later["created_at"] == created_at


async def test_failed_and_template_generations_are_listed(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Failed generations (no URL) and template generations (their stored prompt) are listed."""
    doomed = await create_one(http, server, prompt="[fail] A lantern jellyfish")
    variables = {"hook": "Meet the jellyfish lamp"}
    status, generated = await template_generate(
        http, server, "featured-ugc-pitch", {"variables": variables}
    )
    assert status == 200, generated
    from_template = generated["generations"][0]["generation_id"]

    listed = await history(http, server, "jellyfish")
    assert [i["id"] for i in listed] == [doomed, from_template]
    assert listed[1]["prompt"] == json.dumps(variables)
    assert listed[1]["model_name"] == "veo-3.1"
    assert listed[1]["metadata"] == {"status": "generating"}

    server.advance(SECONDS)
    failed, completed = await history(http, server, "jellyfish")
    assert failed["metadata"] == {"status": "failed"}
    assert failed["asset_url"] is None
    assert completed["metadata"] == {"status": "completed"}
    assert isinstance(completed["asset_url"], str)


async def test_history_completed_only_hides_unfinished_generations(
    http: aiohttp.ClientSession,
) -> None:
    """With ``history_completed_only=True`` a generation is listed only once completed."""
    async with FakePrismServer(generation_seconds=SECONDS, history_completed_only=True) as server:
        assert server.history_completed_only is True
        kept = await create_one(http, server, prompt="A paper boat on a river")
        await create_one(http, server, prompt="[fail] A paper boat in a storm")
        assert await history(http, server, "paper boat") == []
        server.advance(SECONDS / 2)
        assert await history(http, server, "paper boat") == []

        server.advance(SECONDS)
        (item,) = await history(http, server, "paper boat")  # the failed one never shows
        assert item["id"] == kept
        assert item["metadata"] == {"status": "completed"}
        assert isinstance(item["asset_url"], str)


async def test_history_completed_only_is_a_settable_attribute(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """The option can be switched on a running server; it changes only what is listed."""
    assert server.history_completed_only is False
    first = await create_one(http, server, prompt="A hot air balloon")
    server.history_completed_only = True
    assert await history(http, server, "balloon") == []
    server.complete_generation(first)
    assert [i["id"] for i in await history(http, server, "balloon")] == [first]
    second = await create_one(http, server, prompt="A hot air balloon at dawn")
    assert [i["id"] for i in await history(http, server, "balloon")] == [first]
    server.history_completed_only = False
    assert [i["id"] for i in await history(http, server, "balloon")] == [first, second]


async def test_history_pages_in_creation_order(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Pages over history follow creation order, with ``has_more`` and ``offset``."""
    status, created = await create(http, server, prompt="A tiny robot dancing", count=3)
    assert status == 200, created
    ids = [g["id"] for g in created["data"]["generations"]]
    ids += [await create_one(http, server, prompt=f"A tiny robot, take {n}") for n in (4, 5)]
    assert ids == list(server.generations)

    url = f"{server.base_url}/assets/search"
    seen: list[str] = []
    for offset, has_more in ((0, True), (2, True), (4, False)):
        params = {"q": "tiny robot", "source": "history", "limit": 2, "offset": offset}
        status, page = await call(http, "GET", url, params=params)
        assert status == 200, page
        assert page["pagination"] == {"offset": offset, "limit": 2, "has_more": has_more}
        seen += [i["id"] for i in page["data"]]
    assert seen == ids
    assert [i["id"] for i in await history(http, server, "tiny robot")] == ids


async def test_q_filters_history_by_prompt_substring(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``q`` matches a substring of the prompt, case-insensitively; ``type=all`` keeps them."""
    fox = await create_one(http, server, prompt="A red fox in the snow")
    whale = await create_one(http, server, prompt="A blue whale under the ice")
    assert [i["id"] for i in await history(http, server, "FOX")] == [fox]
    assert [i["id"] for i in await history(http, server, "whale under")] == [whale]
    assert [i["id"] for i in await history(http, server, "in the", type="all")] == [fox]
    assert await history(http, server, "no such subject") == []
    status, payload = await call(
        http, "GET", f"{server.base_url}/assets/search", params={"q": "x", "source": "history"}
    )
    assert_error(status, payload, 400, "validation_error")


async def test_only_a_completed_history_key_is_a_generation_input(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """An unfinished (or failed) generation's history key is refused as an input."""
    await create_one(http, server, prompt="A glowing jellyfish in the deep sea")
    await create_one(http, server, prompt="[fail] A glowing jellyfish in a jar")
    running, doomed = (i["asset_s3_key"] for i in await history(http, server, "jellyfish"))
    status, payload = await create(http, server, sourceVideoKey=running)
    assert_error(status, payload, 400, "validation_error")
    assert "unknown S3 key" in payload["message"]

    server.advance(SECONDS)
    status, payload = await create(http, server, sourceVideoKey=running)
    assert status == 200, payload
    status, payload = await create(http, server, referenceVideoKeys=[doomed])
    assert_error(status, payload, 400, "validation_error")
