"""The SDK and the fake agree on every documented input rule (both read ``_rules.py``).

Each case gives a value to the SDK (a real client talking to :class:`FakePrismServer`) and sends
the same value raw, as it travels on the wire, with aiohttp straight to the fake. Either both
accept it (the SDK's request succeeds against the fake, and so does the raw one), or both
refuse it: the SDK with ``InvalidRequestError`` naming its snake_case argument before anything
is sent, the fake with ``400 validation_error`` whose message starts with the camelCase field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import pytest

from prism_async import InvalidRequestError, PrismClient, RetryPolicy, _rules
from prism_async._validation import normalize_duration
from prism_async.resources import uploads
from prism_async.testing import FakePrismServer

NO_WAIT = RetryPolicy(initial=0.0, max_wait=0.0, jitter=False)
URL = "https://example.test/a.png"

# A verdict: None when the value is accepted, else the name of the field refused.
Verdict = str | None


@pytest.fixture
async def prism(server: FakePrismServer) -> AsyncIterator[PrismClient]:
    """The SDK, pointed at the fake."""
    async with PrismClient(server.api_key, base_url=server.base_url, retry=NO_WAIT) as client:
        yield client


async def sdk_verdict(server: FakePrismServer, call: Awaitable[Any]) -> Verdict:
    """Run an SDK call: None when it succeeds, else the field its InvalidRequestError names.

    A refused call must not have sent anything.
    """
    sent = len(server.requests)
    try:
        await call
    except InvalidRequestError as exc:
        assert len(server.requests) == sent, "refused input must never leave the SDK"
        return exc.field
    return None


async def fake_verdict(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> Verdict:
    """Send a raw request: None when the fake answers 2xx, else the field its 400 names."""
    async with http.request(method, url, **kwargs) as response:
        payload = await response.json()
    if response.status < 300:
        return None
    assert response.status == 400, payload
    assert payload["error"] == "validation_error", payload
    field, _, reason = str(payload["message"]).partition(": ")
    assert reason, payload
    return field


def expect(accepted: bool, field: str) -> Verdict:
    """The verdict a side should reach: None, or ``field``."""
    return None if accepted else field


# -- create generation -------------------------------------------------------------------------


async def create_raw(http: aiohttp.ClientSession, server: FakePrismServer, **body: Any) -> Verdict:
    """POST /api/generations raw, with a valid prompt and modelName unless overridden."""
    full = {"prompt": "A cat", "modelName": "veo-3.1", **body}
    return await fake_verdict(http, "POST", f"{server.base_url}/generations", json=full)


DURATIONS = [
    # (given to the SDK, the wire form: what the SDK sends, or would send, accepted)
    (8, "8s", True),
    ("8", "8s", True),
    ("8s", "8s", True),
    (8.0, "8s", True),
    (" 10s ", "10s", True),
    (120, "120s", True),
    ("999s", "999s", True),
    (1, "1s", True),
    (7.5, "7.5s", False),
    ("7.5s", "7.5s", False),
    ("7.5", "7.5s", False),
    (0, "0s", False),
    ("0s", "0s", False),
    (-5, "-5s", False),
    ("08s", "08s", False),
    (1000, "1000s", False),
    ("eight", "eight", False),
    ("8m", "8m", False),
]


@pytest.mark.parametrize(("value", "wire", "accepted"), DURATIONS, ids=repr)
async def test_duration(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    value: Any,
    wire: str,
    accepted: bool,
) -> None:
    """Whole, positive seconds of 1 to 3 digits: '7.5s', 7.5 and '0s' are refused by both sides."""
    call = prism.generations.create(prompt="A cat", model_name="veo-3.1", duration=value)
    assert await sdk_verdict(server, call) == expect(accepted, "duration")
    if accepted:
        assert server.requests_to("POST", "/api/generations")[-1].json["duration"] == wire
    assert await create_raw(http, server, duration=wire) == expect(accepted, "duration")


def test_duration_reasons_are_clear() -> None:
    """The reason for a refused duration says what is wrong with it."""
    with pytest.raises(InvalidRequestError, match=r"whole, positive .*'7\.5s' \(not a whole"):
        normalize_duration(7.5)
    with pytest.raises(InvalidRequestError, match=r"got '0s' \(not positive\)"):
        normalize_duration("0s")
    with pytest.raises(InvalidRequestError, match=r"more than 3 digits"):
        normalize_duration(1000)
    assert normalize_duration(8.0) == "8s"
    assert _rules.duration_problem("8s") is None


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(ratio, True) for ratio in _rules.ASPECT_RATIOS]
    + [(bad, False) for bad in ("2:1", "9x16", "16:10", "AUTO", "", " 16:9")],
    ids=repr,
)
async def test_aspect_ratio(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    value: str,
    accepted: bool,
) -> None:
    """The seven documented aspect ratios, and nothing else."""
    call = prism.generations.create(prompt="A cat", model_name="veo-3.1", aspect_ratio=value)
    assert await sdk_verdict(server, call) == expect(accepted, "aspect_ratio")
    assert await create_raw(http, server, aspectRatio=value) == expect(accepted, "aspectRatio")


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (1, True),
        (2, True),
        (4, True),
        (0, False),
        (5, False),
        (-1, False),
        (True, False),
        ("2", False),
    ],
    ids=repr,
)
async def test_count(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    value: Any,
    accepted: bool,
) -> None:
    """An integer from 1 to 4 (a bool or a numeric string is not one)."""
    call = prism.generations.create(prompt="A cat", model_name="veo-3.1", count=value)
    assert await sdk_verdict(server, call) == expect(accepted, "count")
    assert await create_raw(http, server, count=value) == expect(accepted, "count")
    if accepted:
        assert len(server.generations) == 2 * value


@pytest.mark.parametrize(
    ("value", "accepted"), [("A cat", True), ("", False), ("   ", False), (None, False)], ids=repr
)
async def test_prompt_and_model_name_are_required_text(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    value: Any,
    accepted: bool,
) -> None:
    """``prompt`` and ``modelName`` are required, non-blank strings."""
    call = prism.generations.create(prompt=value, model_name="veo-3.1")
    assert await sdk_verdict(server, call) == expect(accepted, "prompt")
    assert await create_raw(http, server, prompt=value) == expect(accepted, "prompt")
    model = "veo-3.1" if accepted else value
    call = prism.generations.create(prompt="A cat", model_name=model)
    assert await sdk_verdict(server, call) == expect(accepted, "model_name")
    assert await create_raw(http, server, modelName=model) == expect(accepted, "modelName")


# -- uploads -----------------------------------------------------------------------------------


async def presign_raw(http: aiohttp.ClientSession, server: FakePrismServer, **body: Any) -> Verdict:
    """POST /api/s3/presign-upload raw."""
    return await fake_verdict(http, "POST", f"{server.base_url}/s3/presign-upload", json=body)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("image/png", True),
        ("image/jpeg", True),
        ("video/mp4", True),
        ("audio/mpeg", True),
        ("IMAGE/PNG", True),
        ("application/pdf", False),
        ("text/plain", False),
        ("image", False),
        ("imagery/png", False),
        (" image/png", False),
        ("", False),
    ],
    ids=repr,
)
async def test_content_type(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    value: str,
    accepted: bool,
) -> None:
    """image/*, video/* or audio/* (the type without regard to case, as MIME has it)."""
    assert await sdk_verdict(server, prism.uploads.presign(value)) == expect(
        accepted, "content_type"
    )
    verdict = await presign_raw(http, server, kind="upload", contentType=value)
    assert verdict == expect(accepted, "contentType")


@pytest.mark.parametrize(
    ("value", "accepted"), [("upload", True), ("avatar", False), ("UPLOAD", False), ("", False)]
)
async def test_presign_kind(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    value: str,
    accepted: bool,
) -> None:
    """The presign ``kind`` is ``upload``, the one documented value."""
    call = prism.uploads.presign("image/png", kind=value)
    assert await sdk_verdict(server, call) == expect(accepted, "kind")
    assert await presign_raw(http, server, kind=value, contentType="image/png") == expect(
        accepted, "kind"
    )


@pytest.mark.parametrize(
    ("content_type", "limit"),
    [("image/png", 20 * _rules.MB), ("video/mp4", 200 * _rules.MB), ("audio/mpeg", 50 * _rules.MB)],
)
async def test_upload_limits_are_the_fakes_max_bytes(
    http: aiohttp.ClientSession, server: FakePrismServer, content_type: str, limit: int
) -> None:
    """The SDK's documented limits (20/200/50 MB) are the max_bytes the fake presigns."""
    kind = content_type.split("/")[0]
    assert uploads.LIMITS[kind] == _rules.UPLOAD_LIMITS[kind] == limit
    body = {"kind": "upload", "contentType": content_type}
    async with http.post(f"{server.base_url}/s3/presign-upload", json=body) as response:
        assert (await response.json())["max_bytes"] == limit


async def test_upload_size_limit_is_one_value_for_both_sides(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One limit governs both: the SDK refuses one byte over it, the fake's storage too."""
    monkeypatch.setitem(_rules.UPLOAD_LIMITS, "image", 16)
    with pytest.raises(InvalidRequestError) as info:
        await prism.uploads.upload(b"x" * 17, content_type="image/png")
    assert info.value.field == "source"
    assert server.requests == []
    body = {"kind": "upload", "contentType": "image/png"}
    async with http.post(f"{server.base_url}/s3/presign-upload", json=body) as response:
        presigned = await response.json()
    headers = {"Content-Type": "image/png"}
    async with (
        aiohttp.ClientSession() as storage,
        storage.put(presigned["upload_url"], data=b"x" * 17, headers=headers) as put,
    ):
        assert put.status == 400
        assert "<Code>EntityTooLarge</Code>" in await put.text()
    uploaded = await prism.uploads.upload(b"x" * 16, content_type="image/png")
    assert server.objects[uploaded.s3_key].data == b"x" * 16


# -- characters --------------------------------------------------------------------------------


async def character_raw(
    http: aiohttp.ClientSession, server: FakePrismServer, **body: Any
) -> Verdict:
    """POST /api/characters raw (JSON), with a valid name and one image unless overridden."""
    full = {"name": "Ava", "images": [URL], **body}
    return await fake_verdict(http, "POST", f"{server.base_url}/characters", json=full)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("A", True),
        ("Ava", True),
        ("N" * 60, True),
        ("", False),
        ("   ", False),
        ("N" * 61, False),
        (" " * 59 + "Ava", False),
        (None, False),
    ],
    ids=repr,
)
async def test_character_name(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    value: Any,
    accepted: bool,
) -> None:
    """A name of 1 to 60 characters, not blank."""
    call = prism.characters.create(name=value, images=[URL])
    assert await sdk_verdict(server, call) == expect(accepted, "name")
    assert await character_raw(http, server, name=value) == expect(accepted, "name")


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(None, True), ("", True), ("Friendly", True), ("d" * 300, True), ("d" * 301, False)],
    ids=repr,
)
async def test_character_description(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    value: str | None,
    accepted: bool,
) -> None:
    """An optional description of at most 300 characters."""
    call = prism.characters.create(name="Ava", images=[URL], description=value)
    assert await sdk_verdict(server, call) == expect(accepted, "description")
    assert await character_raw(http, server, description=value) == expect(accepted, "description")


@pytest.mark.parametrize(("count", "accepted"), [(1, True), (10, True), (0, False), (11, False)])
async def test_character_image_count(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    count: int,
    accepted: bool,
) -> None:
    """A character is made from 1 to 10 images."""
    images = [f"https://example.test/{n}.png" for n in range(count)]
    call = prism.characters.create(name="Ava", images=images)
    assert await sdk_verdict(server, call) == expect(accepted, "images")
    assert await character_raw(http, server, images=images) == expect(accepted, "images")


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("https://example.test/a.png", True),
        ("http://example.test/a.png", True),
        ("HTTPS://EXAMPLE.TEST/A.PNG", True),
        ("ftp://example.test/a.png", False),
        ("https://", False),
        ("http:///a.png", False),
    ],
    ids=repr,
)
async def test_character_image_urls(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    value: str,
    accepted: bool,
) -> None:
    """Image URLs must be absolute http(s) URLs with a host."""
    call = prism.characters.create(name="Ava", images=[value])
    assert await sdk_verdict(server, call) == expect(accepted, "images[0]")
    assert await character_raw(http, server, images=[value]) == expect(accepted, "images[0]")


# -- listings and search -----------------------------------------------------------------------

PAGED = [
    ("templates", _rules.TEMPLATE_PAGING),
    ("characters", _rules.CHARACTER_PAGING),
    ("assets/search", _rules.ASSET_PAGING),
]


def sdk_listing(prism: PrismClient, path: str, **params: Any) -> Awaitable[Any]:
    """The SDK call listing ``path`` (asset search needs a query: ``cat`` unless given)."""
    if path == "templates":
        return prism.templates.list(**params)
    if path == "characters":
        return prism.characters.list(**params)
    return prism.assets.search(params.pop("q", "cat"), **params)


QUERIES = [("ab", True), ("cat", True), (" ab ", True), ("a", False), (" a ", False), ("", False)]


@pytest.mark.parametrize(("q", "accepted"), QUERIES, ids=repr)
async def test_search_text(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    q: str,
    accepted: bool,
) -> None:
    """``q`` has at least 2 characters besides blanks, on every endpoint that takes it."""
    for path, _ in PAGED:
        call = sdk_listing(prism, path, q=q)
        assert await sdk_verdict(server, call) == expect(accepted, "q")
        url = f"{server.base_url}/{path}"
        assert await fake_verdict(http, "GET", url, params={"q": q}) == expect(accepted, "q")


async def test_asset_search_needs_q(
    prism: PrismClient, server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Asset search requires ``q``: both sides refuse a search without one."""
    assert await sdk_verdict(server, prism.assets.search(None)) == "q"  # type: ignore[arg-type]
    assert await fake_verdict(http, "GET", f"{server.base_url}/assets/search") == "q"


@pytest.mark.parametrize(("path", "paging"), PAGED, ids=[p for p, _ in PAGED])
async def test_page_limits_and_offsets(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    path: str,
    paging: _rules.Paging,
) -> None:
    """``limit`` runs from 1 to the endpoint's maximum (100 or 60); ``offset`` is 0 or more."""
    url = f"{server.base_url}/{path}"
    base = {"q": "cat"} if path == "assets/search" else {}
    async with http.get(url, params=base) as response:
        pagination = (await response.json())["pagination"]
    assert pagination["limit"] == paging.default_limit
    cases = [(1, True), (paging.max_limit, True), (0, False), (paging.max_limit + 1, False)]
    for limit, accepted in cases:
        assert await sdk_verdict(server, sdk_listing(prism, path, limit=limit)) == expect(
            accepted, "limit"
        )
        params = {**base, "limit": str(limit)}
        assert await fake_verdict(http, "GET", url, params=params) == expect(accepted, "limit")
    for offset, accepted in [(0, True), (5, True), (-1, False)]:
        assert await sdk_verdict(server, sdk_listing(prism, path, offset=offset)) == expect(
            accepted, "offset"
        )
        params = {**base, "offset": str(offset)}
        assert await fake_verdict(http, "GET", url, params=params) == expect(accepted, "offset")


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [("type", choice, True) for choice in _rules.ASSET_TYPES]
    + [("source", choice, True) for choice in _rules.ASSET_SOURCES]
    + [("type", "audio", False), ("type", "ALL", False), ("type", "", False)]
    + [("source", "mine", False), ("source", "", False)],
    ids=repr,
)
async def test_asset_search_choices(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    field: str,
    value: str,
    accepted: bool,
) -> None:
    """Asset ``type`` is all/image/video and ``source`` is all/community/history."""
    options: dict[str, Any] = {field: value}
    call = prism.assets.search("cat", **options)
    assert await sdk_verdict(server, call) == expect(accepted, field)
    url = f"{server.base_url}/assets/search"
    params = {"q": "cat", field: value}
    assert await fake_verdict(http, "GET", url, params=params) == expect(accepted, field)


# -- template webhooks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("https://example.test/hook", True),
        ("http://127.0.0.1:9/hook", True),
        ("HTTPS://EXAMPLE.TEST/hook", True),
        ("not a url", False),
        ("ftp://example.test/hook", False),
        ("https://", False),
        ("", False),
    ],
    ids=repr,
)
async def test_webhook_url(
    prism: PrismClient,
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    value: str,
    accepted: bool,
) -> None:
    """``webhook_url`` is an absolute http(s) URL with a host."""
    call = prism.templates.generate("featured-ugc-pitch", variables={}, webhook_url=value)
    assert await sdk_verdict(server, call) == expect(accepted, "webhook_url")
    url = f"{server.base_url}/templates/featured-ugc-pitch/generate"
    body = {"variables": {}, "webhook_url": value}
    assert await fake_verdict(http, "POST", url, json=body) == expect(accepted, "webhook_url")


# -- one source ---------------------------------------------------------------------------------


def test_sdk_and_fake_read_the_same_values() -> None:
    """The SDK's and the fake's public names are the shared values, not copies."""
    import sys

    from prism_async import _validation

    assert _validation.ASPECT_RATIOS is _rules.ASPECT_RATIOS
    assert uploads.LIMITS is _rules.UPLOAD_LIMITS
    # Without importing the fake's private modules (their layout may change): every loaded one
    # that names UPLOAD_LIMITS holds the shared dict, and at least one does.
    fake_limits = [
        vars(module)["UPLOAD_LIMITS"]
        for name, module in list(sys.modules.items())
        if name.startswith("prism_async.testing.") and "UPLOAD_LIMITS" in vars(module)
    ]
    assert fake_limits
    assert all(limits is _rules.UPLOAD_LIMITS for limits in fake_limits)
