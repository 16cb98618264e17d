"""Every paid request accounted for: maybe_sent, ids from broken answers, traces, key safety."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses
from yarl import URL

from prism_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidRequestError,
    PrismClient,
    PrismError,
    ResponseValidationError,
    RetryPolicy,
)
from prism_async._errors import generation_ids_in
from prism_async._transport._http import HTTPClient
from prism_async._transport._outgoing import Outgoing
from tests import samples
from tests.conftest import API, KEY, NO_WAIT, assert_key_free, cancel_in_flight, free_port

RawServer = Callable[..., Awaitable[tuple[str, list[bytes]]]]
Serve = Callable[[web.Application], Awaitable[str]]
CREATE = f"{API}/generations"
ONCE = RetryPolicy(max_retries=0)
TWO_IDS = {
    "data": {
        "generations": [
            {"id": "gen_one", "asset_id": "a1", "request_id": "r1", "status": "queued"},
            {"id": "gen_two", "asset_id": "a2", "request_id": "r2", "status": "queued"},
        ],
        "metadata": {"credits_charged": 240},
    }
}


def answer(head: bytes, body: bytes = b"") -> Callable[..., Awaitable[None]]:
    """A raw-server behaviour: write ``head`` and ``body`` as the answer, then close."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head + body)
        await writer.drain()

    return behaviour


async def create(prism: PrismClient) -> Any:
    return await prism.generations.create(prompt="A cat", model_name="veo-3.1")


# -- item 1: maybe_sent on every error of a paid POST ------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "maybe_sent"),
    [
        (500, {"error": "server_error", "message": "boom"}, True),
        (502, "<html><h1>502 Bad Gateway</h1></html>", True),
        (504, "", True),
        (503, {"error": "free_tier_paused", "message": "paused"}, False),
        (400, {"error": "validation_error", "message": "bad"}, False),
        (402, {"error": "insufficient_credits", "message": "poor"}, False),
        (429, {"error": "rate_limited", "message": "slow"}, False),
    ],
)
async def test_status_errors_of_a_paid_post_say_whether_money_may_be_spent(
    mock: aioresponses, status: int, body: Any, maybe_sent: bool
) -> None:
    """5xx (but free_tier_paused) may have queued the video; a 4xx refusal did not."""
    if isinstance(body, str):
        mock.post(CREATE, status=status, body=body)
    else:
        mock.post(CREATE, status=status, payload=body)
    async with PrismClient(KEY, base_url=API, retry=ONCE) as prism:
        with pytest.raises(APIStatusError) as info:
            await create(prism)
    assert info.value.maybe_sent is maybe_sent
    assert info.value.generation_ids == ()


async def test_the_one_pattern_catches_an_html_gateway_page(mock: aioresponses) -> None:
    """`except PrismError: if exc.maybe_sent` sees a 502 HTML page (it was silently lost before)."""
    mock.post(CREATE, status=502, body="<html>Bad Gateway</html>", content_type="text/html")
    ambiguous: list[PrismError] = []
    async with PrismClient(KEY, base_url=API, retry=NO_WAIT) as prism:
        try:
            await create(prism)
        except PrismError as exc:
            if exc.maybe_sent:
                ambiguous.append(exc)
    assert len(ambiguous) == 1
    assert isinstance(ambiguous[0], InternalServerError)
    assert len(mock.requests[("POST", URL(CREATE))]) == 1  # never resent


async def test_unreadable_200_may_have_queued_and_keeps_the_ids(raw_server: RawServer) -> None:
    """A 200 cut short (no length: it looks complete) is a ResponseValidationError with the ids."""
    body = json.dumps(TWO_IDS).encode()
    cut = body[: body.index(b'"gen_two"') + 12]  # the second item is cut after its id
    root, received = await raw_server(
        answer(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n", cut
        )
    )
    async with PrismClient(KEY, base_url=f"{root}/api", retry=NO_WAIT) as prism:
        with pytest.raises(ResponseValidationError) as info:
            await create(prism)
    assert info.value.maybe_sent is True
    assert info.value.generation_ids == ("gen_one", "gen_two")
    assert len(received) == 1


async def test_truncated_payload_is_a_connection_error_with_the_ids(raw_server: RawServer) -> None:
    """A 200 whose body stops short of its Content-Length: maybe_sent, and the ids that arrived."""
    body = json.dumps(TWO_IDS).encode()
    cut = body[: body.index(b"gen_two") + 3]  # the second id is cut in half: not reported
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    root, received = await raw_server(answer(head, cut))
    async with PrismClient(KEY, base_url=f"{root}/api", retry=NO_WAIT) as prism:
        with pytest.raises(APIConnectionError) as info:
            await create(prism)
    assert info.value.maybe_sent is True
    assert info.value.generation_ids == ("gen_one",)
    assert len(received) == 1
    assert_key_free(info.value)


