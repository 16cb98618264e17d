"""The HTTP layer against real sockets on loopback: quoting, failures, maybe_sent, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from prism_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    InternalServerError,
    PrismClient,
    ResponseValidationError,
    RetryPolicy,
)
from prism_async._transport._http import HTTPClient, quote_segment
from prism_async._transport._responses import translate as _translate
from prism_async.testing import instant_waits
from tests import samples
from tests.conftest import KEY, NO_WAIT, cancel_in_flight, free_port

Serve = Callable[[web.Application], Awaitable[str]]
RawServer = Callable[..., Awaitable[tuple[str, list[bytes]]]]


@pytest.fixture(autouse=True)
def no_sleep() -> Iterator[None]:
    """Retries in these tests do not wait."""
    with instant_waits():
        yield


def recording_app(seen: list[web.Request], reply: Any = None) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        await request.read()
        return web.json_response(reply if reply is not None else samples.GENERATION_COMPLETED)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.mark.parametrize(
    ("generation_id", "raw_path"),
    [
        ("../templates", "/api/generations/..%2Ftemplates"),
        ("..", "/api/generations/%2E%2E"),
        (".", "/api/generations/%2E"),
        ("a/b?c=d#e", "/api/generations/a%2Fb%3Fc%3Dd%23e"),
        ("gen abc", "/api/generations/gen%20abc"),
        ("gen_abc123", "/api/generations/gen_abc123"),
    ],
)
async def test_ids_are_quoted_and_never_reach_another_endpoint(
    serve: Serve, generation_id: str, raw_path: str
) -> None:
    """An id is one quoted path segment: '../templates' cannot climb to /api/templates."""
    seen: list[web.Request] = []
    root = await serve(recording_app(seen))
    async with PrismClient(KEY, base_url=f"{root}/api") as prism:
        await prism.generations.get(generation_id)
    assert [request.raw_path for request in seen] == [raw_path]
    assert seen[0].match_info["tail"].startswith("api/generations/")


async def test_connection_refused_is_not_sent_and_post_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused connections give maybe_sent=False, and even a paid POST is retried then."""
    attempts: list[int] = []
    original = HTTPClient._send

    async def counting(self: HTTPClient, *args: Any) -> Any:
        attempts.append(args[-1])
        return await original(self, *args)

    monkeypatch.setattr(HTTPClient, "_send", counting)
    base = f"http://127.0.0.1:{free_port()}/api"
    async with PrismClient(KEY, base_url=base, retry=NO_WAIT) as prism:
        with pytest.raises(APIConnectionError) as info:
            await prism.generations.create(prompt="p", model_name="veo-3.1")
    assert info.value.maybe_sent is False
    assert not isinstance(info.value, APITimeoutError)
    assert "could not connect" in str(info.value)
    assert attempts == [1, 2, 3, 4]


async def test_post_dropped_after_sending_is_sent_once(raw_server: RawServer) -> None:
    """A server that reads the POST then drops the connection sees it exactly once."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None

    root, received = await raw_server(drop)
    async with PrismClient(KEY, base_url=f"{root}/api", retry=NO_WAIT) as prism:
        with pytest.raises(APIConnectionError) as info:
            await prism.generations.create(prompt="p", model_name="veo-3.1")
    assert info.value.maybe_sent is True
    assert len(received) == 1
    assert received[0].startswith(b"POST /api/generations ")


async def test_get_dropped_after_sending_is_retried(raw_server: RawServer) -> None:
    """A GET dropped mid-flight is retried up to max_retries."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None

    root, received = await raw_server(drop)
    async with PrismClient(KEY, base_url=f"{root}/api", retry=NO_WAIT) as prism:
        with pytest.raises(APIConnectionError) as info:
            await prism.generations.get("gen_1")
    assert info.value.maybe_sent is True
    assert len(received) >= 4  # 1 + max_retries attempts (aiohttp may add its own GET retry)


