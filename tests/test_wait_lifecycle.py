"""How waits end: closing the client, leaving as_completed, cancellation, one retry layer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aioresponses import aioresponses

from prism_async import (
    AuthenticationError,
    ClientClosedError,
    Generation,
    GenerationBatch,
    GenerationFailedError,
    InvalidRequestError,
    LatencyEstimate,
    PollPolicy,
    PrismClient,
    PrismError,
    RetryPolicy,
    TemplateGeneration,
    TemplateGenerationBatch,
    WaitTimeoutError,
)
from tests import samples
from tests.conftest import API, KEY, assert_key_free, calls_to

Serve = Callable[[web.Application], Awaitable[str]]
SLOW = PollPolicy(initial_delay=0, interval=30, max_interval=30, jitter=0, timeout=600)
FAST = PollPolicy(initial_delay=0, interval=0.01, max_interval=0.02, jitter=0, timeout=5)


def status(generation_id: str, state: str) -> dict[str, Any]:
    body: dict[str, Any] = {**samples.GENERATION_RUNNING, "id": generation_id, "status": state}
    if state == "completed":
        body["video_url"] = f"https://storage.prism.test/{generation_id}.mp4"
    return body


def url(generation_id: str) -> str:
    return f"{API}/generations/{generation_id}"


@pytest.fixture
async def running_server(serve: Serve) -> tuple[str, list[str]]:
    """A server whose generations never finish; returns its API root and the paths it saw."""
    seen: list[str] = []

    async def get(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response(status(request.match_info["id"], "generating"))

    app = web.Application()
    app.router.add_get("/api/generations/{id}", get)
    return f"{await serve(app)}/api", seen


# -- item 4: closing the client ends running waits at once ------------------------------------


async def test_closing_the_client_ends_every_kind_of_wait_at_once(
    running_server: tuple[str, list[str]],
) -> None:
    """Waits asleep between polls end with ClientClosedError at aclose; nothing more is sent."""
    root, seen = running_server
    prism = PrismClient(KEY, base_url=root, poll=SLOW)

    async def first_of_as_completed() -> Any:
        async with prism.as_completed(["gen_c"]) as finished:
            async for generation in finished:
                return generation
        return None

    waits = [
        asyncio.create_task(prism.wait_for_generation("gen_a")),
        asyncio.create_task(prism.wait_for_generations(["gen_b1", "gen_b2"])),
        asyncio.create_task(first_of_as_completed()),
    ]
    while len(set(seen)) < 4:
        await asyncio.sleep(0.01)
    sent = len(seen)
    started = time.monotonic()
    await prism.aclose()
    results = await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 2)
    assert time.monotonic() - started < 0.5
    assert [type(r) for r in results] == [ClientClosedError] * 3
    assert all(isinstance(r, PrismError) for r in results)
    await asyncio.sleep(0.05)
    assert len(seen) == sent  # no request after aclose
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_closing_ends_a_wait_whose_status_request_hangs_on_a_borrowed_session(
    serve: Serve,
) -> None:
    """Even mid-request on a borrowed session (not closed by aclose), the wait ends at once."""
    import aiohttp

    arrived = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.sleep(10)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/generations/{id}", hang)
    root = await serve(app)
    async with aiohttp.ClientSession() as session:
        prism = PrismClient(KEY, base_url=f"{root}/api", poll=SLOW, session=session)
        wait = asyncio.create_task(prism.wait_for_generation("gen_1"))
        await arrived.wait()
        await prism.aclose()
        with pytest.raises(ClientClosedError):
            await asyncio.wait_for(wait, 0.5)
        assert not session.closed


async def test_a_wait_on_a_closed_client_is_refused(mock: aioresponses) -> None:
    """A wait started after aclose raises ClientClosedError without sending anything."""
    prism = PrismClient(KEY, base_url=API, poll=FAST)
    await prism.aclose()
    with pytest.raises(ClientClosedError):
        await prism.wait_for_generation("gen_1")
    with pytest.raises(ClientClosedError):
        await prism.wait_for_generations(["gen_1", "gen_2"])
    assert not mock.requests


async def test_cancelling_the_owner_still_wins_over_close(
    running_server: tuple[str, list[str]],
) -> None:
    """A wait cancelled by its owner as the client closes raises CancelledError, not ours."""
    root, seen = running_server
    prism = PrismClient(KEY, base_url=root, poll=SLOW)
    wait = asyncio.create_task(prism.wait_for_generation("gen_1"))
    while not seen:
        await asyncio.sleep(0.01)
    wait.cancel()
    await prism.aclose()
    with pytest.raises(asyncio.CancelledError):
        await wait


# -- items 3 and 5: as_completed ends cleanly ----------------------------------------------------


async def test_as_completed_leaves_no_unretrieved_task_exception(
    mock: aioresponses, loop_errors: list[dict[str, Any]]
) -> None:
    """When one wait's error ends as_completed, the others' errors are not left unretrieved."""
    for n in range(4):
        mock.get(url(f"gen_{n}"), status=401, payload={"error": "unauthorized", "message": "no"})
    async with PrismClient(KEY, base_url=API, poll=FAST) as prism:
        with pytest.raises(AuthenticationError):
            async for _ in prism.as_completed([f"gen_{n}" for n in range(4)]):
                pass
        await asyncio.sleep(0.05)
    gc.collect()
    await asyncio.sleep(0)
    assert loop_errors == []


async def test_bulk_waits_leave_no_unretrieved_task_exception(
    mock: aioresponses, loop_errors: list[dict[str, Any]]
) -> None:
    """wait_for_generations ending on a first error leaves no loop error behind either."""
    for n in range(4):
        mock.get(url(f"gen_{n}"), payload=status(f"gen_{n}", "failed"), repeat=True)
    async with PrismClient(KEY, base_url=API, poll=FAST) as prism:
        with pytest.raises(GenerationFailedError):
            await prism.wait_for_generations([f"gen_{n}" for n in range(4)])
        async with prism.as_completed([f"gen_{n}" for n in range(4)]) as finished:
            async for generation in finished:
                assert generation.is_failed
                break
    gc.collect()
    await asyncio.sleep(0)
    assert loop_errors == []


async def test_leaving_the_as_completed_block_stops_polling(
    mock: aioresponses, sleeps: list[float]
) -> None:
    """A break inside `async with prism.as_completed(...)` stops every other wait at once."""
    mock.get(url("gen_done"), payload=status("gen_done", "completed"))
    ids = [f"gen_{n}" for n in range(20)]
    for generation_id in ids:
        mock.get(url(generation_id), payload=status(generation_id, "generating"), repeat=True)
    async with PrismClient(KEY, base_url=API, poll=FAST) as prism:
        async with prism.as_completed(["gen_done", *ids]) as finished:
            async for generation in finished:
                assert generation.id == "gen_done"
                break
            still_referenced = finished  # the iterator is alive, the waits are not
        assert asyncio.all_tasks() == {asyncio.current_task()}
        sent = len(mock.requests)
        await asyncio.sleep(0.05)
        assert len(mock.requests) == sent
        assert still_referenced is finished


async def test_aclosing_works_too(mock: aioresponses, sleeps: list[float]) -> None:
    """contextlib.aclosing(prism.as_completed(...)) is the same as the async-with form."""
    mock.get(url("gen_done"), payload=status("gen_done", "completed"))
    mock.get(url("gen_run"), payload=status("gen_run", "generating"), repeat=True)
    async with PrismClient(KEY, base_url=API, poll=FAST) as prism:
        async with contextlib.aclosing(prism.as_completed(["gen_run", "gen_done"])) as finished:
            async for _ in finished:
                break
        assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_as_completed_checks_its_input_at_once(mock: aioresponses) -> None:
    """Bad ids are refused when as_completed is called, before any wait starts."""
    async with PrismClient(KEY, base_url=API) as prism:
        with pytest.raises(InvalidRequestError) as info:
            prism.as_completed(["gen_1", ""])
    assert info.value.field == "ids[1]"


# -- item 6: a caller's own timeout never loses ids ---------------------------------------------


async def test_create_and_wait_cancelled_keeps_its_ids(
    mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio.wait_for around create_and_wait: the ids are logged at WARNING and in the notes."""
    mock.post(f"{API}/generations", payload=samples.CREATE_GENERATION)
    mock.get(url("gen_abc123"), payload=status("gen_abc123", "generating"), repeat=True)
    caplog.set_level(logging.WARNING, logger="prism_async")
    queued: list[GenerationBatch] = []
    async with PrismClient(KEY, base_url=API, poll=FAST) as prism:
        with pytest.raises(TimeoutError) as info:
            await asyncio.wait_for(
                prism.generations.create_and_wait(
                    prompt="p", model_name="veo-3.1", on_queued=queued.append
                ),
                0.2,
            )
    assert [batch.ids for batch in queued] == [["gen_abc123"]]
    assert "gen_abc123" in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    chain: list[BaseException] = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    cancelled = [e for e in chain if isinstance(e, asyncio.CancelledError)]
    assert cancelled
    assert any("gen_abc123" in note for note in getattr(cancelled[0], "__notes__", []))