async def test_a_template_answer_that_does_not_fit_keeps_its_ids(mock: aioresponses) -> None:
    """A 2xx that parses but does not fit the model still names the queued generation ids."""
    broken = {**samples.TEMPLATE_GENERATE, "credits_charged": {"not": "a number"}}
    mock.post(f"{API}/templates/abc123/generate", payload=broken)
    async with PrismClient(KEY, base_url=API, retry=NO_WAIT) as prism:
        with pytest.raises(ResponseValidationError) as info:
            await prism.templates.generate("abc123", variables={"hook": "Hi"})
    assert info.value.maybe_sent is True
    assert info.value.generation_ids == ("gen_abc123", "gen_def456")


async def test_errors_that_sent_nothing_say_so(mock: aioresponses) -> None:
    """Bad input and a closed client have maybe_sent=False (and send nothing)."""
    prism = PrismClient(KEY, base_url=API, retry=NO_WAIT)
    with pytest.raises(InvalidRequestError) as bad:
        await prism.generations.create(prompt="", model_name="veo-3.1")
    assert bad.value.maybe_sent is False
    await prism.aclose()
    with pytest.raises(ClientClosedError) as closed:
        await create(prism)
    assert closed.value.maybe_sent is False
    assert isinstance(closed.value, RuntimeError)
    assert not mock.requests


async def test_a_refused_connection_was_not_sent() -> None:
    """A connection that could not be made has maybe_sent=False."""
    async with PrismClient(KEY, base_url=f"http://127.0.0.1:{free_port()}/api") as refused:
        with pytest.raises(APIConnectionError) as info:
            await create(refused)
    assert info.value.maybe_sent is False


@pytest.mark.parametrize(
    ("body", "ids"),
    [
        (samples.CREATE_GENERATION, ("gen_abc123",)),
        (samples.TEMPLATE_GENERATE, ("gen_abc123", "gen_def456")),
        (json.dumps(samples.TEMPLATE_GENERATE)[:70], ("gen_abc123",)),
        ('{"data": {"generations": [{"id": "gen_a"}, {"id": "gen_', ("gen_a",)),
        ('{"data": {"generations": [{"request_id": "r", "id": "gen_a", "asset_id": "x', ("gen_a",)),
        (b'{"generations": [{"generation_id": "gen_\\u0041"}]', ("gen_A",)),
        ("<html>502</html>", ()),
        ({"data": {"generations": "nope"}}, ()),
        (None, ()),
    ],
)
def test_generation_ids_in(body: Any, ids: tuple[str, ...]) -> None:
    """Ids come from whole items and from a cut item whose id arrived whole, never half an id."""
    assert generation_ids_in(body) == ids


# -- item 7: waiting for a pooled connection is not "sent" -------------------------------------


async def test_waiting_for_a_pooled_connection_is_not_sent(serve: Serve) -> None:
    """A POST that timed out only waiting for a busy pool has maybe_sent=False and is retried."""
    posts: list[web.Request] = []
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response(samples.GENERATION_COMPLETED)

    async def post(request: web.Request) -> web.Response:
        posts.append(request)
        return web.json_response(samples.CREATE_GENERATION)

    app = web.Application()
    app.router.add_get("/api/generations/{id}", slow)
    app.router.add_post("/api/generations", post)
    root = await serve(app)
    retry = RetryPolicy(max_retries=2, initial=0, max_wait=0)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session,
        PrismClient(KEY, base_url=f"{root}/api", session=session) as patient,
        PrismClient(
            KEY, base_url=f"{root}/api", timeout=0.4, session=session, retry=retry
        ) as prism,
    ):
        hog = asyncio.create_task(patient.generations.get("gen_slow"))  # the only connection
        await asyncio.sleep(0.05)
        with pytest.raises(APITimeoutError) as info:
            await create(prism)
        release.set()
        await hog
    assert info.value.maybe_sent is False  # so it was retried: 3 attempts, none reached the server
    assert "while connecting" in str(info.value)
    assert posts == []


async def test_slow_downloads_do_not_starve_api_calls(serve: Serve, tmp_path: Any) -> None:
    """With every API slot's worth of downloads stalled, a status request still goes through."""
    stalled = asyncio.Event()
    started = 0

    async def video(request: web.Request) -> web.StreamResponse:
        nonlocal started
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"x" * 10)
        started += 1
        if started == 2:
            stalled.set()
        await asyncio.sleep(30)
        return response

    async def status(request: web.Request) -> web.Response:
        return web.json_response(samples.GENERATION_COMPLETED)

    app = web.Application()
    app.router.add_get("/storage/{name}", video)
    app.router.add_get("/api/generations/{id}", status)
    root = await serve(app)
    async with PrismClient(KEY, base_url=f"{root}/api", max_connections=2) as prism:
        downloads = [
            asyncio.create_task(prism._http.download(f"{root}/storage/v{n}", tmp_path / f"{n}"))
            for n in range(2)
        ]
        await asyncio.wait_for(stalled.wait(), 5)
        generation = await asyncio.wait_for(prism.generations.get("gen_abc123"), 2)
        assert generation.is_completed
        for task in downloads:
            task.cancel()
        await asyncio.gather(*downloads, return_exceptions=True)


