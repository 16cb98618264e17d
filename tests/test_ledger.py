"""The ledger's rules end to end: PrismClient(ledger=SQLiteLedger) on FakePrismServer.

design.md, "Durable submissions: the ledger": the row is committed as ``sending`` before the
POST leaves; ``accepted``/``reconciled`` replay with no POST; ``rejected`` sends again;
``ambiguous`` (and a dead lease) refuses until reconciled or resolved; a live lease is in
flight; the same key with another request is a conflict. Every server here runs generations
of 100 s on its own clock, so only ``server.advance`` finishes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp import web

from prism_async import (
    AmbiguousSubmissionError,
    APIConnectionError,
    FreeTierPausedError,
    Generation,
    GenerationBatch,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    PollPolicy,
    PricingError,
    PrismClient,
    PrismError,
    RateLimitError,
    SubmissionConflictError,
    SubmissionInFlightError,
)
from prism_async._durable import Durable
from prism_async.ledger import GenerationRecord, Ledger, SQLiteLedger, Submission, SubmissionState
from prism_async.ledger._model import Owner, lease_is_alive
from prism_async.testing import FakePrismServer
from prism_async.webhooks import TOKEN_PARAM, WebhookHub
from tests.conftest import GENERATION_SECONDS, NO_WAIT, assert_key_free, free_port
from tests.ledger_helpers import bumped, dead_owner

S = SubmissionState
Serve = Callable[[web.Application], Awaitable[str]]
PROMPT = "A red fox trotting through fresh snow"
MODEL = "veo-3.1"
PRICE = 120  # veo-3.1 on the fake, per video
FAST = PollPolicy(initial_delay=0, interval=0.05, max_interval=0.05, jitter=0, timeout=10)
CREATE_PATH = "/api/generations"
TEMPLATE_PATH = "/api/templates/*/generate"
LEDGER_LOGGER = "prism_async.ledger"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


def open_client(server: FakePrismServer, db: Path, **options: Any) -> PrismClient:
    """A client on the fake with a ledger of its own on ``db`` (a new ledger object)."""
    options.setdefault("retry", NO_WAIT)
    options.setdefault("poll", FAST)
    return PrismClient(server.api_key, base_url=server.base_url, ledger=SQLiteLedger(db), **options)


@pytest.fixture
async def prism(server: FakePrismServer, db: Path) -> AsyncIterator[PrismClient]:
    async with open_client(server, db) as client:
        yield client


def ledger_of(prism: PrismClient) -> Ledger:
    assert prism.ledger is not None
    return prism.ledger


async def row(prism: PrismClient, key: str) -> Submission:
    found = await ledger_of(prism).get(key)
    assert found is not None, key
    return found


def posts(server: FakePrismServer, path: str = CREATE_PATH) -> int:
    return len(server.requests_to("POST", path))


async def create(prism: PrismClient, key: str | None, **options: Any) -> GenerationBatch:
    options.setdefault("prompt", PROMPT)
    options.setdefault("model_name", MODEL)
    return await prism.generations.create(key=key, **options)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds (polling every 10 ms)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def make_ambiguous(
    prism: PrismClient, server: FakePrismServer, key: str, **options: Any
) -> Submission:
    """Send ``key`` through a processed 502 (queued and charged, answer lost): ambiguous."""
    server.inject("POST", CREATE_PATH, status=502, processed=True)
    with pytest.raises(PrismError) as info:
        await create(prism, key, **options)
    assert info.value.maybe_sent
    found = await row(prism, key)
    assert found.state == S.AMBIGUOUS
    return found


async def make_rejected(prism: PrismClient, server: FakePrismServer, key: str) -> Submission:
    """Send ``key`` with no credits: a 402, nothing queued, ``rejected``; credits restored."""
    credits, server.credits = server.credits, 0
    with pytest.raises(InsufficientCreditsError):
        await create(prism, key)
    server.credits = credits
    found = await row(prism, key)
    assert found.state == S.REJECTED
    return found


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
    assert recorded.request == {"prompt": PROMPT, "model_name": MODEL, "count": 2}


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


# -- ambiguous: never sent blindly, reconciled from history ------------------------------------

LOST_ANSWERS: dict[str, tuple[dict[str, Any], int, bool]] = {
    # fault, count, whether the broken answer showed the ids
    "processed 502": ({"status": 502, "processed": True}, 2, False),
    "processed drop": ({"drop": True, "processed": True}, 1, False),
    "truncated 200": ({"truncate": 60}, 1, True),
}


@pytest.mark.parametrize("fault", sorted(LOST_ANSWERS))
async def test_a_lost_answer_is_ambiguous_until_reconciled(
    prism: PrismClient, server: FakePrismServer, fault: str
) -> None:
    """The server queued and charged, the answer was lost: the call raises with maybe_sent;
    the row is ambiguous; the same key raises AmbiguousSubmissionError without a POST;
    ``reconcile`` finds exactly the queued generations; then the key replays them."""
    options, count, shows_ids = LOST_ANSWERS[fault]
    server.inject("POST", CREATE_PATH, **options)
    with pytest.raises(PrismError) as info:
        await create(prism, "k", count=count)
    assert info.value.maybe_sent
    assert not isinstance(info.value, AmbiguousSubmissionError)
    queued = tuple(server.generations)
    assert len(queued) == count
    assert server.credits == 10_000 - count * PRICE

    ambiguous = await row(prism, "k")
    assert ambiguous.state == S.AMBIGUOUS
    assert ambiguous.attempt == 1
    assert ambiguous.generation_ids == (queued if shows_ids else ())
    assert ambiguous.error is not None
    assert type(info.value).__name__ in ambiguous.error
    assert (ambiguous.lease_owner, ambiguous.lease_expires) == (None, None)

    with pytest.raises(AmbiguousSubmissionError) as again:
        await create(prism, "k", count=count)
    assert again.value.key == "k"
    assert again.value.submission == ambiguous
    assert again.value.maybe_sent
    assert again.value.generation_ids == ambiguous.generation_ids
    assert posts(server) == 1

    reconciled = await prism.reconcile("k")
    assert reconciled.state == S.RECONCILED
    assert sorted(reconciled.generation_ids) == sorted(queued)
    assert len(reconciled.generation_ids) == count
    assert reconciled.error is None
    assert reconciled.done
    assert await row(prism, "k") == reconciled
    assert await ledger_of(prism).claimed_ids() == set(queued)

    batch = await create(prism, "k", count=count)
    assert batch.ids == list(reconciled.generation_ids)
    assert posts(server) == 1
    assert await prism.reconcile("k") == reconciled  # nothing left to do


async def test_reconcile_does_not_claim_another_keys_generation(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """Two keys, same prompt and model: one accepted, one ambiguous. Reconciling the second
    picks only the generation no other row holds."""
    accepted = await create(prism, "clip-1")
    await make_ambiguous(prism, server, "clip-2")
    (lost,) = [g for g in server.generations if g not in accepted.ids]
    reconciled = await prism.reconcile("clip-2")
    assert reconciled.state == S.RECONCILED
    assert reconciled.generation_ids == (lost,)
    assert (await row(prism, "clip-1")).generation_ids == tuple(accepted.ids)


async def test_two_ambiguous_keys_with_one_prompt_wait_for_a_hand(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """Two ambiguous keys whose generations look alike cannot be told apart: reconciling
    either finds two candidates for one and stays ambiguous; once one is resolved by hand the
    other reconciles with the remaining generation."""
    await make_ambiguous(prism, server, "clip-1")
    await make_ambiguous(prism, server, "clip-2")
    first, second = server.generations
    stuck = await prism.reconcile("clip-1")
    assert stuck.state == S.AMBIGUOUS
    assert stuck.error is not None
    assert "found 2 of 1" in stuck.error
    await ledger_of(prism).resolve("clip-1", generation_ids=[first])
    assert (await prism.reconcile("clip-2")).generation_ids == (second,)


async def test_reconcile_ignores_other_prompts_models_and_times(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """Only the same prompt (exactly), the same model and a creation time inside the window
    around ``sent_at`` count."""
    await make_ambiguous(prism, server, "k")
    (lost,) = server.generations
    await create(prism, None, prompt=f"{PROMPT} at dusk")  # the search matches it: not equal
    await create(prism, None, model_name="kling-2.5")
    server.advance(3600)  # an hour later on the server's clock: outside the window
    await create(prism, None)
    assert len(server.generations) == 4
    reconciled = await prism.reconcile("k")
    assert reconciled.state == S.RECONCILED
    assert reconciled.generation_ids == (lost,)


async def test_reconcile_waits_for_a_history_that_lists_only_finished_work(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """When the history lists a generation only once it is finished, an early reconcile
    stays ambiguous and says what it found; after completion it succeeds."""
    server.history_completed_only = True
    await make_ambiguous(prism, server, "k")
    (lost,) = server.generations
    early = await prism.reconcile("k")
    assert early.state == S.AMBIGUOUS
    assert early.error is not None
    assert "found 0 of 1" in early.error
    assert "again later" in early.error
    assert await row(prism, "k") == early
    with pytest.raises(AmbiguousSubmissionError, match="found 0 of 1"):
        await create(prism, "k")

    server.advance(GENERATION_SECONDS)
    late = await prism.reconcile("k")
    assert late.state == S.RECONCILED
    assert late.generation_ids == (lost,)
    assert posts(server) == 1


async def test_a_count_mismatch_stays_ambiguous(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """count=2 with only one generation listed: ambiguous (found 1 of 2); both: reconciled."""
    server.history_completed_only = True
    await make_ambiguous(prism, server, "k", count=2)
    first, second = server.generations
    server.complete_generation(first)
    partial = await prism.reconcile("k")
    assert partial.state == S.AMBIGUOUS
    assert partial.generation_ids == ()
    assert partial.error is not None
    assert "found 1 of 2" in partial.error
    server.complete_generation(second)
    done = await prism.reconcile("k")
    assert done.state == S.RECONCILED
    assert sorted(done.generation_ids) == sorted([first, second])


async def test_reconcile_of_an_unknown_key_is_refused(prism: PrismClient) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await prism.reconcile("nope")
    assert info.value.field == "key"


# -- sending: the lease ------------------------------------------------------------------------


def _owner(kind: str) -> tuple[str, timedelta]:
    """A lease owner and the time left on its lease."""
    me = Owner.me()
    return {
        "dead process": (str(dead_owner()), timedelta(minutes=1)),
        "reused pid": (str(Owner(me.host, me.pid, "not-its-start-time")), timedelta(minutes=1)),
        "expired": (str(me), -timedelta(seconds=1)),
        "live, this process": (str(me), timedelta(minutes=1)),
        "live, another host": (f"{socket.gethostname()}-elsewhere:1:1", timedelta(minutes=1)),
    }[kind]


@pytest.mark.parametrize(
    ("lease", "alive"),
    [
        ("dead process", False),
        ("reused pid", False),
        ("expired", False),
        ("live, this process", True),
        ("live, another host", True),
    ],
)
async def test_a_sending_row_and_its_lease(
    prism: PrismClient, server: FakePrismServer, lease: str, alive: bool
) -> None:
    """A ``sending`` row (a crash, or someone sending right now): a live lease is
    SubmissionInFlightError and the row stays; a dead one (its process gone, its pid reused
    by another process, or expired) becomes ambiguous. Neither sends."""
    rejected = await make_rejected(prism, server, "k")
    owner, left = _owner(lease)
    sending = bumped(
        rejected,
        state=S.SENDING,
        attempt=2,
        sent_at=datetime.now(UTC),
        lease_owner=owner,
        lease_expires=datetime.now(UTC) + left,
        error=None,
    )
    assert await ledger_of(prism).swap(rejected, sending)
    assert lease_is_alive(sending, datetime.now(UTC)) is alive
    sent = posts(server)

    if alive:
        with pytest.raises(SubmissionInFlightError) as flight:
            await create(prism, "k")
        assert flight.value.key == "k"
        assert flight.value.maybe_sent
        assert await row(prism, "k") == sending
        with pytest.raises(SubmissionInFlightError):
            await prism.reconcile("k")
        with pytest.raises(InvalidRequestError, match="live process"):
            await ledger_of(prism).resolve("k", not_sent=True)
        assert await row(prism, "k") == sending
    else:
        with pytest.raises(AmbiguousSubmissionError) as info:
            await create(prism, "k")
        now_ambiguous = await row(prism, "k")
        assert now_ambiguous.state == S.AMBIGUOUS
        assert now_ambiguous.attempt == 2
        assert (now_ambiguous.lease_owner, now_ambiguous.lease_expires) == (None, None)
        assert now_ambiguous.error is not None
        assert "stopped" in now_ambiguous.error
        assert info.value.submission == now_ambiguous
        with pytest.raises(AmbiguousSubmissionError):
            await create(prism, "k")
    assert posts(server) == sent
    assert len(server.generations) == 0


async def test_reconcile_settles_a_crash_after_the_post(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """The POST was queued, then the process died before recording the answer (its row still
    ``sending``, its owner gone): reconcile marks it ambiguous and finds the generation."""
    ambiguous = await make_ambiguous(prism, server, "k")
    crashed = bumped(
        ambiguous,
        state=S.SENDING,
        error=None,
        lease_owner=str(dead_owner()),
        lease_expires=datetime.now(UTC) + timedelta(minutes=1),
    )
    assert await ledger_of(prism).swap(ambiguous, crashed)
    reconciled = await prism.reconcile("k")
    assert reconciled.state == S.RECONCILED
    assert reconciled.generation_ids == tuple(server.generations)
    assert posts(server) == 1


async def test_a_second_task_with_the_key_in_flight_is_refused(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """While one task's POST is in flight, the same key from another task is in flight
    (this process holds the lease); afterwards the batch replays."""
    server.inject("POST", CREATE_PATH, delay=0.5)
    first = asyncio.create_task(create(prism, "k"))
    await until(lambda: posts(server) == 1)
    in_flight = await row(prism, "k")
    assert in_flight.state == S.SENDING
    assert in_flight.lease_owner == str(Owner.me())
    assert in_flight.lease_expires is not None
    assert in_flight.lease_expires > datetime.now(UTC) + timedelta(seconds=prism.timeout)
    with pytest.raises(SubmissionInFlightError):
        await create(prism, "k")
    batch = await first
    assert (await create(prism, "k")).ids == batch.ids
    assert posts(server) == 1


async def test_the_lease_is_renewed_while_the_post_is_in_flight(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """With a short lease (0.3 s, renewed every 0.1 s) and a POST answered after 0.6 s, the
    row stays ``sending`` under a live lease whose expiry moves on; then it is accepted."""
    durable = prism._durable
    assert durable is not None
    durable.lease = timedelta(seconds=0.3)
    server.inject("POST", CREATE_PATH, delay=0.6)
    task = asyncio.create_task(create(prism, "k"))
    await until(lambda: posts(server) == 1)
    seen: list[Submission] = []
    while not task.done():
        current = await row(prism, "k")
        if current.state == S.SENDING:
            assert lease_is_alive(current, datetime.now(UTC)), current
            seen.append(current)
        await asyncio.sleep(0.05)
    batch = await task
    expiries = sorted({s.lease_expires for s in seen if s.lease_expires is not None})
    assert len(expiries) >= 3  # renewed at least twice
    assert max(s.version for s in seen) >= 2
    accepted = await row(prism, "k")
    assert accepted.state == S.ACCEPTED
    assert accepted.generation_ids == tuple(batch.ids)
    assert accepted.lease_expires is None


async def test_cancelled_in_flight_is_ambiguous(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """The task is cancelled while its POST is in flight (the server queued it): the row is
    ambiguous, CancelledError propagates, and reconcile finds the generation."""
    server.inject("POST", CREATE_PATH, delay=5, processed=True)
    task = asyncio.create_task(create(prism, "k"))
    await until(lambda: len(server.generations) == 1)
    assert (await row(prism, "k")).state == S.SENDING
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled = await row(prism, "k")
    assert cancelled.state == S.AMBIGUOUS
    assert cancelled.error is not None
    assert "cancelled" in cancelled.error
    assert (cancelled.lease_owner, cancelled.lease_expires) == (None, None)
    with pytest.raises(AmbiguousSubmissionError):
        await create(prism, "k")
    assert (await prism.reconcile("k")).generation_ids == tuple(server.generations)
    assert posts(server) == 1


class StallingLedger(SQLiteLedger):
    """A SQLiteLedger whose ``stall`` write ("insert", or "swap" to ``sending``) lands, then
    never returns (until cancelled): a call cancelled while committing its row. With
    ``blind_get`` its first ``get`` answers None (another task inserted the key meanwhile)."""

    def __init__(self, path: Path, *, stall: str, blind_get: bool = False) -> None:
        super().__init__(path)
        self.stall = stall
        self.blind_get = blind_get
        self.stalled = asyncio.Event()

    async def get(self, key: str) -> Submission | None:
        if self.blind_get:
            self.blind_get = False
            return None
        return await super().get(key)

    async def _hang(self) -> None:
        self.stalled.set()
        await asyncio.Event().wait()

    async def insert(self, submission: Submission) -> bool:
        done = await super().insert(submission)
        if self.stall == "insert":
            await self._hang()
        return done

    async def swap(self, expected: Submission, new: Submission) -> bool:
        done = await super().swap(expected, new)
        if self.stall == "swap" and new.state == S.SENDING:
            await self._hang()
        return done


@pytest.mark.parametrize("stall", ["insert", "swap"])
async def test_cancelled_while_committing_the_row_is_rejected(
    server: FakePrismServer, db: Path, stall: str
) -> None:
    """Cancelled after the ``sending`` row was written but before the POST left: nothing was
    sent, so the row is ``rejected`` (not left ``sending`` under this live process's lease,
    which would be SubmissionInFlightError, then ambiguous); the key sends on the next call."""
    async with open_client(server, db) as prism:
        if stall == "swap":  # a rejected key being sent again
            await make_rejected(prism, server, "k")
    ledger = StallingLedger(db, stall=stall)
    async with PrismClient(
        server.api_key, base_url=server.base_url, retry=NO_WAIT, ledger=ledger
    ) as prism:
        sent = posts(server)
        task = asyncio.create_task(create(prism, "k"))
        await ledger.stalled.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled = await row(prism, "k")
        assert cancelled.state == S.REJECTED
        assert cancelled.error == "cancelled before it was sent"
        assert (cancelled.lease_owner, cancelled.lease_expires) == (None, None)
        assert posts(server) == sent
        ledger.stall = ""
        await create(prism, "k")
        accepted = await row(prism, "k")
        assert accepted.state == S.ACCEPTED
        assert accepted.attempt == cancelled.attempt + 1
        assert posts(server) == sent + 1


async def test_a_cancelled_claim_leaves_another_tasks_row_alone(
    server: FakePrismServer, db: Path
) -> None:
    """Two tasks race for a new key; the loser (its insert refused) is cancelled while
    committing: the winner's ``sending`` row is not touched, and it is accepted."""
    server.inject("POST", CREATE_PATH, delay=0.3)
    async with open_client(server, db) as winner:
        first = asyncio.create_task(create(winner, "k"))
        await until(lambda: posts(server) == 1)
        sending = await row(winner, "k")
        loser_ledger = StallingLedger(db, stall="insert", blind_get=True)
        async with PrismClient(
            server.api_key, base_url=server.base_url, retry=NO_WAIT, ledger=loser_ledger
        ) as loser:
            second = asyncio.create_task(create(loser, "k"))
            await loser_ledger.stalled.wait()
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            assert await row(loser, "k") == sending
        batch = await first
        assert (await row(winner, "k")).generation_ids == tuple(batch.ids)
    assert posts(server) == 1


