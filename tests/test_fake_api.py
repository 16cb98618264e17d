"""FakePrismServer across the whole API, in raw HTTP: auth, fault injection, the request log, and
every response fitting the SDK's models.

These tests never use the SDK client: they send what the documented API (prism-api.md) receives
and check what it answers, so that tests written against the fake prove something about the real
API. Every server runs with ``generation_seconds=100`` so that only :meth:`advance` moves a
generation along, never real time. (The faults that lose, cut or garble an answer after the
server acted are in test_fake_faults.py.)
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

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
from prism_async.testing import FakePrismServer
from tests.fake_http import (
    MB,
    PNG,
    SECONDS,
    assert_error,
    call,
    create,
    create_one,
    get_generation,
    presign,
    template_generate,
)

STRICT = make_converter(forbid_extra_keys=True)


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
    storage: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any,
    authorization: str | None,
) -> None:
    """Every /api endpoint answers 401 unauthorized without the exact Bearer key, doing nothing."""
    headers = {} if authorization is None else {"Authorization": authorization}
    status, payload = await call(
        storage, method, server.base_url + path, json=body, headers=headers
    )
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


async def test_custom_api_key_is_the_only_one_accepted(storage: aiohttp.ClientSession) -> None:
    """A server built with ``api_key=`` accepts that key and refuses the default one."""
    async with FakePrismServer(api_key="prism_sk_custom", generation_seconds=SECONDS) as server:
        url = f"{server.base_url}/templates"
        good = {"Authorization": "Bearer prism_sk_custom"}
        assert (await call(storage, "GET", url, headers=good))[0] == 200
        status, payload = await call(storage, "GET", url, headers={"Authorization": "Bearer x"})
        assert_error(status, payload, 401, "unauthorized")


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
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
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
    assert [a.id for a in history_page.data] == [running, doomed]  # completed and failed
    assert [a.source for a in history_page.data] == ["history", "history"]
