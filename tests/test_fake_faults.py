"""FakePrismServer.inject, spoken to in raw HTTP: faults where the server acts and the answer is
lost (``processed``), cut short (``truncate``) or garbled (``raw``).

These are the failures a paid POST must survive without paying twice: the server queued and
charged, but the client never learned it. Every test also checks that the fake answers normally
afterwards, and a guard fixture fails any test whose faults leave asyncio or aiohttp noise
behind (an exception handed to the loop's handler, or an error logged).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from prism_async.testing import MODEL_PRICES, FakePrismServer, Fault

PRICE = MODEL_PRICES["veo-3.1"]
BODY = {"prompt": "A surfing cat", "modelName": "veo-3.1"}
GARBAGE = b"HTTP/1.1 2OO GARBAGE\r\n\r\n"


@pytest.fixture(autouse=True)
async def no_noise(caplog: pytest.LogCaptureFixture) -> AsyncIterator[list[dict[str, Any]]]:
    """Fail the test if anything reaches the loop's exception handler or logs an error."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    caplog.set_level(logging.WARNING)
    yield reported
    gc.collect()  # "Task exception was never retrieved" is reported when a task is collected
    await asyncio.sleep(0)
    loop.set_exception_handler(previous)
    assert reported == []
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []


async def create(http: aiohttp.ClientSession, server: FakePrismServer) -> tuple[int, Any]:
    """POST /api/generations; its status and JSON body."""
    async with http.post(f"{server.base_url}/generations", json=BODY) as response:
        return response.status, await response.json()


async def assert_still_serving(http: aiohttp.ClientSession, server: FakePrismServer) -> None:
    """A normal create works (and charges) after the fault."""
    generations, credits = len(server.generations), server.credits
    status, payload = await create(http, server)
    assert status == 200, payload
    assert len(server.generations) == generations + 1
    assert server.credits == credits - PRICE


async def completed_video_url(http: aiohttp.ClientSession, server: FakePrismServer) -> str:
    """Create a generation, complete it, and return its presigned video URL."""
    status, payload = await create(http, server)
    assert status == 200
    generation_id = payload["data"]["generations"][0]["id"]
    server.complete_generation(generation_id)
    async with http.get(f"{server.base_url}/generations/{generation_id}") as response:
        return str((await response.json())["video_url"])


# -- processed: the server acts, then the answer is replaced or lost ---------------------------