async def test_a_prompt_too_short_to_search_for_stays_ambiguous(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """The history search needs 2 characters: a one-character prompt cannot be looked up, so
    reconcile says so (instead of failing on its own search) and the key is resolved by hand."""
    await make_ambiguous(prism, server, "k", prompt="A")
    still = await prism.reconcile("k")
    assert still.state == S.AMBIGUOUS
    assert still.error is not None
    assert "too short" in still.error
    assert not server.requests_to("GET", "/api/assets/search")
    (queued,) = server.generations
    await ledger_of(prism).resolve("k", generation_ids=[queued])
    assert (await create(prism, "k", prompt="A")).ids == [queued]


# -- resolving by hand ---------------------------------------------------------------------------


async def test_resolve_not_sent_lets_the_key_send_again(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """``not_sent=True``: rejected; the next call sends (attempt 2) and is accepted."""
    server.inject("POST", CREATE_PATH, drop=True)  # not processed: really nothing queued
    with pytest.raises(APIConnectionError):
        await create(prism, "k")
    assert (await row(prism, "k")).state == S.AMBIGUOUS
    assert server.generations == {}
    resolved = await ledger_of(prism).resolve("k", not_sent=True)
    assert resolved.state == S.REJECTED
    batch = await create(prism, "k")
    accepted = await row(prism, "k")
    assert (accepted.state, accepted.attempt) == (S.ACCEPTED, 2)
    assert accepted.generation_ids == tuple(batch.ids) == tuple(server.generations)
    assert posts(server) == 2


async def test_resolve_with_ids_then_create_returns_them(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """``generation_ids=[...]``: the key replays them, sends nothing."""
    await make_ambiguous(prism, server, "k")
    (queued,) = server.generations
    await ledger_of(prism).resolve("k", generation_ids=[queued])
    batch = await create(prism, "k")
    assert batch.ids == [queued]
    assert posts(server) == 1
    assert await ledger_of(prism).generation(queued) == GenerationRecord(queued, key="k")


# -- what waits and downloads record -------------------------------------------------------------


async def test_waits_and_downloads_are_recorded(
    prism: PrismClient, server: FakePrismServer, tmp_path: Path
) -> None:
    """A wait records the terminal status (completed, or failed with its error); a download
    records the file's path and size, keeping the status."""
    ok = await create(prism, "ok")
    bad = await create(prism, "bad", prompt="[fail] A red fox")
    ledger = ledger_of(prism)
    assert await ledger.generation(ok.ids[0]) is None  # nothing known before a wait
    server.advance(GENERATION_SECONDS)

    video = await prism.wait_for_generation(ok.ids[0])
    completed = await ledger.generation(video.id)
    assert completed is not None
    assert (completed.status, completed.error) == ("completed", None)
    assert completed.completed_at is not None
    assert completed.completed_at == video.completed_at

    with pytest.raises(GenerationFailedError):
        await prism.wait_for_generation(bad.ids[0])
    failed = await ledger.generation(bad.ids[0])
    assert failed is not None
    assert (failed.status, failed.error) == ("failed", "Generation failed")
    assert failed.path is None

    path = await prism.generations.download(video, tmp_path)
    downloaded = await ledger.generation(video.id)
    assert downloaded is not None
    assert downloaded.path == str(path)
    assert downloaded.size == path.stat().st_size == len(server.video)
    assert downloaded.status == "completed"


# -- templates and webhooks ----------------------------------------------------------------------


@pytest.fixture
async def hook_root(serve: Serve) -> tuple[str, list[WebhookHub]]:
    """A loopback app whose ``/hook/<n>`` routes to the n-th hub of the returned list."""
    hubs: list[WebhookHub] = []

    async def route(request: web.Request) -> web.StreamResponse:
        return await hubs[int(request.match_info["n"])].aiohttp_handler(request)

    app = web.Application()
    app.router.add_post("/hook/{n}", route)
    return await serve(app), hubs


def new_hub(hook_root: tuple[str, list[WebhookHub]]) -> tuple[WebhookHub, str]:
    root, hubs = hook_root
    hub = WebhookHub()
    hubs.append(hub)
    return hub, hub.url_for(f"{root}/hook/{len(hubs) - 1}")


TEMPLATE_KEY = "campaign 42/clip&7=ünï"
VARIABLES = {"hook": "Hello there", "benefit": "Saves time"}


async def test_a_template_key_rides_in_the_hub_url_and_not_in_the_fingerprint(
    server: FakePrismServer, db: Path, hook_root: tuple[str, list[WebhookHub]]
) -> None:
    """The webhook URL the fake receives carries ``prism_key=<key>`` (and still the hub's
    token); a new hub (another token, another URL) with the same key replays, no POST."""
    hub, url = new_hub(hook_root)
    async with open_client(server, db, webhooks=hub) as prism:
        batch = await prism.templates.generate(
            "abc123", variables=VARIABLES, webhook_url=url, key=TEMPLATE_KEY
        )
        recorded = await row(prism, TEMPLATE_KEY)
    (post,) = server.requests_to("POST", TEMPLATE_PATH)
    sent_url = post.json["webhook_url"]
    query = dict(parse_qsl(urlsplit(sent_url).query))
    assert query["prism_key"] == TEMPLATE_KEY
    assert hub.owns(sent_url)
    assert (recorded.kind, recorded.state) == ("template", S.ACCEPTED)
    assert recorded.generation_ids == tuple(batch.ids)
    assert recorded.credits_charged == batch.credits_charged

    other_hub, other_url = new_hub(hook_root)
    async with open_client(server, db, webhooks=other_hub) as prism:
        again = await prism.templates.generate(
            "abc123", variables=VARIABLES, webhook_url=other_url, key=TEMPLATE_KEY
        )
        assert again.ids == batch.ids
        assert again.template_id == "abc123"
        no_hook = await prism.templates.generate("abc123", variables=VARIABLES, key=TEMPLATE_KEY)
        assert no_hook.ids == batch.ids
        with pytest.raises(SubmissionConflictError):
            await prism.templates.generate(
                "abc123", variables={**VARIABLES, "hook": "Bye"}, key=TEMPLATE_KEY
            )
        with pytest.raises(SubmissionConflictError):
            await prism.templates.generate("featured-still", variables={}, key=TEMPLATE_KEY)

        # its webhook arrives later: an accepted row is left as it is
        server.advance(GENERATION_SECONDS)
        await server.drain_webhooks()
        assert [d.status for d in server.webhook_deliveries] == [200]
        assert await row(prism, TEMPLATE_KEY) == recorded
    assert posts(server, TEMPLATE_PATH) == 1


async def test_a_foreign_webhook_url_is_sent_as_given(
    server: FakePrismServer, db: Path, hook_root: tuple[str, list[WebhookHub]]
) -> None:
    """Only the hub's own URLs carry the key: another URL is the caller's, untouched."""
    hub, _ = new_hub(hook_root)
    foreign = "https://example.test/hooks/prism?tenant=7"
    async with open_client(server, db, webhooks=hub) as prism:
        await prism.templates.generate("abc123", variables=VARIABLES, webhook_url=foreign, key="t")
    assert server.requests_to("POST", TEMPLATE_PATH)[0].json["webhook_url"] == foreign


async def test_an_ambiguous_template_key_is_settled_by_its_webhook(
    server: FakePrismServer, db: Path, hook_root: tuple[str, list[WebhookHub]]
) -> None:
    """A processed 502 on templates.generate: ambiguous; reconcile cannot search for it and
    says so; the webhook that arrives for its generation (URL carrying the key) settles it
    as reconciled with that generation's id; the key then replays."""
    hub, url = new_hub(hook_root)
    async with open_client(server, db, webhooks=hub) as prism:
        server.inject("POST", TEMPLATE_PATH, status=502, processed=True)
        with pytest.raises(PrismError) as info:
            await prism.templates.generate(
                "abc123", variables=VARIABLES, webhook_url=url, key=TEMPLATE_KEY
            )
        assert info.value.maybe_sent
        (queued,) = server.generations
        ambiguous = await row(prism, TEMPLATE_KEY)
        assert (ambiguous.state, ambiguous.generation_ids) == (S.AMBIGUOUS, ())

        still = await prism.reconcile(TEMPLATE_KEY)
        assert still.state == S.AMBIGUOUS
        assert still.error is not None
        assert "webhook" in still.error
        with pytest.raises(AmbiguousSubmissionError):
            await prism.templates.generate(
                "abc123", variables=VARIABLES, webhook_url=url, key=TEMPLATE_KEY
            )

        server.advance(GENERATION_SECONDS)
        await server.drain_webhooks()
        (delivery,) = server.webhook_deliveries
        assert delivery.status == 200
        assert dict(parse_qsl(urlsplit(delivery.url).query))["prism_key"] == TEMPLATE_KEY

        settled = await row(prism, TEMPLATE_KEY)
        assert settled.state == S.RECONCILED
        assert settled.generation_ids == (queued,)
        batch = await prism.templates.generate(
            "abc123", variables=VARIABLES, webhook_url=url, key=TEMPLATE_KEY
        )
        assert batch.ids == [queued]
    assert posts(server, TEMPLATE_PATH) == 1


async def test_a_webhook_naming_a_generation_key_changes_nothing(
    server: FakePrismServer, db: Path, hook_root: tuple[str, list[WebhookHub]]
) -> None:
    """Webhooks are unauthenticated hints: one naming a prompt submission's key (which sends
    no webhook URL) does not settle it."""
    hub, url = new_hub(hook_root)
    async with open_client(server, db, webhooks=hub) as prism:
        ambiguous = await make_ambiguous(prism, server, "k")
        token = dict(parse_qsl(urlsplit(url).query))[TOKEN_PARAM]
        body = json.dumps({"generation_id": "gen_forged", "status": "completed"})
        reply = await hub.handle(body, {TOKEN_PARAM: token, "prism_key": "k"})
        assert reply.status == 200
        assert await row(prism, "k") == ambiguous


# -- what the ledger never holds, and what it logs -----------------------------------------------


async def test_the_api_key_never_reaches_the_ledger(
    db: Path, tmp_path: Path, hook_root: tuple[str, list[WebhookHub]]
) -> None:
    """After accepted, rejected (401 and 402), ambiguous, template, wait and download rows,
    neither the API key, a wrong key tried, the hub's token nor a presigned URL is in the
    SQLite file or its WAL, nor in a row's repr."""
    secret = "prism_sk_live_5ecret0123456789abcdef"
    wrong = "prism_sk_live_wrongkey98765432100000"
    hub, url = new_hub(hook_root)
    token = dict(parse_qsl(urlsplit(url).query))[TOKEN_PARAM]
    forbidden = [secret.encode(), wrong.encode(), token.encode(), b"X-Amz-Signature"]

    def assert_clean() -> None:
        for path in (db, db.with_name(db.name + "-wal")):
            if path.exists():
                data = path.read_bytes()
                for text in forbidden:
                    assert text not in data, (path.name, text)

    async with FakePrismServer(api_key=secret, generation_seconds=GENERATION_SECONDS) as fake:
        async with open_client(fake, db, webhooks=hub) as prism:
            batch = await create(prism, "accepted")
            fake.credits = 0
            with pytest.raises(InsufficientCreditsError):
                await create(prism, "rejected")
            fake.credits = 10_000
            ambiguous = await make_ambiguous(prism, fake, "ambiguous")
            await prism.templates.generate("abc123", variables=VARIABLES, webhook_url=url, key="t")
            fake.advance(GENERATION_SECONDS)
            video = await prism.wait_for_generation(batch.ids[0])
            await prism.generations.download(video, tmp_path)
            with pytest.raises(AmbiguousSubmissionError) as info:
                await create(prism, "ambiguous")
            assert_key_free(info.value, secret)
            rows = [s async for s in ledger_of(prism).list()]
            assert [s.key for s in rows] == ["accepted", "rejected", "ambiguous", "t"]
            for submission in rows:
                assert secret not in repr(submission)
                assert token not in repr(submission)
            assert ambiguous.error is not None
            assert_clean()  # while open: recent pages are in the WAL
        async with PrismClient(
            wrong, base_url=fake.base_url, retry=NO_WAIT, ledger=SQLiteLedger(db)
        ) as intruder:
            with pytest.raises(PrismError):
                await create(intruder, "unauthorized")
            assert (await row(intruder, "unauthorized")).state == S.REJECTED
    assert_clean()  # after closing: checkpointed into the main file


async def test_state_changes_are_logged(
    prism: PrismClient, server: FakePrismServer, caplog: pytest.LogCaptureFixture
) -> None:
    """INFO when a row is committed as sending and when it is accepted (key, attempt, state,
    ids, also as record attributes); WARNING when it becomes ambiguous."""
    caplog.set_level(logging.INFO, logger=LEDGER_LOGGER)
    batch = await create(prism, "clip-1")
    records = [r for r in caplog.records if r.name == LEDGER_LOGGER]
    assert [(r.levelno, r.__dict__["prism_state"]) for r in records] == [
        (logging.INFO, S.SENDING),
        (logging.INFO, S.ACCEPTED),
    ]
    sending, accepted = records
    assert "key='clip-1'" in sending.getMessage()
    assert "attempt=1" in sending.getMessage()
    assert "state=sending" in sending.getMessage()
    assert "state=accepted" in accepted.getMessage()
    assert f"ids={batch.ids[0]}" in accepted.getMessage()
    assert accepted.__dict__["prism_key"] == "clip-1"
    assert accepted.__dict__["prism_attempt"] == 1
    assert accepted.__dict__["prism_generation_ids"] == batch.ids

    caplog.clear()
    await create(prism, "clip-1")  # a replay is not a state change
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []

    await make_ambiguous(prism, server, "clip-2")
    warnings = [r for r in caplog.records if r.name == LEDGER_LOGGER and r.levelno >= 30]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "key='clip-2'" in warnings[0].getMessage()
    assert "state=ambiguous" in warnings[0].getMessage()


# -- the lease owner -----------------------------------------------------------------------------


def test_an_owner_names_host_pid_and_start() -> None:
    """``Owner`` round-trips through its text; this process is alive, an exited one and a
    reused pid are gone, a process of another host is never known to be gone."""
    me = Owner.me()
    assert me.pid == os.getpid()
    assert me.host == socket.gethostname()
    assert Owner.parse(str(me)) == me
    assert Owner.parse("host.with:colons:12:345") == Owner("host.with:colons", 12, "345")
    assert Owner.parse("garbage") is None
    assert Owner.parse("host:notapid:1") is None
    assert not me.is_gone()
    assert dead_owner().is_gone()
    assert Owner(me.host, me.pid, "another-start").is_gone()
    assert not Owner("some-other-host", 1, "1").is_gone()


async def test_generation_records_are_written_in_groups(tmp_path: Path) -> None:
    """Records arriving while a batch is written go in the next batch (one transaction each),
    every caller waits for its own, and a cancelled caller's record is written anyway."""
    ledger = SQLiteLedger(tmp_path / "group.db")
    batches: list[int] = []
    record_many = ledger.record_many

    async def counting(records: Sequence[GenerationRecord]) -> None:
        batches.append(len(records))
        await record_many(records)

    ledger.record_many = counting  # type: ignore[method-assign]
    durable = Durable(ledger, timeout=10)
    try:
        finished = [Generation(id=f"gen_{i}", status="completed") for i in range(50)]
        await asyncio.gather(*(durable.finished(g) for g in finished))
        assert sum(batches) == 50
        assert len(batches) < 50  # grouped
        cancelled = asyncio.create_task(durable.downloaded("gen_0", "/v/gen_0.mp4", 7))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        for _ in range(100):
            record = await ledger.generation("gen_0")
            if record is not None and record.path is not None:
                break
            await asyncio.sleep(0.01)
        assert record == GenerationRecord("gen_0", status="completed", path="/v/gen_0.mp4", size=7)
        assert await ledger.generation("gen_49") == GenerationRecord("gen_49", status="completed")
    finally:
        await ledger.aclose()
