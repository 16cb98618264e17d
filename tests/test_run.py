"""prism.run: resumable bulk runs on a ledger, against the fake server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from prism_async import (
    GenerationFailedError,
    GenerationRequest,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    PollPolicy,
    PrismClient,
    RunResult,
    TemplateRequest,
    WaitTimeoutError,
)
from prism_async.ledger import SQLiteLedger
from prism_async.testing import FakePrismServer
from tests.conftest import NO_WAIT

FAST = PollPolicy(initial_delay=0.01, interval=0.02, max_interval=0.05)


@pytest.fixture
async def fake() -> AsyncIterator[FakePrismServer]:
    async with FakePrismServer(generation_seconds=0.1) as server:
        yield server


@contextlib.asynccontextmanager
async def client(fake: FakePrismServer, ledger: Path) -> AsyncIterator[PrismClient]:
    async with PrismClient(
        fake.api_key,
        base_url=fake.base_url,
        ledger=SQLiteLedger(ledger),
        poll=FAST,
        retry=NO_WAIT,
    ) as prism:
        yield prism


async def run_all(
    fake: FakePrismServer, ledger: Path, requests: Sequence[Any], **options: Any
) -> dict[str, RunResult]:
    async with client(fake, ledger) as prism:
        results = prism.run(requests, run_id="batch", **options)
        return {by_position(r): r async for r in results}


def by_position(result: RunResult) -> str:
    """A result's explicit key, or ``batch/<index>`` (its derived key names the request)."""
    assert result.request.key is not None or result.key.startswith("batch/")
    return result.request.key or f"batch/{result.index}"


def prompts(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=f"clip {i}", model_name="veo-3.1") for i in range(n)]


def posts(fake: FakePrismServer) -> int:
    return len(fake.requests_to("POST", "/api/*"))


def downloads(fake: FakePrismServer) -> int:
    return len(fake.requests_to("GET", "/storage/videos/*"))