# -- item 12: a paid POST cancelled in flight leaves a trace --------------------------------


async def test_a_paid_post_cancelled_in_flight_is_logged(
    raw_server: RawServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelled after it left, a POST logs a WARNING (never the key) and notes the exception."""
    caplog.set_level(logging.WARNING, logger="prism_async")
    cancelled, received = await cancel_in_flight(raw_server, create)
    assert len(received) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "POST /api/generations" in warnings[0].getMessage()
    assert "may have" in warnings[0].getMessage()
    assert KEY not in caplog.text
    assert any("POST /api/generations" in note for note in cancelled.__notes__)


async def test_a_get_cancelled_in_flight_is_not_a_warning(
    raw_server: RawServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancelled status request costs nothing: no warning."""
    caplog.set_level(logging.DEBUG, logger="prism_async")
    await cancel_in_flight(raw_server, lambda prism: prism.generations.get("gen_1"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- item 2: the key is unreachable from every exception --------------------------------------


async def test_a_garbage_status_line_does_not_leak_the_key(raw_server: RawServer) -> None:
    """aiohttp's ClientResponseError shows the request headers: it is never chained."""
    root, _ = await raw_server(answer(b"HTTP/1.1 2OO GARBAGE\r\n\r\n"))
    async with PrismClient(KEY, base_url=f"{root}/api", retry=NO_WAIT) as prism:
        with pytest.raises(APIConnectionError) as info:
            await create(prism)
        with pytest.raises(APIConnectionError) as get_info:
            await prism.generations.get("gen_1")
    assert info.value.maybe_sent is True
    assert "2OO GARBAGE" in str(info.value)  # the bad status line (aiohttp words it its own way)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert_key_free(info.value)
    assert_key_free(get_info.value)


@pytest.mark.parametrize(
    "behaviour",
    [
        answer(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 5\r\n\r\n", b"oops!"),
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", b'{"data": '),
        answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"<html>"),
        answer(b"NOT HTTP AT ALL\r\n\r\n"),
        answer(b""),
    ],
)
async def test_no_failure_kind_leaks_the_key(
    raw_server: RawServer, behaviour: Callable[..., Awaitable[None]]
) -> None:
    """Whatever the server does, the SDK's exception chain never holds the key."""
    root, _ = await raw_server(behaviour)
    async with PrismClient(KEY, base_url=f"{root}/api", retry=NO_WAIT) as prism:
        with pytest.raises(PrismError) as info:
            await create(prism)
    assert_key_free(info.value)


async def test_storage_failures_do_not_leak_the_key(raw_server: RawServer, tmp_path: Any) -> None:
    """A download from a broken storage host fails without the key (or its signature) showing."""
    root, received = await raw_server(answer(b"HTTP/1.1 2OO GARBAGE\r\n\r\n"))
    async with PrismClient(KEY, base_url=API, retry=NO_WAIT) as prism:
        with pytest.raises(APIConnectionError) as info:
            await prism._http.download(f"{root}/v.mp4?X-Amz-Signature=sekrit", tmp_path / "v")
    assert_key_free(info.value)
    assert_key_free(info.value, "sekrit")
    assert all(b"Authorization" not in head for head in received)


# -- item 11: one send path --------------------------------------------------------------------


async def test_every_request_goes_through_one_send(
    serve: Serve, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """API calls, storage uploads and downloads all pass through HTTPClient._send."""
    seen: list[str] = []
    original = HTTPClient._send

    async def spy(self: HTTPClient, request: Outgoing[Any], number: int) -> Any:
        seen.append(f"{request.method} {request.url.path}")
        return await original(self, request, number)

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        if request.path.startswith("/api/"):
            return web.json_response(samples.GENERATION_COMPLETED)
        return web.Response(body=b"video")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    root = await serve(app)
    monkeypatch.setattr(HTTPClient, "_send", spy)
    async with PrismClient(KEY, base_url=f"{root}/api") as prism:
        await prism.generations.get("gen_1")
        await prism._http.put_storage(
            f"{root}/up", body=lambda: b"abc", size=3, content_type="image/png"
        )
        await prism._http.download(f"{root}/down", tmp_path / "v")
    assert seen == ["GET /api/generations/gen_1", "PUT /up", "GET /down"]


async def test_insufficient_credits_is_still_typed(mock: aioresponses) -> None:
    """The documented 402 keeps its class, code and message alongside maybe_sent."""
    mock.post(CREATE, status=402, payload={"error": "insufficient_credits", "message": "Poor"})
    async with PrismClient(KEY, base_url=API) as prism:
        with pytest.raises(InsufficientCreditsError) as info:
            await create(prism)
    assert (info.value.code, info.value.message, info.value.maybe_sent) == (
        "insufficient_credits",
        "Poor",
        False,
    )
