"""FakePrismServer itself, spoken to in raw HTTP: is the fake faithful to prism-api.md?

These tests never use the SDK client: they send what the documented API receives and check
what it answers, so that tests written against the fake prove something about the real API.
Every server runs with ``generation_seconds=100`` so that only :meth:`advance` moves a
generation along, never real time.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from prism_async import (
    Asset,
    Character,
    Generation,
    GenerationBatch,
    Page,
    PresignedUpload,
    Template,
    TemplateGenerationBatch,
)
from prism_async._converters import make_converter, structure, structure_data
from prism_async.testing import MODEL_PRICES, TEMPLATE_PRICE, FakePrismServer, StoredObject
from tests.conftest import free_port

Serve = Callable[[web.Application], Awaitable[str]]

STRICT = make_converter(forbid_extra_keys=True)
SECONDS = 100.0
MB = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
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
ASSET_KEYS = {
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
CHARACTER_KEYS = {"id", "name", "description", "created_at"}


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
async def raw() -> AsyncIterator[aiohttp.ClientSession]:
    """A session with no API key, as a storage client must be."""
    async with aiohttp.ClientSession() as session:
        yield session


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


async def put(
    raw: aiohttp.ClientSession, url: str, data: Any, content_type: str = "image/png", **headers: str
) -> tuple[int, str]:
    """PUT ``data`` to a presigned URL; return the status and the body text."""
    async with raw.put(url, data=data, headers={"Content-Type": content_type, **headers}) as resp:
        return resp.status, await resp.text()


async def upload(
    http: aiohttp.ClientSession,
    raw: aiohttp.ClientSession,
    server: FakePrismServer,
    content_type: str = "image/png",
) -> str:
    """Presign and PUT a small file; return its ``s3_key``."""
    presigned = await presign(http, server, content_type)
    status, text = await put(raw, presigned["upload_url"], PNG, content_type)
    assert status == 200, text
    return str(presigned["s3_key"])


async def start_receiver(serve: Serve, delay: float = 0.0) -> tuple[str, list[dict[str, Any]]]:
    """A webhook receiver on loopback; returns its URL and the payloads it got, in order."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    return f"{await serve(app)}/hook", received


def parse_iso(value: Any) -> datetime:
    """An ISO 8601 string ending in ``Z``, as a timezone-aware datetime."""
    assert isinstance(value, str)
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


def is_ms(value: Any) -> bool:
    """Whether ``value`` is a plausible Unix timestamp in milliseconds (an int, not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 10**12


# -- auth --------------------------------------------------------------------------------------

API_CALLS = [
    ("POST", "/generations", {"prompt": "A cat", "modelName": "veo-3.1"}),
    ("GET", "/generations/gen_abc123", None),
    ("POST", "/templates/abc123/generate", {"variables": {"hook": "Look at this"}}),
    ("GET", "/templates", None),
    ("GET", "/templates/abc123", None),
    ("POST", "/s3/presign-upload", {"kind": "upload", "contentType": "image/png"}),
    ("POST", "/characters", {"name": "Ava", "images": ["https://example.com/ava.png"]}),
    ("GET", "/characters", None),
    ("GET", "/assets/search?q=cat", None),
]
API_IDS = [f"{method} {path}" for method, path, _ in API_CALLS]


@pytest.mark.parametrize(("method", "path", "body"), API_CALLS, ids=API_IDS)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer prism_sk_wrong", "prism_sk_test", "Bearer ", "Basic cHJpc206a2V5"],
    ids=["missing", "wrong-key", "no-scheme", "empty", "basic"],
)
async def test_missing_or_wrong_key_is_401_on_every_endpoint(
    server: FakePrismServer,
    raw: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any,
    authorization: str | None,
) -> None:
    """Every /api endpoint answers 401 unauthorized without the exact Bearer key, doing nothing."""
    headers = {} if authorization is None else {"Authorization": authorization}
    status, payload = await call(raw, method, server.base_url + path, json=body, headers=headers)
    assert_error(status, payload, 401, "unauthorized")
    assert server.credits == 10_000
    assert server.generations == {}
    assert server.characters == []


@pytest.mark.parametrize(("method", "path", "body"), API_CALLS, ids=API_IDS)
async def test_key_without_scope_is_403_on_every_endpoint(
    method: str, path: str, body: Any
) -> None:
    """A valid key without ``templates:read`` gets 403 forbidden on every /api endpoint."""
    async with (
        FakePrismServer(generation_seconds=SECONDS, scopes=()) as server,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {server.api_key}"}) as http,
    ):
        status, payload = await call(http, method, server.base_url + path, json=body)
        assert_error(status, payload, 403, "forbidden")
        assert server.credits == 10_000
        assert server.generations == {}


async def test_custom_api_key_is_the_only_one_accepted(raw: aiohttp.ClientSession) -> None:
    """A server built with ``api_key=`` accepts that key and refuses the default one."""
    async with FakePrismServer(api_key="prism_sk_custom", generation_seconds=SECONDS) as server:
        url = f"{server.base_url}/templates"
        good = {"Authorization": "Bearer prism_sk_custom"}
        assert (await call(raw, "GET", url, headers=good))[0] == 200
        status, payload = await call(raw, "GET", url, headers={"Authorization": "Bearer x"})
        assert_error(status, payload, 401, "unauthorized")


# -- create generation ------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("field", "as_list"),
    [
        ("startFrameKey", False),
        ("endFrameKey", False),
        ("sourceVideoKey", False),
        ("audioKey", False),
        ("ingredientImageKeys", True),
        ("characterReferenceImageKeys", True),
        ("referenceVideoKeys", True),
    ],
)
async def test_key_never_uploaded_is_a_validation_error(
    server: FakePrismServer, http: aiohttp.ClientSession, field: str, as_list: bool
) -> None:
    """A key field naming a key that was never uploaded answers 400 validation_error."""
    key = "users/user_abc/user-uploads/batch_abc/never-uploaded.png"
    status, payload = await create(http, server, **{field: [key] if as_list else key})
    assert_error(status, payload, 400, "validation_error")
    assert server.credits == 10_000


async def test_presigned_but_not_uploaded_key_is_refused(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A key that was presigned but never PUT is not a usable input yet."""
    presigned = await presign(http, server)
    status, payload = await create(http, server, startFrameKey=presigned["s3_key"])
    assert_error(status, payload, 400, "validation_error")


