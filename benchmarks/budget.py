"""The cost of a budget: what ``PrismClient(budget=...)`` adds to submissions and to a run.

With a budget every paid POST first reserves its quoted price in the ledger (one atomic step:
an SQLite transaction, a Redis Lua script) and its settlement records the charge and drops the
reservation. Both contenders below have a ledger; only the budget differs.

1. **Submit path.** ``generations.create(key=...)`` on a client with a ledger and
   ``budget=`` (a cap that never refuses; the price learnt by the warm-up, so no submission
   is a probe) against the same durable create on a client with the same kind of ledger and
   no budget, at concurrency 1, in alternating rounds, each with fresh keys, a fresh ledger
   (an SQLite file, or a fresh prefix on one ``redis-server`` with ``appendfsync always``)
   and a fresh fake; for ``SQLiteLedger`` and ``RedisLedger``. Target: the budget adds
   <= 1 ms per submission on SQLite (median).
2. **A run.** ``prism.run`` of N generations on a ``SQLiteLedger`` with a budget against the
   same run without one, each in a fresh process against a fresh fake, in rotating rounds.
   ``budget`` and ``none`` make one keyed create before the clock starts (so the budget's
   price is learnt); ``cold`` is a budget on a fresh ledger, whose first submission is the
   probe of its shape (reported, not judged). Target: wall time <= 1.05x, no errors.
3. **Reserve against a budget's history.** ``ledger.reserve`` alone (median of 50, each
   released), with 0, 1,000 and 10,000 charges already in the budget, for a lifetime cap and
   a 24 h window, on each backend: what a reservation costs as a budget ages (not judged).

The server is the SDK's ``FakePrismServer``, in another process.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prism_async import GenerationRequest, PrismClient
from prism_async.ledger import Charge, Ledger, RedisLedger, Reservation, SQLiteLedger
from tests.redis_server import RedisServer

from ._server import ServerProcess
from .ledger import (
    API_KEY,
    MODEL,
    POLICY,
    PROMPT,
    SECONDS,
    VIDEO_BYTES,
    _rss,
    _submit,
    run_in_folder,
    spawn,
)
from .ledger import _with_ledger as _prism_run

BUDGET = "bench"
CAP = 1e15
"""Credits: never reached (the fake charges a few hundred per video)."""
SUBMIT = {"full": (300, 5), "quick": (50, 2)}
"""Submissions per round and rounds, per backend and contender."""
RUN = {"full": (1_000, 3), "quick": (100, 1)}
"""Generations per run and rounds (one process per contender and round)."""
HISTORY = {"full": (0, 1_000, 10_000), "quick": (0, 1_000)}
"""Charges already in the budget when ``reserve`` is timed (part 3)."""
WARM = 3
"""Keyed creates before the clock starts (connections, database, thread; the price)."""
BACKENDS = ("sqlite", "redis")
RUNNERS = ("budget", "none", "cold")
ADDED_MS_TARGET = 1.0
RUN_RATIO_TARGET = 1.05

LedgerFactory = Callable[[str], Ledger]
"""A fresh ledger for a round's tag."""


@contextmanager
def _ledgers(redis_url: str | None) -> Iterator[Callable[[str, str], Ledger]]:
    """``make(backend, tag)``: a fresh ledger (a file in a temporary folder, a fresh prefix on
    ``redis_url`` or on a ``redis-server`` started here, ``appendfsync always``)."""
    redis = RedisServer() if redis_url is None else None
    url = redis_url or (redis.url if redis else "")
    prefix = f"bench:{time.time_ns()}:"
    try:
        with tempfile.TemporaryDirectory(prefix="prism-budget-bench-") as tmp:

            def make(backend: str, tag: str) -> Ledger:
                if backend == "sqlite":
                    return SQLiteLedger(Path(tmp, f"{tag}.db"))
                return RedisLedger(url, prefix=f"{prefix}{tag}:")

            yield make
    finally:
        if redis is not None:
            redis.stop()


