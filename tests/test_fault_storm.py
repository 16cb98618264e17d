"""A seeded fault storm on every endpoint of the fake: every paid request accounted for.

Submissions (prompt and template generations) run concurrently while scripted faults hit
every endpoint: 5xx, 429, 408, drops, stalls past the timeout, garbage status lines, HTML and
truncated bodies, and "the server queued and charged, then the answer was lost". Afterwards the
server's own records are compared with what the caller learned.
"""

from __future__ import annotations

import asyncio
import gc
import random
from pathlib import Path
from typing import Any

from prism_async import (
    GenerationBatch,
    PollPolicy,
    PrismClient,
    PrismError,
    RetryPolicy,
    TemplateGenerationBatch,
)
from prism_async.testing import FakePrismServer
from tests.conftest import assert_key_free

SEED = 20261121
SUBMISSIONS = 90
GARBAGE = b"HTTP/1.1 2OO GARBAGE\r\n\r\n"
HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"


def post_faults(rng: random.Random) -> list[dict[str, Any]]:
    """Faults for a paid POST: some refuse it, some lose it, some act and then lose the answer."""
    kinds: list[dict[str, Any]] = [
        {"status": 500, "body": {"error": "server_error", "message": "boom"}},
        {"status": 502, "body": HTML},
        {"status": 504, "body": ""},
        {"status": 429, "headers": {"Retry-After": "0"}},
        {"status": 408, "body": ""},
        {"drop": True},
        {"raw": GARBAGE},
        {"delay": 1.5},  # the answer comes after the client's timeout: queued, answer lost
        {"processed": True, "status": 502, "body": HTML},
        {"processed": True, "drop": True},
        {"processed": True, "raw": GARBAGE},
        {"processed": True, "status": 200, "body": HTML},
        {"truncate": rng.randint(0, 160)},
        {"truncate": rng.randint(60, 200)},
    ]
    return [dict(rng.choice(kinds)) for _ in range(40)]


def get_faults(rng: random.Random) -> list[dict[str, Any]]:
    """Faults for status requests: none of them may end a wait."""
    kinds: list[dict[str, Any]] = [
        {"status": 500},
        {"status": 502, "body": HTML},
        {"status": 503, "headers": {"Retry-After": "0"}},
        {"status": 429, "headers": {"Retry-After": "0"}},
        {"status": 408, "body": ""},
        {"drop": True, "times": 2},  # aiohttp resends a dropped GET once by itself
        {"raw": GARBAGE},
        {"truncate": rng.randint(0, 40)},
        {"status": 200, "body": HTML},
    ]
    return [dict(rng.choice(kinds)) for _ in range(120)]


def storage_fault(rng: random.Random) -> dict[str, Any]:
    """One failed attempt of a download: a 503, a drop, or a video cut short."""
    kinds: list[dict[str, Any]] = [
        {"status": 503, "body": ""},
        {"drop": True, "times": 2},
        {"truncate": rng.randint(0, 100_000)},
    ]
    return dict(rng.choice(kinds))


async def test_every_paid_request_is_accounted_for_under_a_fault_storm(
    tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> None:
    """No POST acts twice; every generation the server made is known to the caller or reported
    as maybe queued; no error is untyped or holds the key; every known video completes."""
    rng = random.Random(SEED)
    async with FakePrismServer(
        credits=10_000_000, generation_seconds=lambda: rng.uniform(0.2, 1.0)
    ) as fake:
        for fault in post_faults(rng):
            fake.inject(
                "POST", rng.choice(["/api/generations", "/api/templates/*/generate"]), **fault
            )
        for fault in get_faults(rng):
            fake.inject("GET", "/api/generations/*", **fault)
        retry = RetryPolicy(max_retries=3, initial=0.01, max_wait=0.05)
        poll = PollPolicy(initial_delay=0.05, interval=0.05, max_interval=0.2, timeout=60)
        gate = asyncio.Semaphore(8)
        outcomes: dict[str, GenerationBatch | TemplateGenerationBatch | BaseException] = {}

        async with PrismClient(
            fake.api_key, base_url=fake.base_url, timeout=1.0, retry=retry, poll=poll
        ) as prism:

            async def submit(number: int) -> None:
                marker = f"storm-{number:03d}"
                async with gate:
                    try:
                        if number % 3 == 0:
                            outcomes[marker] = await prism.templates.generate(
                                "abc123", variables={"hook": f"{marker} hook"}
                            )
                        else:
                            outcomes[marker] = await prism.generations.create(
                                prompt=marker, model_name="veo-3.1-fast", count=1 + number % 2
                            )
                    except Exception as exc:
                        outcomes[marker] = exc

            await asyncio.gather(*(submit(n) for n in range(SUBMISSIONS)))
            await asyncio.sleep(1.6)  # let the stalled POSTs finish on the server

            known: list[str] = []
            ambiguous = 0
            for marker, outcome in outcomes.items():
                created = {g.id for g in fake.generations.values() if marker in g.prompt}
                if isinstance(outcome, BaseException):
                    assert isinstance(outcome, PrismError), repr(outcome)
                    assert_key_free(outcome, fake.api_key)
                    assert set(outcome.generation_ids) <= created
                    if not outcome.maybe_sent:
                        assert created == set(), f"{marker}: {outcome!r} said not sent"
                    if created - set(outcome.generation_ids):
                        assert outcome.maybe_sent, f"{marker}: lost {created} ({outcome!r})"
                        ambiguous += 1
                    known += outcome.generation_ids
                else:
                    assert created == set(outcome.ids), marker  # the POST acted exactly once
                    known += outcome.ids
            every = {g.id for g in fake.generations.values()}
            assert len(every) == sum(
                len({g.id for g in fake.generations.values() if m in g.prompt}) for m in outcomes
            )
            assert set(known) <= every
            successes = [o for o in outcomes.values() if not isinstance(o, BaseException)]
            assert len(successes) >= SUBMISSIONS // 3  # the storm left room for real work
            assert any(isinstance(o, TemplateGenerationBatch) for o in successes)
            assert ambiguous < SUBMISSIONS // 2

            results = await prism.wait_for_generations(known, return_exceptions=True)
            assert all(not isinstance(r, BaseException) for r in results), results
            completed = [r for r in results if not isinstance(r, BaseException)]
            for generation in completed[:10]:
                fake.inject("GET", "/storage/videos/*", **storage_fault(rng))
                path = await prism.generations.download(generation, tmp_path)
                assert path.read_bytes() == fake.video
            assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
        assert len(fake.faults) < 20  # most faults were really met
    gc.collect()
    await asyncio.sleep(0)
    assert loop_errors == []
    assert asyncio.all_tasks() == {asyncio.current_task()}