async def test_processed_502_creates_and_charges_but_answers_502(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A processed 502 on create queues the generation and charges, while the client gets 502."""
    server.inject(
        "POST", "/api/generations", status=502, body="<html>Bad gateway</html>", processed=True
    )
    async with http.post(f"{server.base_url}/generations", json=BODY) as response:
        assert response.status == 502
        assert await response.text() == "<html>Bad gateway</html>"
    assert len(server.generations) == 1
    assert server.credits == 10_000 - PRICE
    await assert_still_serving(http, server)


async def test_unprocessed_502_does_nothing(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Without ``processed`` the fault answers instead of the handler: nothing is queued."""
    server.inject("POST", "/api/generations", status=502)
    status, _ = await create(http, server)
    assert status == 502
    assert server.generations == {}
    assert server.credits == 10_000


async def test_processed_drop_creates_and_charges_but_never_answers(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A processed drop queues and charges, then closes the connection without an answer."""
    server.inject("POST", "/api/generations", drop=True, processed=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await create(http, server)
    assert len(server.generations) == 1
    assert server.credits == 10_000 - PRICE
    await assert_still_serving(http, server)


async def test_processed_delay_acts_before_the_late_answer(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """With ``processed`` the generation exists while the delayed answer is still on its way."""
    server.inject("POST", "/api/generations", delay=0.3, processed=True)
    started = time.monotonic()
    pending = asyncio.create_task(create(http, server))
    async with asyncio.timeout(2):
        while not server.generations:
            await asyncio.sleep(0.01)
    assert not pending.done()
    status, payload = await pending
    assert time.monotonic() - started >= 0.3
    assert status == 200
    assert [g["id"] for g in payload["data"]["generations"]] == list(server.generations)


async def test_processed_502_on_storage_put_stores_the_file(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """Storage routes take processed faults too: the PUT stores the bytes, the client sees 503."""
    async with http.post(
        f"{server.base_url}/s3/presign-upload", json={"kind": "upload", "contentType": "image/png"}
    ) as response:
        presigned = await response.json()
    server.inject("PUT", "/storage/uploads/*", status=503, body=b"SlowDown", processed=True)
    headers = {"Content-Type": "image/png"}
    async with storage.put(presigned["upload_url"], data=b"png!", headers=headers) as response:
        assert response.status == 503
    assert server.objects[presigned["s3_key"]].data == b"png!"


# -- truncate: the real status and headers, part of the body, a closed connection --------------


async def test_truncated_create_is_an_incomplete_payload_and_the_generation_exists(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``truncate=10`` sends 200 with the full Content-Length but 10 bytes: ClientPayloadError."""
    server.inject("POST", "/api/generations", truncate=10)
    async with http.post(f"{server.base_url}/generations", json=BODY) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert response.content_length is not None
        assert response.content_length > 10
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert len(server.generations) == 1
    assert server.credits == 10_000 - PRICE
    await assert_still_serving(http, server)


async def test_truncate_zero_sends_headers_only(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``truncate=0`` sends the status line and headers, then closes before any body byte."""
    server.inject("GET", "/api/templates", truncate=0)
    async with http.get(f"{server.base_url}/templates") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    async with http.get(f"{server.base_url}/templates") as response:
        assert response.status == 200
        assert (await response.json())["data"]


async def test_truncated_video_download(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """A storage download cut after 1000 bytes fails mid-body; the next download is whole."""
    video_url = await completed_video_url(http, server)
    server.inject("GET", "/storage/videos/*", truncate=1000)
    async with storage.get(video_url) as response:
        assert response.status == 200
        assert response.content_length == len(server.video)
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    async with storage.get(video_url) as response:
        assert await response.read() == server.video


async def test_truncate_cuts_the_injected_answer_when_a_status_is_given(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """With ``status`` as well, the injected answer is the one cut short (the server acted)."""
    server.inject("POST", "/api/generations", status=500, body={"error": "x"}, truncate=4)
    async with http.post(f"{server.base_url}/generations", json=BODY) as response:
        assert response.status == 500
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert len(server.generations) == 1


# -- raw: exactly these bytes, then a closed connection ----------------------------------------


async def test_raw_garbage_status_line_is_a_client_response_error(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A garbage status line from a "proxy" is a ClientResponseError; unprocessed, nothing runs."""
    server.inject("POST", "/api/generations", raw=GARBAGE)
    with pytest.raises(aiohttp.ClientResponseError):
        await create(http, server)
    assert server.generations == {}
    assert server.credits == 10_000
    await assert_still_serving(http, server)


async def test_processed_raw_garbage_after_the_create(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """With ``processed`` the create happens, then the client gets garbage."""
    server.inject("POST", "/api/generations", raw=GARBAGE, processed=True)
    with pytest.raises(aiohttp.ClientResponseError):
        await create(http, server)
    assert len(server.generations) == 1
    assert server.credits == 10_000 - PRICE
    await assert_still_serving(http, server)


async def test_raw_can_be_a_complete_answer(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``raw`` is written as is: a well-formed answer is read like any other."""
    raw = b"HTTP/1.1 418 Teapot\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    server.inject("GET", "/api/templates", raw=raw)
    async with http.get(f"{server.base_url}/templates") as response:
        assert response.status == 418
        assert await response.json() == {}


# -- counting and arguments --------------------------------------------------------------------


async def test_times_counts_processed_faults(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``times=2`` truncates exactly two creates (both of which happen), then answers normally."""
    fault = server.inject("POST", "/api/generations", truncate=5, times=2)
    assert isinstance(fault, Fault)
    assert fault.processed
    for _ in range(2):
        with pytest.raises(aiohttp.ClientPayloadError):
            await create(http, server)
    assert fault.times == 0
    assert len(server.generations) == 2
    await assert_still_serving(http, server)
    assert len(server.requests_to("POST", "/api/generations")) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop": True, "raw": GARBAGE},
        {"drop": True, "truncate": 3},
        {"raw": GARBAGE, "truncate": 3},
        {"truncate": -1},
    ],
    ids=repr,
)
async def test_contradictory_faults_are_refused(kwargs: dict[str, Any]) -> None:
    """A fault ends its answer one way only, and cannot truncate to a negative length."""
    server = FakePrismServer()
    with pytest.raises(ValueError):
        server.inject("POST", "/api/generations", **kwargs)
