"""PrismClient configuration, lifecycle and the public surface."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

import prism_async
from prism_async import InvalidRequestError, PollPolicy, PrismClient, RetryPolicy
from tests import samples
from tests.conftest import API, KEY, calls_to

EXPECTED_PUBLIC = {
    "BudgetExceededError",
    "Quote",
    "AmbiguousSubmissionError",
    "GenerationRequest",
    "RunResult",
    "SubmissionConflictError",
    "SubmissionInFlightError",
    "TemplateRequest",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsCompleted",
    "Asset",
    "AuthenticationError",
    "BadRequestError",
    "Character",
    "ClientClosedError",
    "FreeTierPausedError",
    "Generation",
    "GenerationBatch",
    "GenerationFailedError",
    "GenerationMetadata",
    "GenerationStatus",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidRequestError",
    "InvalidTemplateError",
    "LedgerUnavailableError",
    "LatencyEstimate",
    "NotFoundError",
    "Page",
    "Pagination",
    "PermissionDeniedError",
    "PollPolicy",
    "PresignedUpload",
    "PricingError",
    "PrismClient",
    "PrismError",
    "QueuedGeneration",
    "RateLimitError",
    "ResponseValidationError",
    "RetryPolicy",
    "Template",
    "TemplateGeneration",
    "TemplateGenerationBatch",
    "TemplateVariable",
    "UploadedFile",
    "WaitTimeoutError",
    "__version__",
    "as_completed",
    "to_dict",
    "wait_for_generation",
    "wait_for_generations",
}


def test_public_surface_is_exact_and_sorted() -> None:
    """__all__ is exactly the public names, sorted, and each one is importable."""
    assert set(prism_async.__all__) == EXPECTED_PUBLIC
    assert prism_async.__all__ == sorted(prism_async.__all__)
    for name in prism_async.__all__:
        assert getattr(prism_async, name) is not None


def test_public_classes_have_docstrings() -> None:
    """Every exported class documents itself."""
    for name in prism_async.__all__:
        obj = getattr(prism_async, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__doc__, name


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """api_key falls back to PRISM_API_KEY and base_url to PRISM_BASE_URL, then the default."""
    monkeypatch.setenv("PRISM_API_KEY", KEY)
    monkeypatch.delenv("PRISM_BASE_URL", raising=False)
    assert PrismClient().base_url == "https://www.prismvideos.com/api"
    monkeypatch.setenv("PRISM_BASE_URL", "https://eu.prism.test/api/")
    assert PrismClient().base_url == "https://eu.prism.test/api"
    assert PrismClient(base_url="https://other.test/api").base_url == "https://other.test/api"


def test_no_key_is_a_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a key anywhere, construction fails with a ValueError that says how to fix it."""
    monkeypatch.delenv("PRISM_API_KEY", raising=False)
    with pytest.raises(ValueError, match="PRISM_API_KEY"):
        PrismClient()
    with pytest.raises(ValueError, match="PRISM_API_KEY"):
        PrismClient("   ")


def test_key_with_control_characters_is_refused_without_echoing_it() -> None:
    """A key with a newline (header injection) is refused and not repeated in the message."""
    with pytest.raises(ValueError) as info:
        PrismClient("prism_sk_abc\r\nX-Evil: 1")
    assert "prism_sk_abc" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://www.prismvideos.com/api",
        "http://10.0.0.5/api",
        "ftp://prism.test/api",
        "www.prismvideos.com/api",
        "https://user:pw@prism.test/api",
    ],
)
def test_unsafe_base_urls_are_refused_at_construction(url: str) -> None:
    """Plain http to a non-loopback host, other schemes and credentials in URLs are refused."""
    with pytest.raises(InvalidRequestError) as info:
        PrismClient(KEY, base_url=url)
    assert info.value.field == "base_url"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/api",
        "http://127.5.6.7/api",
        "http://localhost:3000/api",
        "http://[::1]:9/api",
    ],
)
def test_plain_http_allowed_for_loopback(url: str) -> None:
    """Loopback hosts may use plain http (the fake server, local development)."""
    assert PrismClient(KEY, base_url=url).base_url == url


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"max_connections": 0}, "max_connections"),
        ({"retry": object()}, "retry"),
        ({"poll": 5}, "poll"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], field: str) -> None:
    """Nonsense settings fail at construction, naming the argument."""
    with pytest.raises(InvalidRequestError) as info:
        PrismClient(KEY, base_url=API, **kwargs)
    assert info.value.field == field


