"""FakePrismServer's generations, spoken to in raw HTTP: create, get, the clock, credits, failure.

These tests never use the SDK client: they send what the documented API (prism-api.md) receives
and check what it answers, so that tests written against the fake prove something about the real
API. Every server runs with ``generation_seconds=100`` so that only :meth:`advance` moves a
generation along, never real time.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from prism_async.testing import MODEL_PRICES, FakePrismServer
from tests.fake_http import SECONDS, assert_error, call, create, create_one, get_generation

GENERATION_KEYS = {
    "id",
    "status",
    "template_id",
    "video_url",
    "share_url",
    "created_at",
    "completed_at",
    "error",
}


def parse_iso(value: Any) -> datetime:
    """An ISO 8601 string ending in ``Z``, as a timezone-aware datetime."""
    assert isinstance(value, str)
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


# -- create generation -------------------------------------------------------------------------


async def test_create_generation_response_shape(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """The create response is wrapped in ``data`` with generations, endpoint, variant, metadata."""
    status, payload = await create(
        http,
        server,
        prompt="A fast-paced product demo with bold captions",
        modelName="veo-3.1",
        aspectRatio="9:16",
        duration="8s",
        resolution="1080p",
        count=2,
        hasAudio=True,
    )
    assert status == 200, payload
    assert set(payload) == {"data"}
    data = payload["data"]
    assert set(data) == {"generations", "endpoint_id", "variant", "metadata"}
    assert len(data["generations"]) == 2
    for generation in data["generations"]:
        assert set(generation) == {"id", "asset_id", "request_id", "status"}
        assert generation["id"].startswith("gen_")
        assert isinstance(generation["asset_id"], str)
        assert isinstance(generation["request_id"], str)
        assert generation["status"] == "queued"
    ids = [g["id"] for g in data["generations"]]
    assert len(set(ids)) == 2
    assert set(ids) == set(server.generations)
    assert isinstance(data["endpoint_id"], str)
    assert isinstance(data["variant"], str)
    assert data["metadata"] == {
        "model_name": "veo-3.1",
        "selected_model_name": "veo-3.1",
        "credits_charged": 2 * MODEL_PRICES["veo-3.1"],
        "num_generations": 2,
    }


@pytest.mark.parametrize("model", sorted(MODEL_PRICES))
@pytest.mark.parametrize("count", [1, 4])
async def test_credits_go_down_by_price_times_count(
    server: FakePrismServer, http: aiohttp.ClientSession, model: str, count: int
) -> None:
    """Each model charges its MODEL_PRICES price per video, for ``count`` videos."""
    status, payload = await create(http, server, modelName=model, count=count)
    assert status == 200, payload
    cost = MODEL_PRICES[model] * count
    assert payload["data"]["metadata"]["credits_charged"] == cost
    assert payload["data"]["metadata"]["num_generations"] == count
    assert len(payload["data"]["generations"]) == count
    assert server.credits == 10_000 - cost


async def test_count_defaults_to_one(server: FakePrismServer, http: aiohttp.ClientSession) -> None:
    """Without ``count`` exactly one video is queued and charged."""
    status, payload = await create(http, server)
    assert status == 200
    assert len(payload["data"]["generations"]) == 1
    assert server.credits == 10_000 - MODEL_PRICES["veo-3.1"]


@pytest.mark.parametrize(
    "data", ["{not json", "", "[1, 2]", '"a string"'], ids=["broken", "empty", "array", "string"]
)
async def test_invalid_json_is_a_validation_error(
    server: FakePrismServer, http: aiohttp.ClientSession, data: str
) -> None:
    """A body that is not a JSON object answers 400 validation_error."""
    status, payload = await call(
        http,
        "POST",
        f"{server.base_url}/generations",
        data=data,
        headers={"Content-Type": "application/json"},
    )
    assert_error(status, payload, 400, "validation_error")
    assert server.credits == 10_000


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": None},
        {"prompt": ""},
        {"prompt": 42},
        {"modelName": None},
        {"modelName": ""},
        {"aspectRatio": "2:1"},
        {"aspectRatio": "9x16"},
        {"count": 0},
        {"count": 5},
        {"count": -1},
        {"count": "2"},
        {"count": True},
        {"duration": "8"},
        {"duration": 8},
        {"duration": "eight seconds"},
        {"hasAudio": "yes"},
        {"resolution": 1080},
        {"ingredientImageKeys": "not-a-list"},
    ],
    ids=repr,
)
async def test_invalid_parameters_are_validation_errors(
    server: FakePrismServer, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    """Missing prompt/modelName or an invalid parameter answers 400 validation_error, no charge."""
    full = {"prompt": "A cat", "modelName": "veo-3.1", **body}
    full = {k: v for k, v in full.items() if v is not None}
    status, payload = await call(http, "POST", f"{server.base_url}/generations", json=full)
    assert_error(status, payload, 400, "validation_error")
    assert server.credits == 10_000
    assert server.generations == {}


@pytest.mark.parametrize("ratio", ["auto", "21:9", "16:9", "4:3", "1:1", "3:4", "9:16"])
async def test_every_documented_aspect_ratio_is_accepted(
    server: FakePrismServer, http: aiohttp.ClientSession, ratio: str
) -> None:
    """Each documented aspectRatio value is accepted."""
    status, payload = await create(http, server, aspectRatio=ratio, duration="5s")
    assert status == 200, payload


async def test_integral_float_count_is_not_a_server_error(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``count: 2.0`` (an integer in JSON's number model) is queued as 2 or refused, never a 500."""
    status, payload = await create(http, server, count=2.0)
    assert status in (200, 400), payload
    if status == 200:
        assert len(payload["data"]["generations"]) == 2
        assert server.credits == 10_000 - 2 * MODEL_PRICES["veo-3.1"]
    else:
        assert_error(status, payload, 400, "validation_error")
        assert server.credits == 10_000
    assert isinstance(server.credits, int)