async def test_on_queued_may_be_async_and_comes_before_waiting(
    mock: aioresponses, sleeps: list[float]
) -> None:
    """An async on_queued is awaited with the batch before the first status request."""
    mock.post(f"{API}/generations", payload=samples.CREATE_GENERATION)
    mock.get(url("gen_abc123"), payload=status("gen_abc123", "completed"))
    order: list[str] = []

    async def record(batch: GenerationBatch) -> None:
        await asyncio.sleep(0)
        order.append(f"queued {batch.ids[0]} after {len(calls_to(mock, 'GET', url(batch.ids[0])))}")

    async with PrismClient(KEY, base_url=API, poll=FAST) as prism:
        (video,) = await prism.generations.create_and_wait(
            prompt="p", model_name="veo-3.1", on_queued=record
        )
    assert video.is_completed
    assert order == ["queued gen_abc123 after 0"]


async def test_create_and_wait_errors_carry_the_ids(mock: aioresponses) -> None:
    """A PrismError ending create_and_wait says money was spent and which generations."""
    mock.post(f"{API}/generations", payload=samples.CREATE_GENERATION)
    mock.get(url("gen_abc123"), payload=status("gen_abc123", "generating"), repeat=True)
    async with PrismClient(KEY, base_url=API, poll=FAST) as prism:
        with pytest.raises(WaitTimeoutError) as info:
            await prism.generations.create_and_wait(prompt="p", model_name="veo-3.1", timeout=0.1)
    assert info.value.maybe_sent is True
    assert info.value.generation_ids == ("gen_abc123",)
    assert_key_free(info.value)