async def test_post_timeout_after_sending_is_sent_once(raw_server: RawServer) -> None:
    """A POST whose answer never comes times out with maybe_sent=True and is not resent."""

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    root, received = await raw_server(stall)
    async with PrismClient(KEY, base_url=f"{root}/api", timeout=0.3, retry=NO_WAIT) as prism:
        with pytest.raises(APITimeoutError) as info:
            await prism.generations.create(prompt="p", model_name="veo-3.1")
    assert isinstance(info.value, TimeoutError)
    assert info.value.maybe_sent is True
    assert len(received) == 1


async def test_get_timeout_is_retried(raw_server: RawServer) -> None:
    """A GET that times out is retried."""

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    root, received = await raw_server(stall)
    policy = RetryPolicy(max_retries=1, initial=0, max_wait=0, jitter=False)
    async with PrismClient(KEY, base_url=f"{root}/api", timeout=0.2, retry=policy) as prism:
        with pytest.raises(APITimeoutError):
            await prism.generations.get("gen_1")
    assert len(received) == 2


async def test_connect_timeout_counts_as_not_sent() -> None:
    """A timeout while still connecting (a full accept queue) gives maybe_sent=False."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue so later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        policy = RetryPolicy(max_retries=0)
        async with PrismClient(
            KEY, base_url=f"http://127.0.0.1:{port}/api", timeout=0.6, retry=policy
        ) as prism:
            with pytest.raises(APITimeoutError) as info:
                await prism.generations.create(prompt="p", model_name="veo-3.1")
        assert info.value.maybe_sent is False
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_translation_of_aiohttp_failures() -> None:
    """Every aiohttp failure kind maps to the right error and maybe_sent."""
    connect_timeout = _translate(aiohttp.ConnectionTimeoutError("x"), "POST /x")
    assert isinstance(connect_timeout, APITimeoutError)
    assert connect_timeout.maybe_sent is False
    read_timeout = _translate(aiohttp.SocketTimeoutError("x"), "POST /x")
    assert isinstance(read_timeout, APITimeoutError)
    assert read_timeout.maybe_sent is True
    plain_timeout = _translate(TimeoutError(), "POST /x")
    assert isinstance(plain_timeout, APITimeoutError)
    assert plain_timeout.maybe_sent is True
    reset = _translate(aiohttp.ClientOSError(104, "Connection reset by peer"), "POST /x")
    assert type(reset) is APIConnectionError
    assert reset.maybe_sent is True
    payload = _translate(aiohttp.ClientPayloadError("truncated"), "GET /x")
    assert type(payload) is APIConnectionError
    assert payload.maybe_sent is True


async def test_cancellation_mid_request_passes_through(raw_server: RawServer) -> None:
    """Cancelling a request in flight raises CancelledError, unwrapped, and sends no retry."""
    cancelled, received = await cancel_in_flight(
        raw_server, lambda prism: prism.generations.create(prompt="p", model_name="veo-3.1")
    )
    assert type(cancelled) is asyncio.CancelledError
    assert len(received) == 1


async def test_non_json_success_body_is_a_validation_error(serve: Serve) -> None:
    """A 200 with an HTML body raises ResponseValidationError carrying the text."""

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/api/generations/{id}", html)
    root = await serve(app)
    async with PrismClient(KEY, base_url=f"{root}/api") as prism:
        with pytest.raises(ResponseValidationError) as info:
            await prism.generations.get("gen_1")
    assert info.value.body == "<html>maintenance</html>"


async def test_proxy_error_page_gives_typed_error(serve: Serve) -> None:
    """A 502 HTML page from a proxy is an InternalServerError with the raw text."""

    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<h1>Bad Gateway</h1>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/api/generations/{id}", bad_gateway)
    root = await serve(app)
    async with PrismClient(KEY, base_url=f"{root}/api", retry=RetryPolicy(max_retries=0)) as prism:
        with pytest.raises(InternalServerError) as info:
            await prism.generations.get("gen_1")
    assert info.value.status_code == 502
    assert "Bad Gateway" in info.value.message


async def test_redirects_are_not_followed_so_the_key_stays_home(serve: Serve) -> None:
    """A 3xx from the API is reported, never followed: the key is not sent to another host."""
    elsewhere: list[web.Request] = []
    other = await serve(recording_app(elsewhere))

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{other}/steal")

    app = web.Application()
    app.router.add_get("/api/generations/{id}", redirect)
    root = await serve(app)
    async with PrismClient(KEY, base_url=f"{root}/api") as prism:
        with pytest.raises(APIStatusError) as info:
            await prism.generations.get("gen_1")
    assert info.value.status_code == 302
    assert elsewhere == []


async def test_json_body_and_headers_on_the_wire(serve: Serve) -> None:
    """The create body arrives as compact camelCase JSON with the right headers."""
    seen: list[web.Request] = []
    bodies: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        bodies.append(json.loads(await request.read()))
        return web.json_response(samples.CREATE_GENERATION)

    app = web.Application()
    app.router.add_post("/api/generations", handler)
    root = await serve(app)
    async with PrismClient(KEY, base_url=f"{root}/api") as prism:
        await prism.generations.create(prompt="p", model_name="veo-3.1", duration=8, count=2)
    assert bodies == [{"prompt": "p", "modelName": "veo-3.1", "duration": "8s", "count": 2}]
    assert seen[0].headers["Content-Type"] == "application/json"
    assert seen[0].headers["Authorization"] == f"Bearer {KEY}"


def test_quote_segment() -> None:
    """quote_segment escapes separators and pure-dot segments."""
    assert quote_segment("../x") == "..%2Fx"
    assert quote_segment("..") == "%2E%2E"
    assert quote_segment("featured-ugc-pitch") == "featured-ugc-pitch"


async def test_slots_bound_calls_in_flight_and_hand_over_in_order() -> None:
    """The slot queue is FIFO, hands slots over directly, and survives cancelled waiters."""
    from prism_async._transport._slots import Slots

    slots = Slots(1)
    assert slots.try_acquire()
    assert not slots.try_acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        await slots.acquire()
        order.append(name)

    first = asyncio.create_task(take("first"))
    cancelled = asyncio.create_task(take("cancelled"))
    last = asyncio.create_task(take("last"))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    slots.release()  # to "first"
    await first
    slots.release()  # "cancelled" is gone: to "last"
    await last
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert order == ["first", "last"]
    slots.release()
    assert slots.try_acquire()


async def test_api_calls_in_flight_never_exceed_max_connections(serve: Serve) -> None:
    """With max_connections=3, a server sees at most 3 requests at once, whatever the load."""
    active = 0
    peak = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return web.json_response(samples.GENERATION_COMPLETED)

    app = web.Application()
    app.router.add_get("/api/generations/{id}", slow)
    root = await serve(app)
    async with PrismClient(KEY, base_url=f"{root}/api", max_connections=3) as prism:
        await asyncio.gather(*(prism.generations.get(f"gen_{n}") for n in range(30)))
    assert peak == 3


async def test_slots_survive_a_release_between_cancel_and_wakeup() -> None:
    """A waiter cancelled and then skipped by release() still just raises CancelledError."""
    from prism_async._transport._slots import Slots

    slots = Slots(1)
    assert slots.try_acquire()
    waiting = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiting.cancel()  # its future is cancelled now; the task runs its cleanup later
    slots.release()  # skips the cancelled waiter and frees the slot
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert slots.try_acquire()


async def test_closing_the_slots_ends_queued_calls() -> None:
    """Calls queued for a slot when the client closes end with ClientClosedError."""
    from prism_async import ClientClosedError
    from prism_async._transport._slots import Slots

    slots = Slots(1)
    assert slots.try_acquire()
    queued = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.close()
    with pytest.raises(ClientClosedError):
        await queued
    slots.release()
    assert slots.try_acquire()