# -- 1. the submit path ------------------------------------------------------------------------


async def _submit_round(
    base_url: str, make: LedgerFactory, tag: str, budget: bool, n: int
) -> tuple[float, dict[str, float]]:
    """One contender's round (concurrency 1) on a fresh client and ledger, warmed up first;
    its wall seconds and, with a budget, what the budget holds at the end."""
    store = make(tag)
    if budget:
        await store.set_budget(BUDGET, CAP)
    name = BUDGET if budget else None
    async with PrismClient(API_KEY, base_url=base_url, ledger=store, budget=name) as prism:
        await _submit(prism, [f"{tag}/warm/{i}" for i in range(WARM)], WARM, 1)
        if budget:
            priced = await prism.quote(GenerationRequest(prompt=PROMPT, model_name=MODEL))
            if priced.basis != "seen":  # the timed creates must not probe
                raise RuntimeError(f"the price was not learnt by the warm-up: {priced}")
        wall = await _submit(prism, [f"{tag}/{i}" for i in range(n)], n, 1)
        held = await store.budget(BUDGET) if budget else None
    state = {"spent": held.spent, "reserved": held.reserved} if held else {}
    return wall, state


def _measure_submits(
    make: LedgerFactory, n: int, rounds: int
) -> tuple[dict[str, list[float]], list[dict[str, float]]]:
    """Wall seconds per contender and round (a fresh fake each: see ``ledger.py``), and the
    budget contender's budget after each round."""
    walls: dict[str, list[float]] = {"budget": [], "none": []}
    budgets = []
    for round_number in range(rounds):
        for contender in ["budget", "none"][:: 1 if round_number % 2 == 0 else -1]:
            tag = f"r{round_number}-{contender}"
            with ServerProcess("fake", 3600.0, 3600.0, 1, VIDEO_BYTES) as server:
                asyncio.run(server.ready())
                wall, held = asyncio.run(
                    _submit_round(server.base_url, make, tag, contender == "budget", n)
                )
            walls[contender].append(wall)
            if held:
                budgets.append(held)
    return walls, budgets


def _summary(n: int, walls: dict[str, list[float]], budgets: list[dict[str, float]]) -> Any:
    pairs = list(zip(walls["budget"], walls["none"], strict=True))
    return {
        "ms_per_submission_median": {
            c: round(statistics.median(w / n * 1000 for w in v), 3) for c, v in walls.items()
        },
        "ms_added_per_submission_median": round(
            statistics.median((b - o) / n * 1000 for b, o in pairs), 3
        ),
        "wall_s": {c: [round(w, 4) for w in v] for c, v in walls.items()},
        "budget_after": budgets,
    }


def run_submits(
    quick: bool = False, *, size: tuple[int, int] | None = None, redis_url: str | None = None
) -> dict[str, Any]:
    """Durable creates with and without a budget, on each backend; ``size`` is ``(per round,
    rounds)``; ``redis_url``: a Redis server to use (a fresh prefix per round) instead of a
    ``redis-server`` started here."""
    n, rounds = size or SUBMIT["quick" if quick else "full"]
    row: dict[str, Any] = {
        "case": "budget submit path",
        "submissions_per_round": n,
        "rounds": rounds,
        "concurrency": 1,
    }
    with _ledgers(redis_url) as make:
        for backend in BACKENDS:
            factory = functools.partial(make, backend)
            row[backend] = _summary(n, *_measure_submits(factory, n, rounds))
    added = row["sqlite"]["ms_added_per_submission_median"]
    row["target"] = f"a budget adds <= {ADDED_MS_TARGET} ms per durable submission (SQLite)"
    row["met"] = added <= ADDED_MS_TARGET
    return row


# -- 2. a whole run, in fresh processes ------------------------------------------------------


