"""Waiting for generations: completion, failure, timeouts, transient errors, cancellation, scale."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses

from prism_async import (
    AuthenticationError,
    Generation,
    GenerationFailedError,
    InvalidRequestError,
    LatencyEstimate,
    NotFoundError,
    PollPolicy,
    PrismClient,
    RetryPolicy,
    TemplateGeneration,
    TemplateGenerationBatch,
    WaitTimeoutError,
    wait_for_generation,
)
from tests import samples
from tests.conftest import API, KEY, calls_to

Serve = Callable[[web.Application], Awaitable[str]]
FAST = PollPolicy(initial_delay=0, interval=0.01, max_interval=0.02, jitter=0, timeout=5)
ONCE = RetryPolicy(max_retries=0)


def status(generation_id: str, state: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {**samples.GENERATION_RUNNING, "id": generation_id, "status": state}
    if state == "completed":
        body["video_url"] = f"https://storage.prism.test/{generation_id}.mp4"
    if state == "failed":
        body["error"] = "Generation timed out"
    body.update(extra)
    return body


def url(generation_id: str) -> str:
    return f"{API}/generations/{generation_id}"


@pytest.fixture
async def prism() -> Any:
    async with PrismClient(KEY, base_url=API, retry=ONCE, poll=FAST) as client:
        yield client


async def test_completes_and_reports_each_status_change(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """The wait returns the completed generation; on_update sees each new status once."""
    for state in ("queued", "generating", "generating", "completed"):
        mock.get(url("gen_1"), payload=status("gen_1", state))
    seen: list[str] = []
    generation = await prism.wait_for_generation("gen_1", on_update=lambda g: seen.append(g.status))
    assert generation.is_completed
    assert generation.video_url == "https://storage.prism.test/gen_1.mp4"
    assert seen == ["queued", "generating", "completed"]
    assert len(calls_to(mock, "GET", url("gen_1"))) == 4


async def test_async_on_update_is_awaited(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """An async on_update callback is awaited, with the final state at least."""
    mock.get(url("gen_1"), payload=status("gen_1", "completed"))
    seen: list[str] = []

    async def record(generation: Generation) -> None:
        await asyncio.sleep(0)
        seen.append(generation.status)

    await wait_for_generation(prism, "gen_1", on_update=record)
    assert seen == ["completed"]


async def test_failed_raises_with_the_generation(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """A failed generation raises GenerationFailedError carrying it and its error text."""
    mock.get(url("gen_1"), payload=status("gen_1", "generating"))
    mock.get(url("gen_1"), payload=status("gen_1", "failed"))
    with pytest.raises(GenerationFailedError) as info:
        await prism.wait_for_generation("gen_1")
    assert info.value.generation.error == "Generation timed out"
    assert info.value.generation.id == "gen_1"


async def test_unknown_statuses_mean_not_done(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """A status string the SDK does not know keeps the wait going."""
    mock.get(url("gen_1"), payload=status("gen_1", "upscaling"))
    mock.get(url("gen_1"), payload=status("gen_1", "completed"))
    assert (await prism.wait_for_generation("gen_1")).is_completed


async def test_transient_failures_never_end_the_wait(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """5xx, 429, 408, drops, timeouts and a garbled body are survived; the video is not lost."""
    mock.get(url("gen_1"), status=500, payload={"error": "server_error", "message": "x"})
    mock.get(url("gen_1"), status=429, payload={"error": "rate_limited", "message": "x"})
    mock.get(url("gen_1"), status=502, body="<html>bad gateway</html>")
    mock.get(url("gen_1"), status=408, body="")
    mock.get(url("gen_1"), exception=aiohttp.ServerDisconnectedError())
    mock.get(url("gen_1"), exception=TimeoutError())
    mock.get(url("gen_1"), body="<html>maintenance</html>")
    mock.get(url("gen_1"), payload=status("gen_1", "completed"))
    assert (await prism.wait_for_generation("gen_1")).is_completed
    assert len(calls_to(mock, "GET", url("gen_1"))) == 8


@pytest.mark.parametrize(
    ("code", "error", "cls"),
    [(404, "not_found", NotFoundError), (401, "unauthorized", AuthenticationError)],
)
async def test_not_found_and_auth_errors_end_the_wait_at_once(
    prism: PrismClient,
    mock: aioresponses,
    sleeps: list[float],
    code: int,
    error: str,
    cls: type[Exception],
) -> None:
    """404 and 401 are answers, not blips: raised after one status request."""
    mock.get(url("gen_x"), status=code, payload={"error": error, "message": "no"})
    mock.get(url("gen_x"), payload=status("gen_x", "completed"))
    with pytest.raises(cls):
        await prism.wait_for_generation("gen_x")
    assert len(calls_to(mock, "GET", url("gen_x"))) == 1


async def test_timeout_raises_with_the_last_state(prism: PrismClient, mock: aioresponses) -> None:
    """Past its timeout the wait raises WaitTimeoutError (a TimeoutError) with the last state."""
    mock.get(url("gen_1"), payload=status("gen_1", "generating"), repeat=True)
    with pytest.raises(WaitTimeoutError) as info:
        await prism.wait_for_generation("gen_1", timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    assert info.value.generation_id == "gen_1"
    assert info.value.last is not None
    assert info.value.last.status == "generating"


async def test_timeout_before_any_answer_has_no_last_state(serve: Serve) -> None:
    """The deadline fires on time even while a status request hangs; .last is then None."""

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/generations/{id}", hang)
    root = await serve(app)
    async with PrismClient(KEY, base_url=f"{root}/api", poll=FAST) as prism:
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError) as info:
            await prism.wait_for_generation("gen_1", timeout=0.3)
        elapsed = time.monotonic() - started
    assert info.value.last is None
    assert elapsed < 2.0  # the client's own 60 s request timeout did not hold it up


async def test_cancellation_stops_polling_and_leaves_no_task(
    prism: PrismClient, mock: aioresponses
) -> None:
    """Cancelling the awaiting task stops the loop: no further request, no task left behind."""
    mock.get(url("gen_1"), payload=status("gen_1", "generating"), repeat=True)
    task = asyncio.create_task(prism.wait_for_generation("gen_1", timeout=30))
    while not calls_to(mock, "GET", url("gen_1")):
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(calls_to(mock, "GET", url("gen_1")))
    await asyncio.sleep(0.1)
    assert len(calls_to(mock, "GET", url("gen_1"))) == count
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_backoff_schedule_grows_to_max_interval(
    mock: aioresponses, sleeps: list[float]
) -> None:
    """initial_delay first, then interval growing by multiplier, capped at max_interval."""
    for _ in range(5):
        mock.get(url("gen_1"), payload=status("gen_1", "generating"))
    mock.get(url("gen_1"), payload=status("gen_1", "completed"))
    policy = PollPolicy(
        initial_delay=5, interval=5, max_interval=12, multiplier=1.5, jitter=0, learn=False
    )
    async with PrismClient(KEY, base_url=API, poll=policy) as prism:
        await prism.wait_for_generation("gen_1")
    assert sleeps == [5.0, 5.0, 7.5, 11.25, 12.0, 12.0]


async def test_jitter_spreads_the_first_poll_too(mock: aioresponses, sleeps: list[float]) -> None:
    """With jitter, waits started together do not poll at the same instant."""
    ids = [f"gen_{n}" for n in range(20)]
    for generation_id in ids:
        mock.get(url(generation_id), payload=status(generation_id, "completed"))
    policy = PollPolicy(initial_delay=5, jitter=0.1, learn=False)
    async with PrismClient(KEY, base_url=API, poll=policy) as prism:
        await prism.wait_for_generations(ids)
    assert len(sleeps) == 20
    assert all(4.5 <= delay <= 5.5 for delay in sleeps)
    assert len(set(sleeps)) > 10


async def test_retry_after_stretches_the_poll_delay(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """A 429 with Retry-After makes the next poll wait at least that long."""
    mock.get(url("gen_1"), status=429, headers={"Retry-After": "3"}, payload={"error": "slow"})
    mock.get(url("gen_1"), payload=status("gen_1", "completed"))
    await prism.wait_for_generation("gen_1")
    assert sleeps[1] == 3.0


def test_latency_estimate_tunes_the_cadence() -> None:
    """typical / 6, clamped to 10-30 s, as a steady interval; no estimate changes nothing."""
    base = PollPolicy()
    assert PollPolicy.from_latency_estimate(LatencyEstimate(typical=90, busy=240)).interval == 15
    assert PollPolicy.from_latency_estimate(LatencyEstimate(typical=12)).interval == 10
    assert PollPolicy.from_latency_estimate(LatencyEstimate(typical=600)).max_interval == 30
    assert PollPolicy.from_latency_estimate(None, base) is base
    assert PollPolicy.from_latency_estimate(LatencyEstimate(typical=None), base) is base
    tuned = PollPolicy.from_latency_estimate(LatencyEstimate(typical=120), base)
    assert (tuned.multiplier, tuned.timeout, tuned.initial_delay) == (1.0, 900.0, 5.0)


def slow_template_batch(mock: aioresponses) -> TemplateGenerationBatch:
    """A template batch estimated at 120 s whose one generation completes at the second poll."""
    mock.get(url("gen_t"), payload=status("gen_t", "generating"))
    mock.get(url("gen_t"), payload=status("gen_t", "completed"))
    return TemplateGenerationBatch(
        generations=[TemplateGeneration(generation_id="gen_t")],
        latency_estimate=LatencyEstimate(typical=120, busy=300),
    )


async def test_template_batch_is_waited_on_with_its_estimate(
    mock: aioresponses, sleeps: list[float]
) -> None:
    """Passing a TemplateGenerationBatch uses its latency estimate for the cadence."""
    batch = slow_template_batch(mock)
    async with PrismClient(KEY, base_url=API) as prism:  # the default policy
        (done,) = await prism.wait_for_generations(batch)
    assert done.id == "gen_t"
    first, second = sleeps
    assert first == 0.0  # an id this client did not create: its status says how old it is
    assert 18.0 <= second <= 22.0  # no history: 120 / 6 = 20 s, +/-10% jitter


async def test_wait_for_generations_keeps_input_order(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """Results come back in input order, whatever the completion order; duplicates poll once."""
    mock.get(url("gen_slow"), payload=status("gen_slow", "generating"))
    mock.get(url("gen_slow"), payload=status("gen_slow", "generating"))
    mock.get(url("gen_slow"), payload=status("gen_slow", "completed"))
    mock.get(url("gen_fast"), payload=status("gen_fast", "completed"))
    results = await prism.wait_for_generations(["gen_slow", "gen_fast", "gen_slow"])
    assert [generation.id for generation in results] == ["gen_slow", "gen_fast", "gen_slow"]
    assert len(calls_to(mock, "GET", url("gen_slow"))) == 3


async def test_return_exceptions_puts_errors_in_place(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """With return_exceptions=True a failed generation's error stands in its place."""
    mock.get(url("gen_ok"), payload=status("gen_ok", "completed"))
    mock.get(url("gen_bad"), payload=status("gen_bad", "failed"))
    results = await prism.wait_for_generations(["gen_bad", "gen_ok"], return_exceptions=True)
    assert isinstance(results[0], GenerationFailedError)
    assert isinstance(results[1], Generation)
    assert results[1].is_completed