async def test_unknown_model_is_a_pricing_error(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A model with no pricing answers 400 pricing_error and charges nothing."""
    status, payload = await create(http, server, modelName="no-such-model")
    assert_error(status, payload, 400, "pricing_error")
    assert server.credits == 10_000
    assert server.generations == {}


async def test_not_enough_credits_is_402(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Creating videos that cost more than the balance answers 402 and leaves it untouched."""
    server.credits = MODEL_PRICES["veo-3.1"] * 2 - 1
    status, payload = await create(http, server, count=2)
    assert_error(status, payload, 402, "insufficient_credits")
    assert server.credits == MODEL_PRICES["veo-3.1"] * 2 - 1
    assert server.generations == {}
    status, payload = await create(http, server, count=1)
    assert status == 200, payload
    assert server.credits == MODEL_PRICES["veo-3.1"] - 1


async def test_free_tier_paused_is_503(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``free_tier_paused = True`` makes create answer 503 free_tier_paused, charging nothing."""
    server.free_tier_paused = True
    status, payload = await create(http, server)
    assert_error(status, payload, 503, "free_tier_paused")
    assert server.credits == 10_000
    server.free_tier_paused = False
    assert (await create(http, server))[0] == 200


# -- get generation ----------------------------------------------------------------------------


async def test_generation_lifecycle_follows_the_clock(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A generation goes queued -> generating -> completed as ``advance`` moves the clock."""
    generation_id = await create_one(http, server)

    queued = await get_generation(http, server, generation_id)
    assert set(queued) == GENERATION_KEYS
    assert queued["id"] == generation_id
    assert queued["status"] == "queued"
    assert queued["template_id"] is None
    assert queued["video_url"] is None
    assert queued["share_url"] is None
    assert queued["completed_at"] is None
    assert queued["error"] is None
    created_at = parse_iso(queued["created_at"])
    assert abs(created_at.timestamp() - time.time()) < 60

    server.advance(SECONDS / 2)
    generating = await get_generation(http, server, generation_id)
    assert set(generating) == GENERATION_KEYS
    assert generating["status"] == "generating"
    assert generating["video_url"] is None
    assert generating["share_url"] is None
    assert generating["completed_at"] is None
    assert generating["created_at"] == queued["created_at"]

    server.advance(SECONDS / 2)
    completed = await get_generation(http, server, generation_id)
    assert set(completed) == GENERATION_KEYS
    assert completed["status"] == "completed"
    assert isinstance(completed["video_url"], str)
    assert completed["video_url"].startswith("http")
    assert isinstance(completed["share_url"], str)
    assert completed["share_url"].startswith("http")
    assert completed["error"] is None
    assert completed["created_at"] == queued["created_at"]
    completed_at = parse_iso(completed["completed_at"])
    assert (completed_at - created_at).total_seconds() == pytest.approx(SECONDS, abs=0.01)

    server.advance(1000)
    assert (await get_generation(http, server, generation_id))["status"] == "completed"


async def test_fail_generation_gives_failed_with_error(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``fail_generation(id, reason)`` makes it ``failed`` with ``error`` and no video."""
    generation_id = await create_one(http, server)
    server.fail_generation(generation_id, "Generation timed out")
    failed = await get_generation(http, server, generation_id)
    assert set(failed) == GENERATION_KEYS
    assert failed["status"] == "failed"
    assert failed["error"] == "Generation timed out"
    assert failed["video_url"] is None
    assert failed["share_url"] is None
    assert failed["completed_at"] is None
    server.advance(SECONDS * 2)
    assert (await get_generation(http, server, generation_id))["status"] == "failed"


async def test_complete_generation_completes_now(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``complete_generation(id)`` makes it ``completed`` at once, with its URLs."""
    generation_id = await create_one(http, server)
    server.complete_generation(generation_id)
    completed = await get_generation(http, server, generation_id)
    assert completed["status"] == "completed"
    assert completed["video_url"] is not None
    assert completed["share_url"] is not None
    parse_iso(completed["completed_at"])


async def test_fail_marker_in_prompt_fails_when_finished(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A prompt containing the fail marker runs normally, then ends ``failed`` with an error."""
    generation_id = await create_one(http, server, prompt="A cat [fail]")
    server.advance(SECONDS / 2)
    assert (await get_generation(http, server, generation_id))["status"] == "generating"
    server.advance(SECONDS / 2)
    failed = await get_generation(http, server, generation_id)
    assert failed["status"] == "failed"
    assert isinstance(failed["error"], str)
    assert failed["error"]
    assert failed["video_url"] is None
    assert failed["completed_at"] is None


async def test_custom_fail_marker(http: aiohttp.ClientSession) -> None:
    """``fail_marker=`` chooses the text that makes a prompt fail."""
    async with FakePrismServer(generation_seconds=SECONDS, fail_marker="BOOM") as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            doomed = await create_one(session, server, prompt="BOOM goes the cat")
            fine = await create_one(session, server, prompt="A cat [fail]")
            server.advance(SECONDS)
            assert (await get_generation(session, server, doomed))["status"] == "failed"
            assert (await get_generation(session, server, fine))["status"] == "completed"


async def test_unknown_generation_is_404(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """An unknown generation id answers 404 not_found."""
    for generation_id in ("gen_nope", "gen%2Fnope", "abc%20def"):
        status, payload = await call(http, "GET", f"{server.base_url}/generations/{generation_id}")
        assert_error(status, payload, 404, "not_found")