async def _run_here(contender: str, base_url: str, n: int, folder: Path) -> dict[str, Any]:
    videos = folder / "videos"
    videos.mkdir()
    store = SQLiteLedger(folder / "ledger.db")
    name = None if contender == "none" else BUDGET
    if name is not None:
        await store.set_budget(name, CAP)
    async with PrismClient(
        API_KEY, base_url=base_url, ledger=store, poll=POLICY, budget=name
    ) as prism:
        if contender != "cold":  # the price is learnt before the clock starts
            await prism.generations.create(prompt=PROMPT, model_name=MODEL, key="warm")
        rss_before = _rss()
        cpu = time.process_time()
        started = time.perf_counter()
        downloaded, errors = await _prism_run(prism, n, videos)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        held = await store.budget(name) if name is not None else None
    files = [p for p in videos.iterdir() if p.suffix == ".mp4"]
    return {
        "contender": contender,
        "generations": n,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "downloaded": downloaded,
        "files": len(files),
        "errors": max(len(errors), n - len(files)),  # every generation must end as a file
        "first_errors": errors[:3],
        "budget_after": {"spent": held.spent, "reserved": held.reserved} if held else None,
    }


def run_one(contender: str, base_url: str, n: int) -> dict[str, Any]:
    """One contender's run in this (fresh) process."""
    return run_in_folder(_run_here, contender, base_url, n)


def _spawn(contender: str, n: int, seed: int, seconds: tuple[float, float]) -> dict[str, Any]:
    return spawn("benchmarks.budget", contender, n, seed, seconds)


def run_runs(
    quick: bool = False,
    *,
    size: tuple[int, int] | None = None,
    seconds: tuple[float, float] = SECONDS,
    seed: int = 1,
) -> dict[str, Any]:
    """``prism.run`` with a budget (price learnt, and ``cold``) against without one; ``size``
    is ``(generations, rounds)``. Judged at 1,000 generations of the default durations only."""
    n, rounds = size or RUN["quick" if quick else "full"]
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in RUNNERS}
    for round_number in range(rounds):
        turn = round_number % len(RUNNERS)  # each contender goes first, second, third in turn
        for contender in RUNNERS[turn:] + RUNNERS[:turn]:
            samples[contender].append(_spawn(contender, n, seed + round_number, seconds))

    def ratio(contender: str) -> float:
        pairs = zip(samples[contender], samples["none"], strict=True)
        ratios: list[float] = [b["wall_s"] / o["wall_s"] for b, o in pairs]
        return round(statistics.median(ratios), 3)

    wall = {c: round(statistics.median(s["wall_s"] for s in v), 2) for c, v in samples.items()}
    cpu = {c: round(statistics.median(s["cpu_s"] for s in v), 2) for c, v in samples.items()}
    errors = {c: sum(s["errors"] for s in v) for c, v in samples.items()}
    ratios = {c: ratio(c) for c in ("budget", "cold")}
    return {
        "case": "budget run",
        "generations": n,
        "rounds": rounds,
        "generation_seconds": list(seconds),
        "wall_s_median": wall,
        "cpu_s_median": cpu,
        "wall_ratio_median": ratios,
        "errors": errors,
        "samples": samples,
        "target": f"prism.run with a budget <= {RUN_RATIO_TARGET}x without one, no errors",
        "met": ratios["budget"] <= RUN_RATIO_TARGET and not any(errors.values()),
        "judged": n >= RUN["full"][0] and seconds == SECONDS,
    }


# -- 3. a reservation against a budget's history -----------------------------------------------


def _charge(charge_id: str) -> Charge:
    return Charge(charge_id, datetime.now(UTC), 120.0, "generation", MODEL, "bench", budget=BUDGET)