# -- item 8: one retry layer per status request ---------------------------------------------


async def test_a_status_request_in_a_wait_is_one_attempt(
    mock: aioresponses, sleeps: list[float]
) -> None:
    """Four 503s cost four polls spaced by the wait's backoff, not a burst of HTTP retries."""
    for _ in range(4):
        mock.get(url("gen_1"), status=503, body="busy")
    mock.get(url("gen_1"), payload=status("gen_1", "completed"))
    async with PrismClient(KEY, base_url=API, poll=FAST, retry=RetryPolicy()) as prism:
        assert (await prism.wait_for_generation("gen_1")).is_completed
    assert len(calls_to(mock, "GET", url("gen_1"))) == 5
    assert len(sleeps) == 5  # the initial delay, then one backoff per failed poll


async def test_retry_after_on_a_503_stretches_the_poll_delay(
    mock: aioresponses, sleeps: list[float]
) -> None:
    """Retry-After is honoured on any status, not only on 429."""
    mock.get(url("gen_1"), status=503, headers={"Retry-After": "7"}, body="busy")
    mock.get(url("gen_1"), payload=status("gen_1", "completed"))
    async with PrismClient(KEY, base_url=API, poll=FAST) as prism:
        await prism.wait_for_generation("gen_1")
    assert sleeps[1] == 7.0


async def test_a_plain_get_still_retries(mock: aioresponses) -> None:
    """Outside a wait, generations.get keeps its HTTP retries."""
    mock.get(url("gen_1"), status=503, body="busy")
    mock.get(url("gen_1"), payload=status("gen_1", "completed"))
    retry = RetryPolicy(initial=0, max_wait=0, jitter=False)
    async with PrismClient(KEY, base_url=API, retry=retry) as prism:
        generation: Generation = await prism.generations.get("gen_1")
    assert generation.is_completed


# -- item 9: honest settings ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["retry", "timeout", "base_url", "poll", "webhooks"])
def test_settings_are_read_only(name: str) -> None:
    """Assigning a setting raises instead of silently changing nothing."""
    prism = PrismClient(KEY, base_url=API)
    with pytest.raises(AttributeError):
        setattr(prism, name, getattr(prism, name))


async def test_an_explicit_default_policy_is_not_replaced_by_the_estimate(
    mock: aioresponses, sleeps: list[float]
) -> None:
    """PrismClient(poll=PollPolicy()) is a choice: a template estimate does not override it."""
    mock.get(url("gen_t"), payload=status("gen_t", "generating"))
    mock.get(url("gen_t"), payload=status("gen_t", "completed"))
    batch = TemplateGenerationBatch(
        generations=[TemplateGeneration(generation_id="gen_t")],
        latency_estimate=LatencyEstimate(typical=120, busy=300),
    )
    explicit = PollPolicy(jitter=0, learn=False)
    async with PrismClient(KEY, base_url=API, poll=explicit) as prism:
        await prism.wait_for_generations(batch)
    assert sleeps == [5.0, 5.0]
    sleeps.clear()
    mock.get(url("gen_t"), payload=status("gen_t", "generating"))
    mock.get(url("gen_t"), payload=status("gen_t", "completed"))
    async with PrismClient(KEY, base_url=API) as prism:  # no policy chosen: the estimate paces
        await prism.wait_for_generations(batch)
    assert 18.0 <= sleeps[1] <= 22.0
