"""prism.run's keys come from the request, not its position: edited inputs never mislabel or
pay again, explicit keys recorded for another request are conflicts, ledgers written with the
earlier positional keys resume, and ``max_credits`` counts reconciled keys."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from prism_async import (
    GenerationRequest,
    InternalServerError,
    PrismClient,
    RunResult,
    TemplateRequest,
)
from prism_async.ledger import SQLiteLedger
from prism_async.runs import run_keys
from prism_async.testing import FakePrismServer
from tests.test_run import FAST, client, fake, posts

__all__ = ["fake"]


def clip(text: str, **fields: Any) -> GenerationRequest:
    return GenerationRequest(prompt=text, model_name="veo-3.1", **fields)


async def run(
    fake: FakePrismServer, ledger: Path, requests: Sequence[Any], **options: Any
) -> list[RunResult]:
    async with client(fake, ledger) as prism:
        results = [r async for r in prism.run(requests, run_id="batch", **options)]
    return sorted(results, key=lambda r: r.index)


def own_videos(fake: FakePrismServer, results: Sequence[RunResult]) -> None:
    """Every result's generations were made from its own request."""
    for result in results:
        assert result.generations
        for generation in result.generations:
            made = fake.generations[generation.id]
            if isinstance(result.request, GenerationRequest):
                assert made.prompt == result.request.prompt
            else:
                assert made.template_id == result.request.template_id