async def test_uploaded_keys_are_accepted_in_every_key_field(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """Keys uploaded through presign + PUT are accepted in the single and list key fields."""
    image = await upload(http, raw, server, "image/png")
    second = await upload(http, raw, server, "image/jpeg")
    video = await upload(http, raw, server, "video/mp4")
    audio = await upload(http, raw, server, "audio/mpeg")
    status, payload = await create(
        http,
        server,
        startFrameKey=image,
        endFrameKey=second,
        ingredientImageKeys=[image, second],
        characterReferenceImageKeys=[image],
        sourceVideoKey=video,
        referenceVideoKeys=[video],
        audioKey=audio,
    )
    assert status == 200, payload


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


# -- templates ---------------------------------------------------------------------------------


async def test_list_templates_shape_and_both_documented_shapes(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """The list is ``{data, pagination}`` with limit 50 by default, holding both template shapes."""
    status, payload = await call(http, "GET", f"{server.base_url}/templates")
    assert status == 200
    assert set(payload) == {"data", "pagination"}
    assert payload["pagination"] == {"offset": 0, "limit": 50, "has_more": False}
    templates = {t["id"]: t for t in payload["data"]}
    assert {"abc123", "featured-ugc-pitch"} <= set(templates)

    older = templates["abc123"]
    assert {
        "id",
        "title",
        "description",
        "category",
        "duration_sec",
        "input_variables",
        "prompt_template",
    } <= set(older)
    optional = {"placeholder", "description", "default_value", "max_length", "min_length", "slot"}
    for variable in older["input_variables"]:
        assert {"key", "label", "type", "required"} <= set(variable)
        assert set(variable) <= {"key", "label", "type", "required"} | optional
        assert variable["type"] in ("text", "image", "video", "audio")
        assert isinstance(variable["required"], bool)

    newer = templates["featured-ugc-pitch"]
    assert set(newer) == {"id", "title", "description", "kind", "model_name"}
    assert newer["kind"] in ("image", "video")
    assert all(t["kind"] in ("image", "video") for t in payload["data"] if "kind" in t)


async def test_list_templates_limit_and_offset(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``limit`` and ``offset`` page through the list; ``has_more`` is false on the last page."""
    _, everything = await call(http, "GET", f"{server.base_url}/templates")
    total = len(everything["data"])
    assert total >= 3
    seen: list[str] = []
    offset = 0
    while True:
        status, page = await call(
            http, "GET", f"{server.base_url}/templates", params={"limit": 2, "offset": offset}
        )
        assert status == 200
        assert page["pagination"]["offset"] == offset
        assert page["pagination"]["limit"] == 2
        assert len(page["data"]) <= 2
        seen.extend(t["id"] for t in page["data"])
        if not page["pagination"]["has_more"]:
            break
        offset += 2
    assert seen == [t["id"] for t in everything["data"]]
    status, beyond = await call(
        http, "GET", f"{server.base_url}/templates", params={"offset": total + 5}
    )
    assert status == 200
    assert beyond["data"] == []
    assert beyond["pagination"]["has_more"] is False
    status, most = await call(http, "GET", f"{server.base_url}/templates", params={"limit": 100})
    assert status == 200
    assert most["pagination"]["limit"] == 100


async def test_list_templates_q_and_category(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``q`` searches titles and descriptions; ``category`` (older docs) filters by category."""
    url = f"{server.base_url}/templates"
    _, by_q = await call(http, "GET", url, params={"q": "pitch"})
    assert {t["id"] for t in by_q["data"]} == {"abc123", "featured-ugc-pitch"}
    _, by_q_case = await call(http, "GET", url, params={"q": "PITCH"})
    assert by_q_case["data"] == by_q["data"]
    _, by_category = await call(http, "GET", url, params={"category": "ugc"})
    assert [t["id"] for t in by_category["data"]] == ["abc123"]
    _, nothing = await call(http, "GET", url, params={"q": "no such template"})
    assert nothing["data"] == []
    assert nothing["pagination"]["has_more"] is False


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"offset": "-1"},
        {"q": "a"},
        {"q": " a "},
    ],
    ids=repr,
)
async def test_list_templates_validation(
    server: FakePrismServer, http: aiohttp.ClientSession, params: dict[str, str]
) -> None:
    """An out-of-range limit, a negative offset or a one-character ``q`` answers 400."""
    status, payload = await call(http, "GET", f"{server.base_url}/templates", params=params)
    assert_error(status, payload, 400, "validation_error")