def test_policies_validate_their_values() -> None:
    """RetryPolicy and PollPolicy refuse negative or meaningless values."""
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError):
        RetryPolicy(initial=-0.1)
    with pytest.raises(ValueError):
        PollPolicy(interval=0)
    with pytest.raises(ValueError):
        PollPolicy(multiplier=0.5)
    assert RetryPolicy(max_retries=0).max_retries == 0


def test_repr_never_shows_the_key() -> None:
    """repr(prism) shows the base URL and state, never the key."""
    client = PrismClient(KEY, base_url=API)
    text = repr(client)
    assert KEY not in text
    assert API in text
    assert KEY not in repr(vars(client))
    assert KEY not in repr(client.generations.__dict__)


def test_construction_outside_a_loop_makes_no_session() -> None:
    """A client built at import time (no running loop) creates no aiohttp session yet."""
    client = PrismClient(KEY, base_url=API)
    assert client._http._session is None


async def test_context_manager_closes_its_session() -> None:
    """`async with` opens a session inside the loop and closes it on exit."""
    async with PrismClient(KEY, base_url=API) as client:
        session = client._http.session()
        assert not session.closed
    assert client.closed
    assert session.closed  # (last: mypy keeps "not closed" from inside the block)


async def test_closed_client_refuses_work() -> None:
    """After aclose(), calls fail with a clear RuntimeError and no request is made."""
    client = PrismClient(KEY, base_url=API)
    await client.aclose()
    await client.aclose()  # idempotent
    with aioresponses() as mock, pytest.raises(RuntimeError, match="closed"):
        await client.generations.get("gen_1")
    assert not mock.requests
    with pytest.raises(RuntimeError, match="closed"):
        async with client:
            pass


async def test_borrowed_session_is_never_closed() -> None:
    """A session passed in is used for requests and left open by aclose()."""
    async with aiohttp.ClientSession() as session:
        with aioresponses() as mock:
            mock.get(f"{API}/generations/gen_abc123", payload=samples.GENERATION_COMPLETED)
            async with PrismClient(KEY, base_url=API, session=session) as client:
                generation = await client.generations.get("gen_abc123")
            assert generation.id == "gen_abc123"
        assert not session.closed


async def test_lazy_session_without_context_manager() -> None:
    """Without `async with`, the first call opens the session; aclose() closes it."""
    client = PrismClient(KEY, base_url=API)
    with aioresponses() as mock:
        mock.get(f"{API}/generations/gen_abc123", payload=samples.GENERATION_COMPLETED)
        await client.generations.get("gen_abc123")
    session = client._http._session
    assert session is not None
    assert not session.closed
    await client.aclose()
    assert session.closed


async def test_headers_on_api_calls(prism: PrismClient, mock: aioresponses) -> None:
    """Every API call carries the bearer key, JSON accept and the prism-async User-Agent."""
    mock.get(f"{API}/generations/gen_abc123", payload=samples.GENERATION_COMPLETED)
    await prism.generations.get("gen_abc123")
    (call,) = calls_to(mock, "GET", f"{API}/generations/gen_abc123")
    headers = call.kwargs["headers"]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["User-Agent"] == f"prism-async/{prism_async.__version__}"
    assert headers["Accept"] == "application/json"


async def test_debug_logs_never_contain_the_key(
    prism: PrismClient, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """Request and retry log lines name method, path and status, never the key."""
    caplog.set_level(logging.DEBUG, logger="prism_async")
    mock.get(f"{API}/generations/gen_abc123", status=503, body="busy")
    mock.get(f"{API}/generations/gen_abc123", payload=samples.GENERATION_COMPLETED)
    await prism.generations.get("gen_abc123")
    text = caplog.text
    assert "GET /api/generations/gen_abc123 -> 503" in text
    assert "GET /api/generations/gen_abc123 -> 200" in text
    assert "retrying" in text
    assert KEY not in text
    assert "Bearer" not in text


async def test_borrowed_session_with_default_auth_is_refused() -> None:
    """A borrowed session whose defaults carry Authorization would leak it to storage hosts."""
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer other"}) as session:
        with pytest.raises(InvalidRequestError) as info:
            PrismClient(KEY, base_url=API, session=session)
    assert info.value.field == "session"
