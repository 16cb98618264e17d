"""Ambiguous keys are never sent blindly: reconciled from the account's history, or resolved
by hand (design.md, "Durable submissions")."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import attrs
import pytest

from prism_async import (
    AmbiguousSubmissionError,
    APIConnectionError,
    InvalidRequestError,
    PrismClient,
    PrismError,
)
from prism_async.ledger import GenerationRecord, _reconciling
from prism_async.ledger._reconcile import sent_at
from prism_async.testing import FakePrismServer
from tests.conftest import GENERATION_SECONDS
from tests.ledger.helpers import (
    CREATE_PATH,
    PRICE,
    PROMPT,
    S,
    create,
    ledger_of,
    make_ambiguous,
    posts,
    row,
)

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


async def test_ambiguous_keys_of_one_request_share_its_generations(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """Two ambiguous keys of the same request are interchangeable: reconciling either settles
    both in one pass, first sent first, each with a generation of its own."""
    await make_ambiguous(prism, server, "clip-1")
    await make_ambiguous(prism, server, "clip-2")
    first, second = server.generations
    searches = len(server.requests_to("GET", "/api/assets/search"))
    settled = await prism.reconcile("clip-2")
    assert settled.state == S.RECONCILED
    assert settled.generation_ids == (second,)
    assert (await row(prism, "clip-1")).generation_ids == (first,)
    assert (await row(prism, "clip-1")).state == S.RECONCILED
    assert len(server.requests_to("GET", "/api/assets/search")) == searches + 1


async def test_a_true_shortage_says_what_happens_next(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """Three ambiguous keys of one request and two generations: the first two sent settle,
    the third stays ambiguous and says when it is tried again and when it becomes rejected."""
    for key in ("clip-1", "clip-2"):
        await make_ambiguous(prism, server, key)
    server.inject("POST", CREATE_PATH, status=502)  # the third was never queued
    with pytest.raises(PrismError):
        await create(prism, "clip-3")
    await ledger_of(prism).swap(
        old := await row(prism, "clip-3"),
        attrs.evolve(old, state=S.AMBIGUOUS, version=old.version + 1),
    )
    short = await prism.reconcile("clip-3")
    assert short.state == S.AMBIGUOUS
    assert short.error is not None
    assert "found 0 of 1" in short.error
    assert "3 ambiguous keys share this request" in short.error
    assert "tried again every 30 s" in short.error
    assert "becomes rejected and is sent again" in short.error
    assert "later" not in short.error
    assert {(await row(prism, k)).state for k in ("clip-1", "clip-2")} == {S.RECONCILED}


async def test_a_window_closing_during_a_try_rejects_the_key_at_the_next(
    prism: PrismClient, server: FakePrismServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``reconcile(wait=True)`` judges the window by a try begun after it closed: when the
    window closes while a try is under way (a slow history search, a busy machine), one more
    try rejects the key that nothing was queued for, and it is sent again; it is not left
    ambiguous for a person."""
    server.inject("POST", CREATE_PATH, drop=True)  # not processed: really nothing queued
    with pytest.raises(APIConnectionError):
        await create(prism, "k")
    lost = await row(prism, "k")
    assert lost.state == S.AMBIGUOUS
    ledger_of(prism).configure_reconciliation(window=10, interval=0.01)
    ticks = itertools.count(4.0, 3.0)  # every reading of the clock is 3 s after the last
    start = sent_at(lost)
    monkeypatch.setattr(_reconciling, "_now", lambda: start + timedelta(seconds=next(ticks)))
    settled = await prism.reconcile("k", wait=True)
    assert settled.state == S.REJECTED
    assert settled.error is not None
    assert "nothing was queued" in settled.error
    monkeypatch.undo()
    await create(prism, "k")
    assert (await row(prism, "k")).attempt == 2
    assert posts(server) == 2


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
    assert "tried again every" in early.error
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