async def test_get_template(server: FakePrismServer, http: aiohttp.ClientSession) -> None:
    """GET /api/templates/:id answers ``{"data": template}``, and 404 not_found when unknown."""
    _, listing = await call(http, "GET", f"{server.base_url}/templates")
    for template in listing["data"]:
        status, payload = await call(http, "GET", f"{server.base_url}/templates/{template['id']}")
        assert status == 200
        assert payload == {"data": template}
    status, payload = await call(http, "GET", f"{server.base_url}/templates/no-such-template")
    assert_error(status, payload, 404, "not_found")


async def test_template_generate_response_shape(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Generating answers generation_id/status generating, template_id, credits and an estimate."""
    status, payload = await template_generate(
        http,
        server,
        "abc123",
        {
            "variables": {
                "hook": "Check out this amazing product",
                "productImage": "https://example.com/product.jpg",
                "benefit": "2x faster results",
            }
        },
    )
    assert status == 200, payload
    assert set(payload) == {
        "generations",
        "template_id",
        "credits_charged",
        "latency_estimate_sec",
    }
    assert len(payload["generations"]) == 1
    generation = payload["generations"][0]
    assert set(generation) == {"generation_id", "status"}
    assert generation["status"] == "generating"
    assert payload["template_id"] == "abc123"
    assert payload["credits_charged"] == TEMPLATE_PRICE
    estimate = payload["latency_estimate_sec"]
    assert set(estimate) == {"typical", "busy"}
    assert estimate["typical"] > 0
    assert estimate["busy"] >= estimate["typical"]
    assert server.credits == 10_000 - TEMPLATE_PRICE

    polled = await get_generation(http, server, generation["generation_id"])
    assert polled["status"] == "generating"
    assert polled["template_id"] == "abc123"
    server.advance(SECONDS)
    polled = await get_generation(http, server, generation["generation_id"])
    assert polled["status"] == "completed"
    assert polled["template_id"] == "abc123"


async def test_template_generate_required_variables_and_defaults(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A required variable without default is needed; one with a default or optional may be left."""
    status, payload = await template_generate(
        http, server, "abc123", {"variables": {"benefit": "Saves time"}}
    )
    assert_error(status, payload, 400, "validation_error")
    assert server.credits == 10_000
    status, payload = await template_generate(
        http, server, "abc123", {"variables": {"hook": "Look at this"}}
    )
    assert status == 200, payload
    status, payload = await template_generate(http, server, "product-unboxing", {"variables": {}})
    assert_error(status, payload, 400, "validation_error")
    status, payload = await template_generate(
        http, server, "product-unboxing", {"variables": {"product": "Phone"}}
    )
    assert status == 200, payload
    status, payload = await template_generate(http, server, "featured-ugc-pitch", {"variables": {}})
    assert status == 200, payload
    assert server.credits == 10_000 - 3 * TEMPLATE_PRICE


@pytest.mark.parametrize(
    "body",
    [{}, {"variables": None}, {"variables": ["hook"]}, {"variables": "hook=x"}],
    ids=repr,
)
async def test_template_generate_needs_variables_object(
    server: FakePrismServer, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    """A body without a ``variables`` object answers 400 validation_error."""
    status, payload = await template_generate(http, server, "featured-ugc-pitch", body)
    assert_error(status, payload, 400, "validation_error")
    assert server.credits == 10_000


async def test_template_generate_invalid_json(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Invalid JSON on template generate answers 400 validation_error."""
    status, payload = await call(
        http,
        "POST",
        f"{server.base_url}/templates/abc123/generate",
        data="{oops",
        headers={"Content-Type": "application/json"},
    )
    assert_error(status, payload, 400, "validation_error")


async def test_template_generate_unknown_and_broken_templates(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """An unknown template answers 404 not_found; ``broken-template`` 422 invalid_template."""
    status, payload = await template_generate(http, server, "no-such", {"variables": {}})
    assert_error(status, payload, 404, "not_found")
    status, payload = await template_generate(http, server, "broken-template", {"variables": {}})
    assert_error(status, payload, 422, "invalid_template")
    assert server.credits == 10_000
    assert server.generations == {}


async def test_template_generate_insufficient_credits(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Template generation with too few credits answers 402 insufficient_credits."""
    server.credits = TEMPLATE_PRICE - 1
    status, payload = await template_generate(http, server, "featured-ugc-pitch", {"variables": {}})
    assert_error(status, payload, 402, "insufficient_credits")
    assert server.credits == TEMPLATE_PRICE - 1


async def test_template_generate_character_variables(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A ``character_variables`` entry naming a saved character is accepted for an image slot."""
    status, created = await call(
        http,
        "POST",
        f"{server.base_url}/characters",
        json={"name": "Ava", "images": ["https://example.com/ava.png"]},
    )
    assert status == 201
    status, payload = await template_generate(
        http,
        server,
        "product-unboxing",
        {
            "variables": {"product": "Phone"},
            "character_variables": {"presenter": created["data"]["id"]},
        },
    )
    assert status == 200, payload


# -- presign and storage -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "max_bytes"),
    [
        ("image/png", 20 * MB),
        ("image/jpeg", 20 * MB),
        ("video/mp4", 200 * MB),
        ("audio/mpeg", 50 * MB),
    ],
)
async def test_presign_response(
    server: FakePrismServer, http: aiohttp.ClientSession, content_type: str, max_bytes: int
) -> None:
    """Presign answers s3_key, upload_url, content_type and the documented max_bytes."""
    presigned = await presign(http, server, content_type)
    assert set(presigned) == {"s3_key", "upload_url", "content_type", "max_bytes"}
    assert presigned["content_type"] == content_type
    assert presigned["max_bytes"] == max_bytes
    assert isinstance(presigned["s3_key"], str)
    assert presigned["s3_key"]
    assert presigned["upload_url"].startswith("http")
    assert server.base_url not in presigned["upload_url"]
    assert presigned["s3_key"] not in server.objects


async def test_presign_without_file_name(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``fileName`` is optional."""
    status, payload = await call(
        http,
        "POST",
        f"{server.base_url}/s3/presign-upload",
        json={"kind": "upload", "contentType": "image/png"},
    )
    assert status == 200, payload
    assert payload["max_bytes"] == 20971520


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "avatar", "contentType": "image/png"},
        {"contentType": "image/png"},
        {"kind": "upload", "contentType": "application/pdf"},
        {"kind": "upload", "contentType": "text/plain"},
        {"kind": "upload", "contentType": "image"},
        {"kind": "upload"},
        {"kind": "upload", "contentType": 7},
        {"kind": "upload", "content_type": "image/png"},
    ],
    ids=repr,
)
async def test_presign_validation(
    server: FakePrismServer, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    """A bad kind or an unsupported or missing contentType answers 400 validation_error."""
    status, payload = await call(http, "POST", f"{server.base_url}/s3/presign-upload", json=body)
    assert_error(status, payload, 400, "validation_error")


async def test_put_stores_the_bytes(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """A PUT with the presigned Content-Type and a Content-Length stores the bytes."""
    presigned = await presign(http, server, "image/png")
    status, _ = await put(raw, presigned["upload_url"], PNG, "image/png")
    assert status == 200
    assert server.objects[presigned["s3_key"]] == StoredObject(content_type="image/png", data=PNG)
    recorded = server.requests_to("PUT", "/storage/uploads/*")
    assert len(recorded) == 1
    assert recorded[0].headers["Content-Length"] == str(len(PNG))
    assert "Authorization" not in recorded[0].headers


async def test_put_with_authorization_header_is_refused(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """A PUT that carries an Authorization header answers 400 as S3 does, storing nothing."""
    presigned = await presign(http, server)
    status, text = await put(
        raw, presigned["upload_url"], PNG, Authorization=f"Bearer {server.api_key}"
    )
    assert status == 400
    assert "Only one auth mechanism allowed" in text
    assert text.startswith("<?xml")
    assert "<Code>InvalidArgument</Code>" in text
    assert server.objects == {}


async def test_put_with_other_content_type_is_403(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """A PUT whose Content-Type differs from the presigned one answers 403, storing nothing."""
    presigned = await presign(http, server, "image/png")
    status, text = await put(raw, presigned["upload_url"], PNG, "image/jpeg")
    assert status == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in text
    assert server.objects == {}


async def test_chunked_put_is_501(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """A chunked PUT (no Content-Length) answers 501 NotImplemented, as S3 does."""
    presigned = await presign(http, server)

    async def chunks() -> AsyncIterator[bytes]:
        yield PNG[:10]
        yield PNG[10:]

    status, text = await put(raw, presigned["upload_url"], chunks())
    assert status == 501
    assert "<Code>NotImplemented</Code>" in text
    assert server.objects == {}


async def test_put_over_max_bytes_is_entity_too_large(
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    raw: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PUT larger than ``max_bytes`` answers 400 EntityTooLarge; exactly ``max_bytes`` fits."""
    from prism_async.testing import _server

    monkeypatch.setitem(_server.UPLOAD_LIMITS, "image", 16)
    presigned = await presign(http, server, "image/png")
    assert presigned["max_bytes"] == 16
    status, text = await put(raw, presigned["upload_url"], b"x" * 17)
    assert status == 400
    assert "<Code>EntityTooLarge</Code>" in text
    assert server.objects == {}
    status, _ = await put(raw, presigned["upload_url"], b"x" * 16)
    assert status == 200
    assert server.objects[presigned["s3_key"]].data == b"x" * 16


async def test_put_with_tampered_signature_is_403(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """Changing the signature, or the expiry it signs, answers 403 SignatureDoesNotMatch."""
    presigned = await presign(http, server)
    url = URL(presigned["upload_url"])
    signature = url.query["X-Amz-Signature"]
    forged = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    status, text = await put(raw, str(url.update_query({"X-Amz-Signature": forged})), PNG)
    assert status == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in text
    later = f"{float(url.query['X-Amz-Expires']) + 86400:.3f}"
    status, text = await put(raw, str(url.update_query({"X-Amz-Expires": later})), PNG)
    assert status == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in text
    status, _ = await put(raw, str(url.with_query(None)), PNG)
    assert status == 403
    assert server.objects == {}


async def test_put_after_expiry_is_403(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """A PUT after ``url_ttl`` has passed answers 403 Request has expired."""
    presigned = await presign(http, server)
    server.advance(server.url_ttl + 1)
    status, text = await put(raw, presigned["upload_url"], PNG)
    assert status == 403
    assert "<Code>AccessDenied</Code>" in text
    assert "Request has expired" in text
    assert server.objects == {}


async def test_put_to_unknown_upload_is_refused(
    server: FakePrismServer, raw: aiohttp.ClientSession
) -> None:
    """A PUT to an upload URL the fake never issued is refused with an S3 XML error."""
    status, text = await put(raw, f"{server.root}/storage/uploads/nope?X-Amz-Signature=x", PNG)
    assert status in (403, 404)
    assert "<Error>" in text
    assert server.objects == {}


# -- video download ----------------------------------------------------------------------------


async def completed_generation(
    http: aiohttp.ClientSession, server: FakePrismServer
) -> dict[str, Any]:
    """Create a generation, run it to completion and return its status object."""
    generation_id = await create_one(http, server)
    server.advance(SECONDS)
    completed = await get_generation(http, server, generation_id)
    assert completed["status"] == "completed"
    return completed


async def test_video_url_serves_the_video(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """GET video_url answers the fake's video bytes as video/mp4, with no API key."""
    completed = await completed_generation(http, server)
    async with raw.get(completed["video_url"]) as response:
        assert response.status == 200
        assert response.content_type == "video/mp4"
        assert await response.read() == server.video
    assert len(server.video) == 256 * 1024
    assert server.video[4:8] == b"ftyp"


async def test_video_url_honours_range(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """``Range: bytes=0-99`` answers 206, Content-Range and those 100 bytes; past the end 416."""
    completed = await completed_generation(http, server)
    async with raw.get(completed["video_url"], headers={"Range": "bytes=0-99"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 0-99/{len(server.video)}"
        body = await response.read()
    assert body == server.video[:100]
    async with raw.get(completed["video_url"], headers={"Range": "bytes=100-"}) as response:
        assert response.status == 206
        assert await response.read() == server.video[100:]
    beyond = {"Range": f"bytes={len(server.video)}-"}
    async with raw.get(completed["video_url"], headers=beyond) as response:
        assert response.status == 416
        assert "<Code>InvalidRange</Code>" in await response.text()


async def test_video_url_expires_and_a_fresh_fetch_renews_it(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """After ``url_ttl`` the URL answers 403 AccessDenied XML; re-fetching gives a working one."""
    completed = await completed_generation(http, server)
    server.advance(server.url_ttl + 1)
    async with raw.get(completed["video_url"]) as response:
        assert response.status == 403
        text = await response.text()
    assert "<Code>AccessDenied</Code>" in text
    assert "Request has expired" in text
    fresh = await get_generation(http, server, completed["id"])
    assert fresh["video_url"] != completed["video_url"]
    async with raw.get(fresh["video_url"]) as response:
        assert response.status == 200
        assert await response.read() == server.video


async def test_video_url_refuses_tampering_and_the_api_key(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """A forged signature answers 403, and a request carrying Authorization 400, as S3 does."""
    completed = await completed_generation(http, server)
    url = URL(completed["video_url"])
    forged = url.update_query({"X-Amz-Signature": "0" * 64})
    async with raw.get(forged) as response:
        assert response.status == 403
        assert "<Code>SignatureDoesNotMatch</Code>" in await response.text()
    async with http.get(completed["video_url"]) as response:
        assert response.status == 400
        assert "Only one auth mechanism allowed" in await response.text()


async def test_share_url_answers(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """The share_url of a completed generation is a public page answering 200."""
    completed = await completed_generation(http, server)
    async with raw.get(completed["share_url"]) as response:
        assert response.status == 200
        assert response.content_type == "text/html"


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


async def test_completed_generation_becomes_a_history_asset(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A completed generation shows up as a ``history`` video asset; a running one does not."""
    status, created = await create(http, server, prompt="A glowing jellyfish", modelName="sora-2")
    assert status == 200
    queued = created["data"]["generations"][0]
    _, running = await search(http, server, q="jellyfish")
    assert running["data"] == []

    server.advance(SECONDS)
    status, payload = await search(http, server, q="jellyfish", source="history")
    assert status == 200
    assert len(payload["data"]) == 1
    asset = payload["data"][0]
    assert set(asset) == ASSET_KEYS
    assert asset["source"] == "history"
    assert asset["asset_type"] == "video"
    assert asset["prompt"] == "A glowing jellyfish"
    assert asset["model_name"] == "sora-2"
    assert asset["asset_id"] == queued["asset_id"]
    assert isinstance(asset["asset_s3_key"], str)
    assert is_ms(asset["created_at"])
    assert asset["published_at"] is None or is_ms(asset["published_at"])
    _, videos = await search(http, server, q="jellyfish", type="video", source="all")
    assert [a["id"] for a in videos["data"]] == [asset["id"]]
    _, images = await search(http, server, q="jellyfish", type="image")
    assert images["data"] == []
    _, community = await search(http, server, q="jellyfish", source="community")
    assert community["data"] == []


# -- webhooks ----------------------------------------------------------------------------------


async def test_webhook_on_completion(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession, serve: Serve
) -> None:
    """A completed template generation POSTs the documented payload to ``webhook_url``, once."""
    hook_url, received = await start_receiver(serve)
    status, payload = await template_generate(
        http,
        server,
        "abc123",
        {"variables": {"hook": "Look at this"}, "webhook_url": hook_url},
    )
    assert status == 200, payload
    generation_id = payload["generations"][0]["generation_id"]
    await server.drain_webhooks()
    assert received == []

    server.advance(SECONDS)
    await server.drain_webhooks()
    assert len(received) == 1
    assert set(received[0]) == {"generation_id", "status", "template_id", "video_url", "error"}
    assert received[0]["generation_id"] == generation_id
    assert received[0]["status"] == "completed"
    assert received[0]["template_id"] == "abc123"
    assert received[0]["error"] is None
    async with raw.get(received[0]["video_url"]) as response:
        assert response.status == 200
    assert len(server.webhook_deliveries) == 1
    delivery = server.webhook_deliveries[0]
    assert delivery.url == hook_url
    assert delivery.status == 200
    assert delivery.error is None
    assert delivery.payload == received[0]

    server.advance(SECONDS)
    await server.drain_webhooks()
    await asyncio.sleep(0.1)
    assert len(received) == 1


async def test_webhook_on_failure(
    server: FakePrismServer, http: aiohttp.ClientSession, serve: Serve
) -> None:
    """A failed generation's webhook has status failed, video_url null and error set."""
    hook_url, received = await start_receiver(serve)
    body = {"variables": {"hook": "Look at this [fail]"}, "webhook_url": hook_url}
    status, payload = await template_generate(http, server, "abc123", body)
    assert status == 200, payload
    marked = payload["generations"][0]["generation_id"]
    body = {"variables": {"product": "Phone"}, "webhook_url": hook_url}
    status, payload = await template_generate(http, server, "product-unboxing", body)
    assert status == 200, payload
    forced = payload["generations"][0]["generation_id"]

    server.fail_generation(forced, "Content policy")
    await server.drain_webhooks()
    server.advance(SECONDS)
    await server.drain_webhooks()

    by_id = {p["generation_id"]: p for p in received}
    assert set(by_id) == {marked, forced}
    assert by_id[forced] == {
        "generation_id": forced,
        "status": "failed",
        "template_id": "product-unboxing",
        "video_url": None,
        "error": "Content policy",
    }
    assert by_id[marked]["status"] == "failed"
    assert by_id[marked]["video_url"] is None
    assert isinstance(by_id[marked]["error"], str)
    assert by_id[marked]["error"]


async def test_webhook_to_a_receiver_that_is_down_is_recorded(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A webhook to a dead receiver is recorded with status None and an error, never raised."""
    hook_url = f"http://127.0.0.1:{free_port()}/hook"
    status, payload = await template_generate(
        http, server, "featured-ugc-pitch", {"variables": {}, "webhook_url": hook_url}
    )
    assert status == 200, payload
    server.advance(SECONDS)
    await server.drain_webhooks()
    assert len(server.webhook_deliveries) == 1
    delivery = server.webhook_deliveries[0]
    assert delivery.url == hook_url
    assert delivery.status is None
    assert delivery.error
    assert delivery.payload["status"] == "completed"
    assert (await call(http, "GET", f"{server.base_url}/templates"))[0] == 200


async def test_drain_webhooks_waits_for_a_slow_receiver(
    server: FakePrismServer, http: aiohttp.ClientSession, serve: Serve
) -> None:
    """``drain_webhooks`` returns only once a due webhook has been delivered and recorded."""
    hook_url, received = await start_receiver(serve, delay=0.3)
    status, payload = await template_generate(
        http, server, "featured-ugc-pitch", {"variables": {}, "webhook_url": hook_url}
    )
    assert status == 200, payload
    server.advance(SECONDS)
    await server.drain_webhooks()
    deliveries_at_drain = list(server.webhook_deliveries)
    for _ in range(200):  # let the in-flight POST finish, so the teardown stays clean
        if server.webhook_deliveries:
            break
        await asyncio.sleep(0.01)
    assert len(received) == 1
    assert len(deliveries_at_drain) == 1
    assert deliveries_at_drain[0].status == 200


async def test_bad_webhook_url_is_refused(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A ``webhook_url`` that is not an HTTP(S) URL answers 400 validation_error."""
    status, payload = await template_generate(
        http, server, "featured-ugc-pitch", {"variables": {}, "webhook_url": "not a url"}
    )
    assert_error(status, payload, 400, "validation_error")


# -- fault injection ---------------------------------------------------------------------------


async def test_injected_429_answers_exactly_times_then_normal(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """An injected 429 with Retry-After answers exactly ``times`` requests, then normal ones."""
    generation_id = await create_one(http, server)
    server.inject("GET", "/api/generations/*", status=429, headers={"Retry-After": "3"}, times=2)
    url = f"{server.base_url}/generations/{generation_id}"
    for _ in range(2):
        async with http.get(url) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "3"
            body = await response.json()
        assert set(body) == {"error", "message"}
    async with http.get(url) as response:
        assert response.status == 200
        assert "Retry-After" not in response.headers
    status, _ = await create(http, server)
    assert status == 200


async def test_injected_500_with_custom_body(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``status=500`` answers the given JSON body, or raw text when the body is a string."""
    server.inject(
        "POST", "/api/generations", status=500, body={"error": "server_error", "message": "Boom"}
    )
    status, payload = await create(http, server)
    assert status == 500
    assert payload == {"error": "server_error", "message": "Boom"}
    assert server.credits == 10_000
    server.inject("GET", "/api/templates", status=502, body="<html>Bad gateway</html>")
    async with http.get(f"{server.base_url}/templates") as response:
        assert response.status == 502
        assert await response.text() == "<html>Bad gateway</html>"
    assert (await create(http, server))[0] == 200


async def test_injected_delay(server: FakePrismServer, http: aiohttp.ClientSession) -> None:
    """``delay=0.2`` answers normally, but at least 0.2 s later."""
    server.inject("GET", "/api/templates", delay=0.2)
    started = time.monotonic()
    status, payload = await call(http, "GET", f"{server.base_url}/templates")
    assert time.monotonic() - started >= 0.2
    assert status == 200
    assert payload["data"]
    started = time.monotonic()
    assert (await call(http, "GET", f"{server.base_url}/templates"))[0] == 200
    assert time.monotonic() - started < 0.2


async def test_injected_drop_closes_the_connection(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``drop=True`` closes the connection without an answer; the POST is not processed."""
    server.inject("POST", "/api/generations", drop=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await create(http, server)
    assert server.credits == 10_000
    assert server.generations == {}
    assert (await create(http, server))[0] == 200


async def test_injected_drop_of_an_idempotent_request(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Dropping a GET twice defeats aiohttp's single transparent retry: the client sees it."""
    server.inject("GET", "/api/templates", drop=True, times=2)
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(http, "GET", f"{server.base_url}/templates")
    assert len(server.requests_to("GET", "/api/templates")) == 2
    assert (await call(http, "GET", f"{server.base_url}/templates"))[0] == 200


async def test_faults_match_method_and_path_and_can_be_cleared(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A fault hits only its method and path glob; ``clear_faults`` forgets every fault."""
    server.inject("POST", "/api/templates/*", status=503, times=100)
    server.inject("*", "/api/characters", status=500, times=100)
    assert (await call(http, "GET", f"{server.base_url}/templates"))[0] == 200
    status, _ = await template_generate(http, server, "featured-ugc-pitch", {"variables": {}})
    assert status == 503
    assert (await call(http, "GET", f"{server.base_url}/characters"))[0] == 500
    server.clear_faults()
    status, _ = await template_generate(http, server, "featured-ugc-pitch", {"variables": {}})
    assert status == 200
    assert (await call(http, "GET", f"{server.base_url}/characters"))[0] == 200


# -- request log -------------------------------------------------------------------------------


async def test_request_log(server: FakePrismServer, http: aiohttp.ClientSession) -> None:
    """``requests`` records method, path, query, headers and JSON body; ``requests_to`` filters."""
    await create_one(http, server, prompt="first")
    await create_one(http, server, prompt="second", count=2)
    await call(http, "GET", f"{server.base_url}/templates", params={"limit": "2", "q": "pitch"})
    await call(http, "GET", f"{server.base_url}/generations/gen_nope")

    assert [(r.method, r.path) for r in server.requests] == [
        ("POST", "/api/generations"),
        ("POST", "/api/generations"),
        ("GET", "/api/templates"),
        ("GET", "/api/generations/gen_nope"),
    ]
    first, second, listing, missing = server.requests
    assert first.json == {"prompt": "first", "modelName": "veo-3.1"}
    assert second.json == {"prompt": "second", "modelName": "veo-3.1", "count": 2}
    assert first.headers["Authorization"] == f"Bearer {server.api_key}"
    assert first.query == {}
    assert listing.query == {"limit": "2", "q": "pitch"}
    assert listing.json is None
    assert missing.json is None
    assert len(server.requests_to("POST", "/api/generations")) == 2
    assert len(server.requests_to("GET", "/api/generations/*")) == 1
    assert server.requests_to("DELETE", "/api/generations") == []


# -- the models never drift from the fake ------------------------------------------------------


async def test_strict_converter_accepts_every_fake_response(
    server: FakePrismServer, http: aiohttp.ClientSession, raw: aiohttp.ClientSession
) -> None:
    """Every response of the fake fits the SDK models under a converter forbidding extra keys."""
    api = server.base_url
    _, created = await create(http, server, count=2)
    batch = structure_data(created, GenerationBatch, conv=STRICT)
    assert len(batch.ids) == 2
    running, doomed = batch.ids
    server.fail_generation(doomed, "Generation timed out")

    _, generated = await template_generate(
        http, server, "abc123", {"variables": {"hook": "Look at this"}}
    )
    template_batch = structure(generated, TemplateGenerationBatch, conv=STRICT)
    assert template_batch.latency_estimate is not None

    for generation_id in (running, doomed, template_batch.ids[0]):
        generation = structure(
            await get_generation(http, server, generation_id), Generation, conv=STRICT
        )
        assert generation.created_at is not None
    server.advance(SECONDS)
    completed = structure(await get_generation(http, server, running), Generation, conv=STRICT)
    assert completed.is_completed
    assert completed.completed_at is not None

    _, templates = await call(http, "GET", f"{api}/templates")
    page = structure(templates, Page[Template], conv=STRICT)
    assert page.data
    for template in page.data:
        _, single = await call(http, "GET", f"{api}/templates/{template.id}")
        assert structure_data(single, Template, conv=STRICT) == template

    presigned = structure(await presign(http, server), PresignedUpload, conv=STRICT)
    assert presigned.max_bytes == 20 * MB

    _, from_urls = await call(
        http, "POST", f"{api}/characters", json={"name": "Ava", "images": ["https://e.com/a.png"]}
    )
    assert structure_data(from_urls, Character, conv=STRICT).created_at is not None
    form = aiohttp.FormData()
    form.add_field("name", "Bo")
    form.add_field("images", PNG, filename="bo.png", content_type="image/png")
    _, from_files = await call(http, "POST", f"{api}/characters", data=form)
    structure_data(from_files, Character, conv=STRICT)
    _, characters = await call(http, "GET", f"{api}/characters")
    assert len(structure(characters, Page[Character], conv=STRICT).data) == 2

    _, assets = await call(http, "GET", f"{api}/assets/search", params={"q": "cat"})
    assert structure(assets, Page[Asset], conv=STRICT).data
    _, history = await call(
        http, "GET", f"{api}/assets/search", params={"q": "surfing", "source": "history"}
    )
    history_page = structure(history, Page[Asset], conv=STRICT)
    assert [a.source for a in history_page.data] == ["history"]