async def test_inserting_deleting_and_swapping_lines_sends_only_the_new_request(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    """The issue's trial: a line inserted at the top, one deleted, two swapped."""
    ledger = tmp_path / "l.db"
    first = await run(fake, ledger, [clip("alpha"), clip("bravo"), clip("charlie"), clip("delta")])
    own_videos(fake, first)
    keys = {r.request: r.key for r in first}
    assert posts(fake) == 4
    edited = [clip("new on top"), clip("delta"), clip("bravo"), clip("charlie")]  # alpha deleted
    again = await run(fake, ledger, edited)
    assert posts(fake) == 5  # only the new one
    own_videos(fake, again)
    assert [r.index for r in again] == [0, 1, 2, 3]
    assert [r.request for r in again] == edited
    assert all(again[i].key == keys[edited[i]] for i in (1, 2, 3))
    assert {g.id for r in again[1:] for g in r.generations} == {
        g.id for r in first[1:] for g in r.generations
    }


async def test_identical_requests_are_still_two_videos_and_resume_as_two(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    same = [clip("twice"), clip("once"), clip("twice")]
    first = await run(fake, tmp_path / "l.db", same)
    digest = first[0].key.split("/")[1]
    assert len(digest) == 16
    assert int(digest, 16) >= 0
    assert [r.key for r in first] == [f"batch/{digest}", first[1].key, f"batch/{digest}.2"]
    assert first[0].generations[0].id != first[2].generations[0].id
    assert posts(fake) == 3
    again = await run(fake, tmp_path / "l.db", [clip("twice"), clip("twice"), clip("once")])
    assert posts(fake) == 3
    assert {r.key for r in again} == {r.key for r in first}


async def test_the_key_ignores_spelling_that_sends_the_same_body(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    """``duration=8`` and ``"8s"``, an omitted count and ``count=1``: one request, one key."""
    async with client(fake, tmp_path / "l.db") as prism:
        assert prism.ledger is not None
        plain = await run_keys(prism.ledger, [clip("a cat", duration="8s")], "r")
        spelled = await run_keys(prism.ledger, [clip("a cat", duration=8, count=1)], "r")
        other = await run_keys(prism.ledger, [clip("a cat", duration="10s")], "r")
        hooked = [TemplateRequest("abc123", webhook_url="https://example.com/hook")]
        assert await run_keys(prism.ledger, [TemplateRequest("abc123")], "r") == await run_keys(
            prism.ledger, hooked, "r"
        )
    assert plain == spelled != other
    assert posts(fake) == 0


async def test_an_explicit_key_recorded_for_another_request_is_a_conflict(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    """Nothing is sent for it, and no other request's video is reported."""
    ledger = tmp_path / "l.db"
    await run(fake, ledger, [clip("the original", key="hero")])
    results = await run(fake, ledger, [clip("something else", key="hero"), clip("fine")])
    assert [r.state for r in results] == ["conflict", "completed"]
    assert results[0].generations == ()
    assert results[0].paths == ()
    assert "hero" in str(results[0].error)
    assert posts(fake) == 2


async def test_a_ledger_with_positional_keys_resumes_without_paying_again(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    """Earlier versions keyed run requests ``batch/<index>`` (by calling ``create(key=...)``
    exactly as here); a run of the same requests, even reordered, sends nothing for them."""
    ledger = tmp_path / "old.db"
    template = TemplateRequest("abc123", variables={"hook": "Hi"})
    old: list[GenerationRequest | TemplateRequest] = [
        clip("one"),
        clip("two"),
        clip("two"),
        template,
    ]
    async with client(fake, ledger) as prism:
        for index, request in enumerate(old):
            if isinstance(request, GenerationRequest):
                await prism.generations.create(key=f"batch/{index}", **request.arguments())
            else:
                await prism.templates.generate(
                    request.template_id, variables=request.variables, key=f"batch/{index}"
                )
    assert posts(fake) == 4
    again = await run(fake, ledger, old, download_to=tmp_path / "v")
    assert posts(fake) == 4
    assert [r.key for r in again] == ["batch/0", "batch/1", "batch/2", "batch/3"]
    assert {r.state for r in again} == {"downloaded"}
    own_videos(fake, again)
    reordered = [clip("two"), template, clip("new"), clip("one"), clip("two")]
    moved = await run(fake, ledger, reordered)
    assert posts(fake) == 5  # only "new"
    assert [r.key for r in moved if r.request != clip("new")] == [
        "batch/1", "batch/3", "batch/0", "batch/2"
    ]  # fmt: skip
    own_videos(fake, moved)


async def make_ambiguous(
    fake: FakePrismServer, ledger: Path, requests: Sequence[GenerationRequest | TemplateRequest]
) -> None:
    """Send each request under its run key, the server queueing it but the answer lost."""
    async with client(fake, ledger) as prism:
        assert prism.ledger is not None
        keys = await run_keys(prism.ledger, requests, "batch")
        for key, request in zip(keys, requests, strict=True):
            if isinstance(request, GenerationRequest):
                fake.inject("POST", "/api/generations", status=502, processed=True)
                with pytest.raises(InternalServerError):
                    await prism.generations.create(key=key, **request.arguments())
            else:
                fake.inject("POST", "/api/templates/*", status=502, processed=True)
                with pytest.raises(InternalServerError):
                    await prism.templates.generate(
                        request.template_id, variables=request.variables, key=key
                    )
            assert (await prism.ledger.get(key)).state == "ambiguous"  # type: ignore[union-attr]


async def test_max_credits_counts_reconciled_keys(fake: FakePrismServer, tmp_path: Path) -> None:
    """4 keys whose answers were lost are reconciled (480 credits at 120 each); with
    ``max_credits=600`` only one more video may be bought, and the fake charged 600."""
    ledger = tmp_path / "l.db"
    lost = [clip(f"lost answer {i}") for i in range(4)]
    await make_ambiguous(fake, ledger, lost)
    assert 10_000 - fake.credits == 480
    more = [clip(f"new {i}") for i in range(4)]
    results = await run(fake, ledger, [*lost, *more], concurrency=1, max_credits=600)
    states = [r.state for r in results]
    assert states[:4] == ["completed"] * 4  # reconciled, not sent again
    assert sorted(states[4:]) == ["completed", "skipped", "skipped", "skipped"]
    assert 10_000 - fake.credits == 600


async def test_max_credits_holds_ambiguous_keys_at_their_price(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    """A key that may have been charged and that no rule can settle (a template without a
    webhook, its window closed) holds a price: with 300 allowed, one video at 120 is bought
    and the next is skipped (120 + 120 held + 120 > 300)."""
    ledger = tmp_path / "l.db"
    template = TemplateRequest("abc123", variables={"hook": "Lost"})
    await make_ambiguous(fake, ledger, [template])
    charged = 10_000 - fake.credits
    requests: list[GenerationRequest | TemplateRequest] = [template, clip("x one"), clip("x two")]
    async with PrismClient(
        fake.api_key,
        base_url=fake.base_url,
        ledger=SQLiteLedger(ledger, reconcile_window=0.3, reconcile_interval=0.05),
        poll=FAST,
    ) as prism:
        results = [
            r async for r in prism.run(requests, run_id="batch", concurrency=1, max_credits=300)
        ]
    states = {r.index: r.state for r in results}
    assert states[0] == "ambiguous"
    assert sorted((states[1], states[2])) == ["completed", "skipped"]
    assert 10_000 - fake.credits == charged + 120