async def test_a_run_downloads_everything_and_a_rerun_sends_and_downloads_nothing(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    requests: list[Any] = [
        *prompts(4),
        TemplateRequest("abc123", variables={"hook": "Hi there"}, key="tpl"),
    ]
    results = await run_all(fake, tmp_path / "l.db", requests, download_to=tmp_path / "v")
    assert set(results) == {"batch/0", "batch/1", "batch/2", "batch/3", "tpl"}
    assert {r.state for r in results.values()} == {"downloaded"}
    for result in results.values():
        assert [p.read_bytes() for p in result.paths] == [fake.video]
        assert [g.id for g in result.generations] == [p.stem for p in result.paths]
    assert (posts(fake), downloads(fake)) == (5, 5)
    again = await run_all(fake, tmp_path / "l.db", requests, download_to=tmp_path / "v")
    assert {k: r.paths for k, r in again.items()} == {k: r.paths for k, r in results.items()}
    assert {r.state for r in again.values()} == {"downloaded"}
    assert (posts(fake), downloads(fake)) == (5, 5)  # resumed: nothing sent, nothing fetched


async def test_without_a_folder_results_are_completed_and_a_later_run_downloads(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    results = await run_all(fake, tmp_path / "l.db", prompts(2))
    assert {r.state for r in results.values()} == {"completed"}
    assert all(r.paths == () for r in results.values())
    ids = [g.id for r in results.values() for g in r.generations]
    folder = tmp_path / "v"
    folder.mkdir()
    stale = folder / f".{ids[0]}.mp4.dead.part"
    stale.write_bytes(b"left by a killed process")
    # renamed into place, then killed before the ledger recorded it: not fetched again
    (folder / f"{ids[1]}.mp4").write_bytes(fake.video)
    again = await run_all(fake, tmp_path / "l.db", prompts(2), download_to=folder)
    assert {r.state for r in again.values()} == {"downloaded"}
    assert (posts(fake), downloads(fake)) == (2, 1)
    assert not stale.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.mp4" for i in ids)
    async with client(fake, tmp_path / "l.db") as prism:
        assert prism.ledger is not None
        recorded = await prism.ledger.generation(ids[1])
        assert recorded is not None
        assert (recorded.path, recorded.size) == (str(folder / f"{ids[1]}.mp4"), len(fake.video))


async def test_max_credits_is_never_passed_even_across_resumes(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    """At 120 credits a video, 700 allows five: the rest are skipped, now and on a re-run."""
    for _ in range(2):
        results = await run_all(fake, tmp_path / "l.db", prompts(8), concurrency=4, max_credits=700)
        states = [results[f"batch/{i}"].state for i in range(8)]
        assert states.count("completed") == 5
        assert states.count("skipped") == 3
        assert 10_000 - fake.credits == 600


async def test_a_402_stops_further_submissions(fake: FakePrismServer, tmp_path: Path) -> None:
    fake.credits = 250  # two videos
    results = await run_all(fake, tmp_path / "l.db", prompts(5), concurrency=1)
    states = [results[f"batch/{i}"].state for i in range(5)]
    assert states == ["completed", "completed", "rejected", "skipped", "skipped"]
    assert isinstance(results["batch/2"].error, InsufficientCreditsError)
    assert posts(fake) == 3
    fake.credits = 10_000
    # The 402 paused paid POSTs for every process on the ledger (pause_on_402, 60 s): a run
    # at once is refused without sending, until the pause ends (or is cleared).
    paused = await run_all(fake, tmp_path / "l.db", prompts(5), concurrency=1)
    assert [paused[f"batch/{i}"].state for i in range(2, 5)] == ["rejected", "skipped", "skipped"]
    assert isinstance(paused["batch/2"].error, InsufficientCreditsError)
    assert paused["batch/2"].error.paused_until is not None
    assert posts(fake) == 3
    async with SQLiteLedger(tmp_path / "l.db") as ledger:
        await ledger.clear_paid_pause()
    again = await run_all(fake, tmp_path / "l.db", prompts(5), concurrency=1)
    assert [again[f"batch/{i}"].state for i in range(5)] == ["completed"] * 5
    assert posts(fake) == 6  # the rejected one sent again, the skipped ones for the first time


async def test_failures_timeouts_and_ambiguity_are_reported_per_request(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    """A lost answer is a waiting state: reconciled through the history in the same run, not
    sent again; a failed generation is ``failed``; a slow one ``timed_out``."""
    fake.inject("POST", "/api/generations", status=502, processed=True)  # the first POST
    requests = [
        GenerationRequest(prompt="queued, answer lost", model_name="veo-3.1"),
        GenerationRequest(prompt="[fail] a cat", model_name="veo-3.1"),
    ]
    results = await run_all(fake, tmp_path / "l.db", requests, concurrency=1)
    lost = next(g for g in fake.generations.values() if g.prompt == "queued, answer lost")
    assert results["batch/0"].state == "completed"  # reconciled through history, not resent
    assert [g.id for g in results["batch/0"].generations] == [lost.id]
    assert results["batch/1"].state == "failed"
    assert isinstance(results["batch/1"].error, GenerationFailedError)
    again = await run_all(fake, tmp_path / "l.db", requests, download_to=tmp_path / "v")
    assert again["batch/0"].state == "downloaded"
    assert posts(fake) == 2
    fake.generation_seconds = 100
    late = await run_all(
        fake,
        tmp_path / "l2.db",
        [GenerationRequest(prompt="slow", model_name="veo-3.1")],
        timeout=0.2,
    )
    assert late["batch/0"].state == "timed_out"
    assert isinstance(late["batch/0"].error, WaitTimeoutError)


async def test_an_ambiguous_key_waits_for_the_history_then_is_sent_again_or_settled(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    """With a history that lists only finished generations, a lost answer waits (reconciled
    every ``reconcile_interval``) until its video appears; a POST that never queued anything
    becomes ``rejected`` once the window closes, and is sent again: every video delivered,
    none paid twice."""
    fake.history_completed_only = True
    fake.generation_seconds = 0.3
    fake.inject("POST", "/api/generations", status=502, processed=True)  # queued, answer lost
    requests = [GenerationRequest(prompt="lost but queued", model_name="veo-3.1")]
    ledger = SQLiteLedger(tmp_path / "l.db", reconcile_window=5, reconcile_interval=0.1)
    async with PrismClient(
        fake.api_key, base_url=fake.base_url, ledger=ledger, poll=FAST, retry=NO_WAIT
    ) as prism:
        [found] = [r async for r in prism.run(requests, run_id="w", download_to=tmp_path / "v")]
        assert found.state == "downloaded"
        assert posts(fake) == 1
        fake.inject("POST", "/api/generations", status=502)  # nothing queued, answer lost
        ledger.configure_reconciliation(window=0.5)
        never = [GenerationRequest(prompt="never queued", model_name="veo-3.1")]
        [sent] = [r async for r in prism.run(never, run_id="w", download_to=tmp_path / "v")]
        assert sent.state == "downloaded"
        assert posts(fake) == 3  # the lost POST, then one more once the window closed
        row = await ledger.get(sent.key)
        assert row is not None
        assert (row.state, row.attempt) == ("accepted", 2)
    assert len(fake.generations) == 2


async def test_bad_runs_are_refused_before_anything_is_sent(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        GenerationRequest(prompt="", model_name="veo-3.1")
    assert info.value.field == "prompt"
    with pytest.raises(InvalidRequestError) as info:
        GenerationRequest(prompt="A cat", model_name="veo-3.1", duration="7.5s")
    assert info.value.field == "duration"
    with pytest.raises(InvalidRequestError) as info:
        TemplateRequest("abc123", webhook_url="ftp://x")
    assert info.value.field == "webhook_url"
    with pytest.raises(InvalidRequestError) as info:
        GenerationRequest(prompt="A cat", model_name="veo-3.1", key=" ")
    assert info.value.field == "key"
    async with PrismClient(fake.api_key, base_url=fake.base_url) as plain:
        with pytest.raises(InvalidRequestError) as info:
            [r async for r in plain.run(prompts(1), run_id="x")]
        assert info.value.field == "ledger"
    async with client(fake, tmp_path / "l.db") as prism:
        same = [GenerationRequest(prompt="a", model_name="veo-3.1", key="k")] * 2
        cases: list[tuple[dict[str, Any], str]] = [
            ({"requests": same, "run_id": "x"}, "requests"),
            ({"requests": prompts(1), "run_id": ""}, "run_id"),
            ({"requests": prompts(1), "run_id": "x", "concurrency": 0}, "concurrency"),
            ({"requests": prompts(1), "run_id": "x", "max_credits": -1}, "max_credits"),
            ({"requests": ["A cat"], "run_id": "x"}, "requests[0]"),
        ]
        for options, field in cases:
            with pytest.raises(InvalidRequestError) as info:
                [r async for r in prism.run(**options)]
            assert info.value.field == field
    assert posts(fake) == 0


async def test_leaving_a_run_early_stops_its_work(fake: FakePrismServer, tmp_path: Path) -> None:
    """Closing the results (``contextlib.aclosing``) cancels what the run still does."""
    durations = iter([0.05, 100.0])
    fake.generation_seconds = lambda: next(durations)
    async with client(fake, tmp_path / "l.db") as prism:
        results = prism.run(prompts(2), run_id="b", concurrency=1)
        async with contextlib.aclosing(results):
            first = await anext(results)
            assert first.state == "completed"
        polls = len(fake.requests_to("GET", "/api/generations/*"))
        await asyncio.sleep(0.3)
        assert len(fake.requests_to("GET", "/api/generations/*")) == polls  # nothing polls
        assert [t for t in asyncio.all_tasks() if "runs.py" in repr(t)] == []
    assert len(fake.generations) == 2


async def test_a_wait_that_errors_is_a_failed_result_not_a_hang(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    """A 404 (or 401) while waiting ends that request ``failed`` with the error."""
    await run_all(fake, tmp_path / "l.db", prompts(1), download_to=tmp_path / "v")
    async with FakePrismServer() as other:  # the same ledger, an API that knows nothing
        ledger = SQLiteLedger(tmp_path / "l.db")
        prism = PrismClient(other.api_key, base_url=other.base_url, ledger=ledger, poll=FAST)
        async with prism, asyncio.timeout(10):
            results = [r async for r in prism.run(prompts(1), run_id="batch")]
    assert [r.state for r in results] == ["failed"]
    assert isinstance(results[0].error, NotFoundError)
    assert other.requests_to("POST", "/api/*") == []
