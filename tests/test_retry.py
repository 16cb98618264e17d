"""The retry matrix: what is retried, how often, and how long the client waits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from aioresponses import aioresponses

from prism_async import (
    APIConnectionError,
    APITimeoutError,
    FreeTierPausedError,
    InternalServerError,
    NotFoundError,
    PrismClient,
    RateLimitError,
    RetryPolicy,
)
from prism_async.testing import instant_waits
from tests import samples
from tests.conftest import API, KEY, calls_to

GEN_URL = f"{API}/generations"
GET_URL = f"{API}/generations/gen_abc123"
ERROR_BODY = {"error": "server_error", "message": "boom"}


@pytest.fixture
def sleeps() -> Iterator[list[float]]:
    """Record every backoff instead of sleeping it."""
    with instant_waits() as skipped:
        yield skipped.retries


async def create(prism: PrismClient) -> object:
    return await prism.generations.create(prompt="A product demo", model_name="veo-3.1")


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_paid_post_is_never_retried_on_5xx(
    prism: PrismClient, mock: aioresponses, status: int
) -> None:
    """A 5xx on create generation is raised after exactly one request: nobody pays twice."""
    mock.post(GEN_URL, status=status, payload=ERROR_BODY)
    mock.post(GEN_URL, payload=samples.CREATE_GENERATION)
    with pytest.raises(InternalServerError):
        await create(prism)
    assert len(calls_to(mock, "POST", GEN_URL)) == 1


async def test_paid_post_is_never_retried_after_a_timeout(
    prism: PrismClient, mock: aioresponses
) -> None:
    """A timeout after sending a POST raises APITimeoutError(maybe_sent=True) after one request."""
    mock.post(GEN_URL, exception=TimeoutError())
    mock.post(GEN_URL, payload=samples.CREATE_GENERATION)
    with pytest.raises(APITimeoutError) as info:
        await create(prism)
    assert info.value.maybe_sent is True
    assert "may have received" in str(info.value)
    assert len(calls_to(mock, "POST", GEN_URL)) == 1


async def test_paid_post_is_never_retried_after_a_drop(
    prism: PrismClient, mock: aioresponses
) -> None:
    """A connection dropped after sending a POST is raised with maybe_sent=True, once."""
    mock.post(GEN_URL, exception=aiohttp.ServerDisconnectedError())
    mock.post(GEN_URL, payload=samples.CREATE_GENERATION)
    with pytest.raises(APIConnectionError) as info:
        await create(prism)
    assert info.value.maybe_sent is True
    assert len(calls_to(mock, "POST", GEN_URL)) == 1


async def test_paid_post_is_retried_on_429(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """429 means the server refused the POST, so it is safely retried."""
    mock.post(GEN_URL, status=429, payload={"error": "rate_limited", "message": "slow down"})
    mock.post(GEN_URL, payload=samples.CREATE_GENERATION)
    batch = await prism.generations.create(prompt="p", model_name="veo-3.1")
    assert batch.ids == ["gen_abc123"]
    assert len(calls_to(mock, "POST", GEN_URL)) == 2
    assert len(sleeps) == 1


async def test_free_tier_paused_is_never_retried(prism: PrismClient, mock: aioresponses) -> None:
    """503 free_tier_paused is raised at once."""
    mock.post(GEN_URL, status=503, payload={"error": "free_tier_paused", "message": "paused"})
    with pytest.raises(FreeTierPausedError):
        await create(prism)
    assert len(calls_to(mock, "POST", GEN_URL)) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_get_is_retried_on_transient_statuses(
    prism: PrismClient, mock: aioresponses, sleeps: list[float], status: int
) -> None:
    """GET retries 408, 429 and 5xx, then succeeds."""
    mock.get(GET_URL, status=status, body="<html>busy</html>")
    mock.get(GET_URL, status=status, body="<html>busy</html>")
    mock.get(GET_URL, payload=samples.GENERATION_COMPLETED)
    generation = await prism.generations.get("gen_abc123")
    assert generation.is_completed
    assert len(calls_to(mock, "GET", GET_URL)) == 3


@pytest.mark.parametrize(
    "exception",
    [TimeoutError(), aiohttp.ServerDisconnectedError(), aiohttp.ClientOSError()],
)
async def test_get_is_retried_on_timeouts_and_drops(
    prism: PrismClient, mock: aioresponses, sleeps: list[float], exception: Exception
) -> None:
    """GET retries timeouts and dropped connections."""
    mock.get(GET_URL, exception=exception)
    mock.get(GET_URL, payload=samples.GENERATION_COMPLETED)
    assert (await prism.generations.get("gen_abc123")).is_completed
    assert len(calls_to(mock, "GET", GET_URL)) == 2


async def test_get_gives_up_after_max_retries(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """After 1 + max_retries attempts the last error is raised."""
    for _ in range(5):
        mock.get(GET_URL, status=500, payload=ERROR_BODY)
    with pytest.raises(InternalServerError):
        await prism.generations.get("gen_abc123")
    assert len(calls_to(mock, "GET", GET_URL)) == 4
    assert len(sleeps) == 3


async def test_client_errors_are_not_retried(prism: PrismClient, mock: aioresponses) -> None:
    """A 404 is an answer, not a blip: raised after one request."""
    mock.get(GET_URL, status=404, payload={"error": "not_found", "message": "nope"})
    with pytest.raises(NotFoundError):
        await prism.generations.get("gen_abc123")
    assert len(calls_to(mock, "GET", GET_URL)) == 1


async def test_max_retries_zero_disables_retries(mock: aioresponses) -> None:
    """RetryPolicy(max_retries=0) sends each request once."""
    mock.get(GET_URL, status=503, payload=ERROR_BODY)
    async with PrismClient(KEY, base_url=API, retry=RetryPolicy(max_retries=0)) as prism:
        with pytest.raises(InternalServerError):
            await prism.generations.get("gen_abc123")
    assert len(calls_to(mock, "GET", GET_URL)) == 1


async def test_exponential_backoff_without_jitter(mock: aioresponses, sleeps: list[float]) -> None:
    """Backoff doubles from `initial` and is capped at `max_wait`."""
    for _ in range(5):
        mock.get(GET_URL, status=502, payload=ERROR_BODY)
    policy = RetryPolicy(max_retries=4, initial=0.5, max_wait=1.5, jitter=False)
    async with PrismClient(KEY, base_url=API, retry=policy) as prism:
        with pytest.raises(InternalServerError):
            await prism.generations.get("gen_abc123")
    assert sleeps == [0.5, 1.0, 1.5, 1.5]


async def test_jitter_stays_within_the_backoff(mock: aioresponses, sleeps: list[float]) -> None:
    """With jitter each wait is random but never above the exponential backoff."""
    for _ in range(4):
        mock.get(GET_URL, status=502, payload=ERROR_BODY)
    async with PrismClient(
        KEY, base_url=API, retry=RetryPolicy(initial=1.0, max_wait=3.0)
    ) as prism:
        with pytest.raises(InternalServerError):
            await prism.generations.get("gen_abc123")
    assert len(sleeps) == 3
    for wait, ceiling in zip(sleeps, [1.0, 2.0, 3.0], strict=True):
        assert 0.0 <= wait <= ceiling


async def test_retry_after_seconds_replaces_the_backoff(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """A Retry-After in seconds is obeyed exactly."""
    mock.get(GET_URL, status=429, headers={"Retry-After": "7"}, payload={"error": "rate_limited"})
    mock.get(GET_URL, payload=samples.GENERATION_COMPLETED)
    await prism.generations.get("gen_abc123")
    assert sleeps == [7.0]


async def test_retry_after_http_date(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """A Retry-After HTTP date is turned into the seconds until then."""
    when = datetime.now(UTC) + timedelta(seconds=20)
    mock.get(GET_URL, status=503, headers={"Retry-After": format_datetime(when, usegmt=True)})
    mock.get(GET_URL, payload=samples.GENERATION_COMPLETED)
    await prism.generations.get("gen_abc123")
    assert len(sleeps) == 1
    assert 17.0 <= sleeps[0] <= 20.5


async def test_retry_after_over_the_cap_raises_at_once(
    prism: PrismClient, mock: aioresponses, sleeps: list[float]
) -> None:
    """A Retry-After longer than max_retry_after raises RateLimitError at once, retry_after set."""
    mock.post(GEN_URL, status=429, headers={"Retry-After": "120"}, payload={"error": "slow"})
    with pytest.raises(RateLimitError) as info:
        await create(prism)
    assert info.value.retry_after == 120.0
    assert sleeps == []
    assert len(calls_to(mock, "POST", GEN_URL)) == 1


async def test_cancellation_during_backoff_passes_through(mock: aioresponses) -> None:
    """Cancelling while the client waits to retry raises CancelledError, untouched."""
    mock.get(GET_URL, status=503, payload=ERROR_BODY)
    slow = RetryPolicy(initial=3600, max_wait=3600, jitter=False)
    async with PrismClient(KEY, base_url=API, retry=slow) as prism:
        task = asyncio.create_task(prism.generations.get("gen_abc123"))
        while not calls_to(mock, "GET", GET_URL):  # attempt 1 answered: now in its backoff
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(calls_to(mock, "GET", GET_URL)) == 1