async def test_first_error_is_raised_and_other_waits_cancelled(
    prism: PrismClient, mock: aioresponses
) -> None:
    """Without return_exceptions the first error is raised and the other waits stop cleanly."""
    mock.get(url("gen_bad"), payload=status("gen_bad", "failed"))
    mock.get(url("gen_run"), payload=status("gen_run", "generating"), repeat=True)
    with pytest.raises(GenerationFailedError):
        await prism.wait_for_generations(["gen_run", "gen_bad"], timeout=30)
    count = len(calls_to(mock, "GET", url("gen_run")))
    await asyncio.sleep(0.1)
    assert len(calls_to(mock, "GET", url("gen_run"))) == count
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_cancelling_a_bulk_wait_cancels_every_wait(
    prism: PrismClient, mock: aioresponses
) -> None:
    """Cancelling wait_for_generations leaves no poll loop running."""
    for generation_id in ("gen_a", "gen_b"):
        mock.get(url(generation_id), payload=status(generation_id, "generating"), repeat=True)
    task = asyncio.create_task(prism.wait_for_generations(["gen_a", "gen_b"], timeout=30))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_as_completed_yields_in_completion_order(
    prism: PrismClient, mock: aioresponses
) -> None:
    """as_completed yields each generation when it is terminal, failed ones included."""
    for _ in range(6):
        mock.get(url("gen_late"), payload=status("gen_late", "generating"))
    mock.get(url("gen_late"), payload=status("gen_late", "completed"))
    mock.get(url("gen_mid"), payload=status("gen_mid", "generating"))
    mock.get(url("gen_mid"), payload=status("gen_mid", "failed"))
    mock.get(url("gen_soon"), payload=status("gen_soon", "completed"))
    order = [
        (g.id, g.status) async for g in prism.as_completed(["gen_late", "gen_mid", "gen_soon"])
    ]
    assert order == [("gen_soon", "completed"), ("gen_mid", "failed"), ("gen_late", "completed")]