async def _reserve_times(store: Ledger, per: str | None, sizes: tuple[int, ...]) -> Any:
    """Median milliseconds of one ``reserve`` with each of ``sizes`` charges in the budget."""
    await store.set_budget(BUDGET, CAP, per=per)
    medians, have = {}, 0
    for size in sizes:
        while have < size:  # 50 at once: SQLite commits them in groups; redis-py's pool holds 100
            chunk = range(have, min(size, have + 50))
            await asyncio.gather(*(store.add_charge(_charge(f"c{i}")) for i in chunk))
            have = chunk.stop
        times = []
        for sample in range(50):
            charge = _charge(f"r{size}-{sample}")
            held = Reservation(charge.id, BUDGET, charge.credits, charge.at, charge)
            started = time.perf_counter()
            await store.reserve(held, datetime.now(UTC))
            times.append(time.perf_counter() - started)
            await store.release(charge.id)
        medians[str(size)] = round(statistics.median(times) * 1000, 3)
    await store.aclose()
    return medians


def run_history(
    quick: bool = False, *, sizes: tuple[int, ...] | None = None, redis_url: str | None = None
) -> dict[str, Any]:
    """``reserve`` with ``sizes`` charges already in a lifetime and a 24 h budget."""
    sizes = sizes or HISTORY["quick" if quick else "full"]
    row: dict[str, Any] = {"case": "budget reserve vs history", "charges": list(sizes)}
    with _ledgers(redis_url) as make:
        for backend in BACKENDS:
            row[backend] = {
                per or "lifetime": asyncio.run(
                    _reserve_times(make(backend, f"history-{per}"), per, sizes)
                )
                for per in (None, "day")
            }
    return row


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The three parts: the submit path on both backends, whole runs, a budget's history."""
    return [run_submits(quick), run_runs(quick), run_history(quick)]


def table_rows(results: list[dict[str, Any]]) -> list[str]:
    """This case's rows of the suite's markdown table."""
    rows = []
    for row in results:
        if row["case"] == "budget submit path":
            sql, red = row["sqlite"], row["redis"]
            ms, base = (
                {b: row[b]["ms_per_submission_median"][c] for b in BACKENDS}
                for c in ("budget", "none")
            )
            rows.append(
                f"| create(key=) with a budget, c=1 ({row['submissions_per_round']} x "
                f"{row['rounds']}) | SQLite {ms['sqlite']} ms, Redis {ms['redis']} ms per "
                f"submission | same ledger, no budget: SQLite {base['sqlite']} ms, Redis "
                f"{base['redis']} ms | +{sql['ms_added_per_submission_median']} ms (SQLite), "
                f"+{red['ms_added_per_submission_median']} ms (Redis) | <= +{ADDED_MS_TARGET:g} "
                f"ms (SQLite) | {_yes(row['met'])} |"
            )
        elif row["case"] == "budget run":
            wall, errors, ratio = row["wall_s_median"], row["errors"], row["wall_ratio_median"]
            verdict = _yes(row["met"]) if row["judged"] else "- (quick)"
            rows.append(
                f"| prism.run with a budget, {row['generations']} generations (SQLite) | "
                f"{wall['budget']} s, {errors['budget']} errors (price not learnt yet: "
                f"{wall['cold']} s, {ratio['cold']}x) | no budget {wall['none']} s, "
                f"{errors['none']} errors | {ratio['budget']} | <= {RUN_RATIO_TARGET}x, no "
                f"errors (1,000) | {verdict} |"
            )
        elif row["case"] == "budget reserve vs history":
            first, last = row["charges"][0], row["charges"][-1]
            ms = {
                f"{b} {w}": f"{row[b][w][str(first)]} -> {row[b][w][str(last)]} ms"
                for b in BACKENDS
                for w in ("lifetime", "day")
            }
            rows.append(
                f"| ledger.reserve with {first} -> {last} charges in the budget | "
                + ", ".join(f"{k}: {v}" for k, v in ms.items())
                + " | - | - | - | - |"
            )
    return rows


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--one", choices=RUNNERS, help="one run here (internal)")
    parser.add_argument("--base-url", help="the fake's API root (with --one)")
    parser.add_argument("--n", type=int, default=RUN["full"][0], help="generations (with --one)")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.base_url, args.n)))
        return
    for row in run(args.quick):
        print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
