"""The ledger's rules end to end (design.md, "Durable submissions"): ``key=`` needs a ledger;
``accepted`` replays with no POST; the same key with another request is a conflict; ``rejected``
sends again. Generations take 100 s on the fake's own clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from prism_async import (
    APIConnectionError,
    FreeTierPausedError,
    GenerationRequest,
    InsufficientCreditsError,
    InvalidRequestError,
    PricingError,
    PrismClient,
    PrismError,
    RateLimitError,
    SubmissionConflictError,
)
from prism_async.ledger import SQLiteLedger
from prism_async.ledger._prices import shape_of
from prism_async.testing import FakePrismServer
from tests.conftest import NO_WAIT, free_port
from tests.ledger.helpers import (
    CREATE_PATH,
    MODEL,
    PRICE,
    PROMPT,
    TEMPLATE_PATH,
    S,
    create,
    ledger_of,
    open_client,
    posts,
    row,
)

# -- key= needs a ledger, and a key --------------------------------------------------------------


async def test_key_without_a_ledger_is_refused_before_sending(server: FakePrismServer) -> None:
    """``key=`` on a client without a ledger: InvalidRequestError naming ``key``, nothing sent;
    ``reconcile`` needs a ledger too; a ledger must be a Ledger."""
    async with PrismClient(server.api_key, base_url=server.base_url, retry=NO_WAIT) as prism:
        assert prism.ledger is None
        with pytest.raises(InvalidRequestError) as info:
            await create(prism, "campaign-42/clip-7")
        assert info.value.field == "key"
        with pytest.raises(InvalidRequestError) as info:
            await prism.templates.generate("abc123", variables={"hook": "Hello"}, key="t")
        assert info.value.field == "key"
        with pytest.raises(InvalidRequestError) as info:
            await prism.reconcile("campaign-42/clip-7")
        assert info.value.field == "ledger"
        batch = await create(prism, None)  # without key= nothing changes
        assert len(batch.ids) == 1
    assert posts(server) == 1
    assert posts(server, TEMPLATE_PATH) == 0
    with pytest.raises(InvalidRequestError) as info:
        PrismClient(server.api_key, base_url=server.base_url, ledger=cast(Any, "ledger.db"))
    assert info.value.field == "ledger"


@pytest.mark.parametrize("key", ["", "   ", "\n", 7])
async def test_an_empty_key_is_refused(
    prism: PrismClient, server: FakePrismServer, key: object
) -> None:
    """A key must be a non-empty string: refused before any row or request."""
    with pytest.raises(InvalidRequestError) as info:
        await create(prism, cast(Any, key))
    assert info.value.field == "key"
    with pytest.raises(InvalidRequestError) as info:
        await prism.templates.generate("abc123", variables={"hook": "Hello"}, key=cast(Any, key))
    assert info.value.field == "key"
    assert posts(server) == posts(server, TEMPLATE_PATH) == 0
    assert [s async for s in ledger_of(prism).list()] == []


# -- accepted: replayed, never sent again ------------------------------------------------------


async def test_the_same_key_twice_sends_one_post(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """The second call returns the recorded batch (same ids, same charge) with no POST."""
    first = await create(prism, "campaign-42/clip-7", count=2)
    second = await create(prism, "campaign-42/clip-7", count=2)
    assert second.ids == first.ids
    assert len(first.ids) == 2
    assert second.metadata.credits_charged == first.metadata.credits_charged == 2 * PRICE
    assert second.metadata.model_name == MODEL
    assert posts(server) == 1
    assert server.credits == 10_000 - 2 * PRICE

    recorded = await row(prism, "campaign-42/clip-7")
    assert recorded.state == S.ACCEPTED
    assert recorded.kind == "generation"
    assert recorded.attempt == 1
    assert recorded.generation_ids == tuple(first.ids)
    assert recorded.credits_charged == 2 * PRICE
    assert recorded.error is None
    assert (recorded.lease_owner, recorded.lease_expires) == (None, None)
    assert recorded.sent_at is not None
    assert recorded.created_at <= recorded.sent_at <= recorded.updated_at
    shape = shape_of(GenerationRequest(prompt=PROMPT, model_name=MODEL, count=2)).key
    assert recorded.request == {"prompt": PROMPT, "model_name": MODEL, "count": 2, "shape": shape}


async def test_a_new_client_on_the_same_file_replays(server: FakePrismServer, db: Path) -> None:
    """Another PrismClient with another SQLiteLedger object on the same file (a restarted
    script) returns the recorded batch and sends nothing."""
    async with open_client(server, db) as prism:
        first = await create(prism, "clip-1")
        other = await create(prism, "clip-2")
    async with open_client(server, db) as restarted:
        assert (await create(restarted, "clip-1")).ids == first.ids
        assert (await create(restarted, "clip-2")).ids == other.ids
        assert (await create(restarted, "clip-1")).metadata.credits_charged == PRICE
    assert posts(server) == 2
    assert len(server.generations) == 2


# -- conflicts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "A grey wolf"},
        {"model_name": "kling-2.5"},
        {"count": 2},
        {"aspect_ratio": "9:16"},
        {"duration": 5},
    ],
)
async def test_the_same_key_with_another_request_is_a_conflict(
    prism: PrismClient, server: FakePrismServer, change: dict[str, Any]
) -> None:
    """SubmissionConflictError (naming the key), no POST, the row untouched."""
    await create(prism, "k", duration=8)
    before = await row(prism, "k")
    with pytest.raises(SubmissionConflictError) as info:
        await create(prism, "k", **{"duration": 8, **change})
    assert info.value.key == "k"
    assert not info.value.maybe_sent
    assert posts(server) == 1
    assert await row(prism, "k") == before


async def test_duration_8_and_8s_are_the_same_request(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """The fingerprint is of the body as sent: ``8`` is sent as ``"8s"``."""
    first = await create(prism, "k", duration=8)
    assert (await create(prism, "k", duration="8s")).ids == first.ids
    assert posts(server) == 1
    assert server.requests_to("POST", CREATE_PATH)[0].json["duration"] == "8s"


async def test_count_1_and_no_count_are_the_same_request(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """An omitted count is one video: the same intent as ``count=1``, but not as ``count=2``."""
    first = await create(prism, "k")
    assert (await create(prism, "k", count=1)).ids == first.ids
    with pytest.raises(SubmissionConflictError):
        await create(prism, "k", count=2)
    assert posts(server) == 1


async def test_a_key_is_one_intent_across_kinds(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """A key used by generations.create is a conflict for templates.generate, and back."""
    await create(prism, "shared")
    with pytest.raises(SubmissionConflictError):
        await prism.templates.generate("abc123", variables={"hook": "Hello"}, key="shared")
    await prism.templates.generate("abc123", variables={"hook": "Hello"}, key="tmpl")
    with pytest.raises(SubmissionConflictError):
        await create(prism, "tmpl")
    assert posts(server) == posts(server, TEMPLATE_PATH) == 1


# -- rejected: sent again ------------------------------------------------------------------------


async def test_402_is_rejected_then_sent_again_once_credits_are_back(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """A definitive refusal records ``rejected``; the same key then sends (attempt 2)."""
    server.credits = 10
    with pytest.raises(InsufficientCreditsError):
        await create(prism, "k")
    rejected = await row(prism, "k")
    assert rejected.state == S.REJECTED
    assert rejected.attempt == 1
    assert rejected.generation_ids == ()
    assert rejected.error is not None
    assert "InsufficientCreditsError" in rejected.error
    assert (rejected.lease_owner, rejected.lease_expires) == (None, None)
    assert server.generations == {}

    server.credits = 10_000
    sent = len(server.requests_to("POST", "/api/generations"))
    with pytest.raises(InsufficientCreditsError) as paused:  # the fleet-wide 402 pause
        await create(prism, "k")
    assert paused.value.paused_until is not None
    assert len(server.requests_to("POST", "/api/generations")) == sent  # not sent
    assert (await row(prism, "k")).attempt == 1
    assert prism.ledger is not None
    await prism.ledger.clear_paid_pause()
    batch = await create(prism, "k")
    accepted = await row(prism, "k")
    assert accepted.state == S.ACCEPTED
    assert accepted.attempt == 2
    assert accepted.generation_ids == tuple(batch.ids) == tuple(server.generations)
    assert accepted.error is None
    assert accepted.created_at == rejected.created_at
    assert accepted.sent_at is not None
    assert rejected.sent_at is not None
    assert accepted.sent_at > rejected.sent_at
    assert posts(server) == 2
    assert (await create(prism, "k")).ids == batch.ids
    assert posts(server) == 2


@pytest.mark.parametrize("refusal", ["free tier paused", "unknown model", "429 past retries"])
async def test_other_definitive_refusals_are_rejected(
    prism: PrismClient, server: FakePrismServer, refusal: str
) -> None:
    """503 free_tier_paused, a 400 and 429s past the retries queue nothing: ``rejected``."""
    options: dict[str, Any] = {}
    expected: type[PrismError]
    if refusal == "free tier paused":
        server.free_tier_paused = True
        expected = FreeTierPausedError
    elif refusal == "unknown model":
        options["model_name"] = "no-such-model"
        expected = PricingError
    else:
        server.inject("POST", CREATE_PATH, status=429, headers={"Retry-After": "0"}, times=99)
        expected = RateLimitError
    with pytest.raises(expected) as info:
        await create(prism, "k", **options)
    assert not info.value.maybe_sent
    assert (await row(prism, "k")).state == S.REJECTED
    server.free_tier_paused = False
    server.clear_faults()
    if refusal != "unknown model":
        await create(prism, "k")
        assert (await row(prism, "k")).state == S.ACCEPTED


async def test_could_not_connect_is_rejected(server: FakePrismServer, db: Path) -> None:
    """Nothing listening: nothing was sent, so ``rejected`` and sendable once it is up."""
    down = f"http://127.0.0.1:{free_port()}/api"
    async with PrismClient(
        server.api_key, base_url=down, retry=NO_WAIT, ledger=SQLiteLedger(db)
    ) as prism:
        with pytest.raises(APIConnectionError) as info:
            await create(prism, "k")
        assert not info.value.maybe_sent
        assert (await row(prism, "k")).state == S.REJECTED
    async with open_client(server, db) as prism:
        await create(prism, "k")
        assert (await row(prism, "k")).attempt == 2
    assert posts(server) == 1