async def test_leaving_as_completed_early_cancels_the_rest(
    prism: PrismClient, mock: aioresponses
) -> None:
    """Breaking out of as_completed stops the waits still running."""
    mock.get(url("gen_done"), payload=status("gen_done", "completed"))
    mock.get(url("gen_run"), payload=status("gen_run", "generating"), repeat=True)
    iterator = prism.as_completed(["gen_run", "gen_done"], timeout=30)
    async for generation in iterator:
        assert generation.id == "gen_done"
        break
    await iterator.aclose()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_as_completed_raises_a_timeout(prism: PrismClient, mock: aioresponses) -> None:
    """A wait that times out inside as_completed raises WaitTimeoutError from the iterator."""
    mock.get(url("gen_run"), payload=status("gen_run", "generating"), repeat=True)
    with pytest.raises(WaitTimeoutError):
        async for _ in prism.as_completed(["gen_run"], timeout=0.1):
            pass


async def test_create_and_wait(prism: PrismClient, mock: aioresponses, sleeps: list[float]) -> None:
    """create_and_wait queues the batch and returns its completed generations."""
    mock.post(f"{API}/generations", payload=samples.CREATE_GENERATION)
    mock.get(url("gen_abc123"), payload=status("gen_abc123", "generating"))
    mock.get(url("gen_abc123"), payload=status("gen_abc123", "completed"))
    updates: list[str] = []
    videos = await prism.generations.create_and_wait(
        prompt="A product demo", model_name="veo-3.1", on_update=lambda g: updates.append(g.status)
    )
    assert [video.id for video in videos] == ["gen_abc123"]
    assert updates == ["generating", "completed"]


