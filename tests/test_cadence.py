"""Waits that learn: the schedule from learnt durations, the duration model, and the one
scheduler (a finished id costs one request; cancelled and closed waits leave nothing behind)."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import pytest

from prism_async import ClientClosedError, PollPolicy, PrismClient, WaitTimeoutError
from prism_async._waiting._cadence import WINDOW, Durations, fixed_gap, next_delay
from prism_async.ledger import GenerationRecord, SQLiteLedger
from prism_async.testing import FakePrismServer, instant_waits

STATUS = "/api/generations/gen_*"


def gets(server: FakePrismServer) -> int:
    return len(server.requests_to("GET", STATUS))


def ours() -> list[asyncio.Task[object]]:
    """The SDK's tasks still running (the fake server's connections are not ours)."""
    return [
        task
        for task in asyncio.all_tasks()
        if task is not asyncio.current_task()
        and "/prism_async/" in task.get_coro().cr_code.co_filename  # type: ignore[union-attr]
        and "/prism_async/testing/" not in task.get_coro().cr_code.co_filename  # type: ignore[union-attr]
    ]


# -- the schedule ------------------------------------------------------------------------------


def simulate(policy: PollPolicy, plausible: float, first_age: float | None) -> list[float]:
    """The ages at which a wait polls a generation that never finishes (for 40 polls), on a
    virtual clock; ``first_age`` None: the wait does not know how old it is (its first answer
    says: ``first_age`` is then taken as 3 s)."""
    ages: list[float] = []
    age = first_age
    for polls in range(40):
        delay = next_delay(policy, polls=polls, age=age, plausible=plausible)
        age = (3.0 if age is None else age) + delay
        ages.append(age)
    return ages


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.5])
def test_the_learnt_schedule_never_leaves_a_gap_over_max_interval_once_plausible(
    jitter: float,
) -> None:
    rng = random.Random(7)
    for _ in range(300):
        policy = PollPolicy(max_interval=rng.uniform(1, 60), jitter=jitter)
        plausible = rng.uniform(0, 300)
        first_age = rng.choice([None, 0.0, rng.uniform(0, 600)])
        ages = simulate(policy, plausible, first_age)
        marks = [plausible, *ages]
        if first_age is not None and first_age > plausible:
            marks = [first_age, *ages]  # a wait on an old id: from when it began
        for before, after in itertools.pairwise(marks):
            if after > plausible:
                assert after - max(before, plausible) <= policy.max_interval + 1e-9


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.5])
def test_the_learnt_schedule_never_leaves_a_gap_over_the_fixed_backoffs_at_that_age(
    jitter: float,
) -> None:
    """Short generations are noticed as soon as with the fixed backoff: each gap after the
    plausible point is at most the fixed backoff's gap at that age (from the creation), spread
    by the same jitter, and never over ``max_interval``."""
    rng = random.Random(11)
    for _ in range(300):
        policy = PollPolicy(
            initial_delay=rng.uniform(0, 10),
            interval=rng.uniform(0.5, 10),
            multiplier=rng.choice([1.0, 1.5, 2.0]),
            max_interval=rng.uniform(1, 60),
            jitter=jitter,
        )
        plausible = rng.uniform(0, 120)
        ages = simulate(policy, plausible, 0.0)
        for before, after in itertools.pairwise([plausible, *ages]):
            if after > plausible:
                start = max(before, plausible)
                bound = min(fixed_gap(policy, start) * (1 + jitter), policy.max_interval)
                assert after - start <= bound + 1e-9


def test_the_fixed_gap_at_an_age_is_the_backoffs() -> None:
    """``fixed_gap`` (closed form) agrees with walking the fixed backoff poll by poll."""
    rng = random.Random(5)
    for _ in range(2000):
        policy = PollPolicy(
            initial_delay=rng.choice([0.0, rng.uniform(0, 10)]),
            interval=rng.uniform(0.01, 10),
            multiplier=rng.choice([1.0, 1.01, 1.5, 2.0, rng.uniform(1, 3)]),
            max_interval=rng.uniform(0.5, 60),
            jitter=0,
        )
        age = rng.uniform(0, 2000)
        elapsed, gap = policy.initial_delay, min(policy.interval, policy.max_interval)
        for polls in itertools.count(1):
            if elapsed + gap > age or gap >= policy.max_interval or policy.multiplier == 1:
                break
            elapsed += gap
            gap = policy.delay(polls + 1)
        assert fixed_gap(policy, age) == pytest.approx(gap, rel=1e-6) or (
            abs(elapsed - age) < 1e-6 * max(1.0, age)  # on a poll's boundary: either side
        )


def test_ten_second_videos_are_not_noticed_later_for_learning() -> None:
    """The default policy, generations that took 10 s: the first poll comes 5 s after the
    plausible point (the fixed backoff's gap at 9 s), not one ``max_interval`` (30 s)."""
    policy = PollPolicy(jitter=0)
    assert fixed_gap(policy, 9.0) == 5.0  # polls at 5, 10, 17.5, 28.75, ... from the start
    assert next_delay(policy, polls=0, age=0.0, plausible=9.0) == 14.0
    assert next_delay(policy, polls=1, age=14.0, plausible=9.0) == 7.5
    assert next_delay(policy, polls=5, age=200.0, plausible=9.0) == 30.0


def test_an_old_id_is_polled_at_once_and_a_fresh_one_not_before_it_may_be_done() -> None:
    policy = PollPolicy(max_interval=30, jitter=0)
    assert next_delay(policy, polls=0, age=500.0, plausible=60.0) == 0.0
    assert next_delay(policy, polls=0, age=0.0, plausible=60.0) == 60.0 + fixed_gap(policy, 60)
    assert fixed_gap(policy, 60.0) == 5 * 1.5**4  # polls at 5, 10, 17.5, 28.75, 45.6, 70.9
    assert next_delay(policy, polls=0, age=None, plausible=None) == 0.0  # its age is unknown
    assert next_delay(policy, polls=3, age=200.0, plausible=60.0) == 30.0


def test_without_history_or_learning_it_is_the_fixed_backoff() -> None:
    fixed = PollPolicy(initial_delay=5, interval=5, multiplier=2, max_interval=30, jitter=0)
    assert next_delay(fixed, polls=0, age=0.0, plausible=None) == 5.0
    assert next_delay(fixed, polls=2, age=0.0, plausible=None) == 10.0
    off = PollPolicy(initial_delay=5, jitter=0, learn=False)
    assert next_delay(off, polls=0, age=None, plausible=60.0) == 5.0
    assert next_delay(off, polls=0, age=500.0, plausible=60.0) == 5.0


# -- the duration model ------------------------------------------------------------------------


def test_no_history_until_enough_samples_then_a_low_quantile() -> None:
    durations = Durations()
    for n in range(4):
        durations.learn("k", 70.0 + n, created=float(n))
        assert durations.plausible("k") is None
    for n in range(4, 64):
        durations.learn("k", 70.0 + n % 20, created=float(n))
    assert durations.plausible("k") == pytest.approx(0.9 * 70.0)
    assert durations.plausible("other") is None


def test_one_long_outlier_changes_nothing_and_the_window_follows_a_drift() -> None:
    durations = Durations()
    for n in range(WINDOW):
        durations.learn("k", 100.0 + n % 10, created=float(n))
    before = durations.plausible("k")
    durations.learn("k", 5_000.0, created=1_000.0)
    assert durations.plausible("k") == before
    for n in range(WINDOW):  # the API got twice as fast
        durations.learn("k", 50.0 + n % 10, created=2_000.0 + n)
    assert durations.plausible("k") == pytest.approx(0.9 * 50.0)


def test_the_window_keeps_the_latest_created_not_the_last_to_finish() -> None:
    """After a burst the last to finish are its slowest: they must not become the history."""
    rng = random.Random(5)
    burst = [(float(n), rng.uniform(30, 130)) for n in range(300)]  # (created, seconds)
    durations = Durations()
    for created, seconds in sorted(burst, key=lambda sample: sample[1]):  # finishing order
        durations.learn("k", seconds, created=created)
    latest = sorted(burst)[-WINDOW:]
    assert durations.plausible("k") == pytest.approx(0.9 * min(s for _, s in latest))
    plausible = durations.plausible("k")
    assert plausible is not None
    assert plausible < 0.9 * 40  # the slowest 64 would start near 110 s


# -- waits on the fake ---------------------------------------------------------------------------


async def test_a_wait_on_a_finished_generation_returns_after_one_request_without_sleeping() -> None:
    async with FakePrismServer(generation_seconds=60) as server:
        async with PrismClient(server.api_key, base_url=server.base_url) as maker:
            batch = await maker.generations.create(prompt="a fox", model_name="veo-3.1")
        server.advance(120)
        async with PrismClient(server.api_key, base_url=server.base_url) as prism:
            before = gets(server)
            with instant_waits() as sleeps:
                done = await prism.wait_for_generation(batch.ids[0])
    assert done.is_completed
    assert gets(server) - before == 1
    assert sleeps.polls == [0.0]


async def test_learnt_waits_cost_fewer_requests_than_the_fixed_backoff() -> None:
    """Same server, same durations: after a warm-up the learnt schedule skips the polls that
    come before a generation can be done."""
    fixed = PollPolicy(initial_delay=0.02, interval=0.02, max_interval=0.1, learn=False)
    learnt = PollPolicy(initial_delay=0.02, interval=0.02, max_interval=0.1, learn=True)
    async with FakePrismServer(generation_seconds=0.6, credits=10**6) as server:
        used = {}
        for name, policy in (("fixed", fixed), ("learnt", learnt)):
            async with PrismClient(server.api_key, base_url=server.base_url, poll=policy) as prism:

                async def one(prompt: str, prism: PrismClient = prism) -> None:
                    batch = await prism.generations.create(prompt=prompt, model_name="veo-3.1")
                    await prism.wait_for_generations(batch)

                await asyncio.gather(*(one(f"warm {n}") for n in range(6)))
                before = gets(server)
                await asyncio.gather(*(one(f"measured {n}") for n in range(6)))
                used[name] = gets(server) - before
    assert used["learnt"] * 2 < used["fixed"], used


async def test_durations_are_shared_through_the_ledger(tmp_path: Path) -> None:
    """A second client on the same ledger schedules its first wait from the first's history."""
    policy = PollPolicy(initial_delay=0.01, interval=0.01, max_interval=0.05, jitter=0)
    async with FakePrismServer(generation_seconds=0.3, credits=10**6) as server:
        url, key = server.base_url, server.api_key
        ledger = SQLiteLedger(tmp_path / "l")
        async with PrismClient(key, base_url=url, poll=policy, ledger=ledger) as a:
            batch = await a.generations.create(prompt="p", model_name="veo-3.1", count=4)
            more = await a.generations.create(prompt="q", model_name="veo-3.1", count=2)
            await a.wait_for_generations([*batch.ids, *more.ids])
        ledger = SQLiteLedger(tmp_path / "l")
        async with PrismClient(key, base_url=url, poll=policy, ledger=ledger) as b:
            batch = await b.generations.create(prompt="new", model_name="veo-3.1", count=2)
            with instant_waits() as sleeps:
                await b.wait_for_generations(batch)
    canary, learnt = sleeps.polls[:2]  # one wait per key now and then ignores the history
    assert canary == 0.01
    assert learnt == pytest.approx(0.9 * 0.3 + 0.05, abs=0.02)  # plausible + gap


async def test_an_id_sent_by_another_process_counts_from_when_the_ledger_says(
    tmp_path: Path,
) -> None:
    """Its ledger row says when (and with what request) it was sent: no poll at once."""
    policy = PollPolicy(initial_delay=7, jitter=0)
    async with FakePrismServer(generation_seconds=60) as server:
        url, key = server.base_url, server.api_key
        async with PrismClient(key, base_url=url, ledger=SQLiteLedger(tmp_path / "l")) as a:
            batch = await a.generations.create(prompt="p", model_name="veo-3.1", key="k1")
        ledger = SQLiteLedger(tmp_path / "l")
        async with PrismClient(key, base_url=url, poll=policy, ledger=ledger) as b:
            with instant_waits() as sleeps:
                task = asyncio.create_task(b.wait_for_generation(batch.ids[0]))
                while not sleeps.polls:
                    await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
    assert sleeps.polls[0] == 7.0  # no history yet: the fixed backoff, not "poll at once"


async def learn_slow_generations(prism: PrismClient, server: FakePrismServer) -> None:
    """Six generations of ``veo-3.1`` that took 1,000 s each (the fake's clock moved on): the
    client's history of that kind, which the next waits plan on."""
    server.generation_seconds = 1000
    slow = [
        await prism.generations.create(prompt=f"slow {n}", model_name="veo-3.1")
        for n in range(6)
    ]
    server.advance(1000)
    for batch in slow:
        await prism.wait_for_generations(batch)


async def test_a_canary_sees_generations_become_much_faster() -> None:
    """After a history of slow generations, fast ones are still noticed soon: one wait per key
    now and then polls on the fixed backoff, and what it finds teaches the others."""
    policy = PollPolicy(initial_delay=0.05, interval=0.05, max_interval=0.1, jitter=0)
    async with (
        FakePrismServer(generation_seconds=1000, credits=10**6) as server,
        PrismClient(server.api_key, base_url=server.base_url, poll=policy) as prism,
    ):
        await learn_slow_generations(prism, server)
        server.generation_seconds = 0.2

        async def fast(prompt: str) -> float:
            batch = await prism.generations.create(prompt=prompt, model_name="veo-3.1")
            started = loop.time()
            await prism.wait_for_generations(batch)
            return loop.time() - started

        loop = asyncio.get_running_loop()
        first = asyncio.create_task(fast("planned on the slow history"))
        await asyncio.sleep(1.1)  # the next wait of the key is a canary (10 x max_interval)
        async with asyncio.timeout(5):
            canary = await fast("a canary")
            waited = await first  # planned again once the canary saw the fast one
    assert canary < 1.0
    assert waited < 3.0


async def test_a_deadline_before_the_plausible_point_still_gets_a_last_look() -> None:
    """The history may place a wait's plausible point after its deadline: the wait still
    polls ``max_interval`` before the deadline, so a generation that finished meanwhile is
    returned, and one still running times out with the status it was last seen in."""
    policy = PollPolicy(initial_delay=0.05, interval=0.05, max_interval=1.0, jitter=0)
    async with (
        FakePrismServer(generation_seconds=1000, credits=10**6) as server,
        PrismClient(server.api_key, base_url=server.base_url, poll=policy) as prism,
    ):
        await learn_slow_generations(prism, server)  # (its last wait was the key's canary)
        still = await prism.generations.create(prompt="still running", model_name="veo-3.1")
        before = gets(server)
        with pytest.raises(WaitTimeoutError) as info:
            await prism.wait_for_generation(still.ids[0], timeout=1.6)
        assert info.value.last is not None
        assert info.value.last.status in ("queued", "generating")
        assert gets(server) - before == 1  # at 0.6 s, not the plausible ~900 s

        server.generation_seconds = 0.2
        fast = await prism.generations.create(prompt="fast", model_name="veo-3.1")
        before = gets(server)
        done = await prism.wait_for_generation(fast.ids[0], timeout=1.6)
        assert done.is_completed
        assert gets(server) - before == 1


async def test_a_client_closed_while_a_wait_looks_up_its_id_logs_the_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wait that had not started polling yet (its ledger lookup was slow) still says which
    paid generation it leaves behind."""
    looking = asyncio.Event()

    class SlowLedger(SQLiteLedger):
        async def generation(self, generation_id: str) -> GenerationRecord | None:
            record = await super().generation(generation_id)
            looking.set()
            await asyncio.sleep(0.5)  # the answer is slow to come back
            return record

    ledger = SlowLedger(tmp_path / "l")
    prism = PrismClient("prism_sk_x", base_url="http://127.0.0.1:9", ledger=ledger)
    ids = ["gen_slow_lookup", "gen_next"]  # the second is never looked up: the client closed
    wait = asyncio.create_task(prism.wait_for_generations(ids))
    await looking.wait()
    await prism.aclose()
    with pytest.raises(ClientClosedError):
        await wait
    assert "gen_slow_lookup" in caplog.text
    assert "gen_next" in caplog.text


async def test_a_cancellation_storm_leaves_nothing_running() -> None:
    async with FakePrismServer(generation_seconds=600, credits=10**6) as server:
        policy = PollPolicy(initial_delay=0, interval=0.01, max_interval=0.02)
        async with PrismClient(server.api_key, base_url=server.base_url, poll=policy) as prism:
            batch = await prism.generations.create(prompt="p", model_name="veo-3.1", count=4)
            tasks = [
                asyncio.create_task(prism.wait_for_generation(batch.ids[n % 4]))
                for n in range(400)
            ]
            bulk = asyncio.create_task(prism.wait_for_generations(batch.ids * 3))
            while gets(server) < 50:
                await asyncio.sleep(0.005)
            random.Random(3).shuffle(tasks)
            for task in [*tasks, bulk]:
                task.cancel()
                await asyncio.sleep(0)
            results = await asyncio.gather(*tasks, bulk, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            assert ours() == []
            count = gets(server)
            await asyncio.sleep(0.1)
            assert gets(server) == count


async def test_closing_the_client_ends_every_wait_and_leaves_nothing_running() -> None:
    async with FakePrismServer(generation_seconds=600, credits=10**6) as server:
        policy = PollPolicy(initial_delay=0, interval=0.01, max_interval=0.02)
        prism = PrismClient(server.api_key, base_url=server.base_url, poll=policy)
        batch = await prism.generations.create(prompt="p", model_name="veo-3.1", count=4)
        waits = [asyncio.create_task(prism.wait_for_generation(i)) for i in batch.ids * 50]
        finished = prism.as_completed(batch.ids)
        following = asyncio.create_task(finished.__anext__())
        while gets(server) < 20:
            await asyncio.sleep(0.005)
        await prism.aclose()
        results = await asyncio.gather(*waits, following, return_exceptions=True)
        assert all(isinstance(r, ClientClosedError) for r in results)
        await finished.aclose()
        assert ours() == []
        count = gets(server)
        await asyncio.sleep(0.1)
        assert gets(server) == count