async def test_create_and_wait_failure_names_every_queued_id(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """If the wait fails, the error's notes list the queued ids so none is lost."""
    mock.post(f"{API}/generations", payload=samples.CREATE_GENERATION)
    mock.get(url("gen_abc123"), payload=status("gen_abc123", "failed"))
    with pytest.raises(GenerationFailedError) as info:
        await prism.generations.create_and_wait(prompt="p", model_name="veo-3.1")
    assert any("gen_abc123" in note for note in info.value.__notes__)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda p: p.wait_for_generation(""), "generation_id"),
        (lambda p: p.wait_for_generation("gen_1", timeout=0), "timeout"),
        (lambda p: p.wait_for_generations("gen_1"), "ids"),
        (lambda p: p.wait_for_generations(["gen_1", ""]), "ids[1]"),
    ],
)
async def test_bad_wait_input(
    prism: PrismClient, mock: aioresponses, call: Callable[[PrismClient], Any], field: str
) -> None:
    """Empty ids, a bare string for many ids and a non-positive timeout are refused."""
    with pytest.raises(InvalidRequestError) as info:
        await call(prism)
    assert info.value.field == field
    assert not mock.requests


async def test_a_thousand_concurrent_waits_on_a_local_server(serve: Serve) -> None:
    """1,000 waits share one client: all finish, and no id ever has two requests in flight."""
    rng = random.Random(7)
    remaining = {f"gen_{n}": rng.randint(0, 4) for n in range(1000)}
    in_flight: dict[str, int] = {}
    worst = 0

    async def get(request: web.Request) -> web.Response:
        nonlocal worst
        generation_id = request.match_info["id"]
        in_flight[generation_id] = in_flight.get(generation_id, 0) + 1
        worst = max(worst, in_flight[generation_id])
        await asyncio.sleep(0.001)
        in_flight[generation_id] -= 1
        left = remaining[generation_id]
        remaining[generation_id] = left - 1
        return web.json_response(status(generation_id, "completed" if left <= 0 else "generating"))

    app = web.Application()
    app.router.add_get("/api/generations/{id}", get)
    root = await serve(app)
    policy = PollPolicy(initial_delay=0.05, interval=0.02, max_interval=0.05, timeout=60)
    async with PrismClient(KEY, base_url=f"{root}/api", poll=policy, max_connections=50) as prism:
        results = await prism.wait_for_generations(list(remaining))
    assert len(results) == 1000
    assert all(generation.is_completed for generation in results)
    assert [g.id for g in results] == list(remaining)
    assert worst == 1


async def test_a_configured_client_policy_wins_over_the_estimate(
    mock: aioresponses, sleeps: list[float]
) -> None:
    """The estimate only replaces the default cadence, not one the user configured."""
    batch = slow_template_batch(mock)
    policy = PollPolicy(initial_delay=1, interval=2, jitter=0, learn=False)
    async with PrismClient(KEY, base_url=API, poll=policy) as prism:
        await prism.wait_for_generations(batch)
    assert sleeps == [1.0, 2.0]
