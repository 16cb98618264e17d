"""Poll cadence: fixed backoff against schedules learnt from completed generations.

The SDK's fake (in its own process) makes each generation take a seeded lognormal time
(median 75 s, sigma 0.35), and every time is scaled by ``scale`` (1/10: a median video takes
7.5 s), the policies included. Each configuration runs in a fresh process with a fresh client
and a fresh fake; it creates generations (``veo-3.1``, 8 s, 720p, one per create, a few creates
at a time) and waits for each right after its create, as a user would:

* ``fixed``: ``PollPolicy(learn=False)``: first poll after 5 s, then 5 s growing x1.5 up to
  30 s, +/-10% jitter;
* ``learnt-cold``: ``learn=True``, nothing learnt yet;
* ``learnt-warm``: ``learn=True`` after a warm-up wave of the same request shape;
* ``tight-warm``: ``learn=True`` with ``max_interval=9 s``, after the warm-up.

``fixed`` runs the warm-up too, for fairness. Measured phase: status requests per generation
(the fake's count of ``GET /api/generations/{id}``), detection lag (when ``on_update`` sees the
generation completed minus its ``completed_at``; client and fake share the wall clock) p50/p99
in unscaled seconds, errors, wall time; and ratios against ``fixed`` in the same round. With
``--rounds N`` (``python -m benchmarks.cadence``) every figure is the median of N rounds.
``--quick``: 500 generations after 100, at 1/20. The scale multiplies the client's own
lateness (a timer or a request 0.1 s late under load reads as 1 s at 1/10): fixed's lag absorbs
it as well as the others'.

Targets: learnt-warm <= 3.5 requests/generation and lag p99 <= fixed's; tight-warm lag p99
<= fixed's / 3 and requests <= fixed's; learnt-cold requests and lag p99 <= fixed's x 1.05.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import aiohttp
import attrs

from prism_async import Generation, PollPolicy, PrismClient

from ._server import ServerProcess
from .bulk_wait import percentile

Row = dict[str, Any]
"""One configuration's JSON row."""
MEDIAN_S, SIGMA = 75.0, 0.35
CONFIGS = ("fixed", "learnt-cold", "learnt-warm", "tight-warm")
CREATES = 8
"""Creates in flight at a time."""


class Size(NamedTuple):
    """Generations measured, generations in the warm-up, and the time scale."""

    n: int
    warmup: int
    scale: float


FULL = Size(n=2_000, warmup=300, scale=1 / 10)
QUICK = Size(n=500, warmup=100, scale=1 / 20)


def policy(config: str, scale: float) -> PollPolicy:
    """The poll policy of ``config``, with every duration multiplied by ``scale``."""
    fixed = PollPolicy(
        initial_delay=5 * scale, interval=5 * scale, max_interval=30 * scale,
        multiplier=1.5, jitter=0.1, timeout=3600.0,
    )  # fmt: skip
    if config == "fixed":
        return attrs.evolve(fixed, learn=False)
    learnt = attrs.evolve(fixed, learn=True)
    return attrs.evolve(learnt, max_interval=9 * scale) if config == "tight-warm" else learnt


async def _status_gets(stats_root: str) -> int:
    """``GET /api/generations/{id}`` requests the fake has received so far."""
    async with aiohttp.ClientSession() as session, session.get(f"{stats_root}/report") as r:
        return int((await r.json())["status_gets"])


async def _wave(
    prism: PrismClient,
    n: int,
    on_update: Callable[[Generation], None],
    create_seconds: list[float] | None = None,
) -> list[Generation | BaseException]:
    """Create ``n`` generations, ``CREATES`` at a time, each waited for right after its create
    (the seconds each create took appended to ``create_seconds``)."""
    creating = asyncio.Semaphore(CREATES)

    async def one(index: int) -> list[Generation | BaseException]:
        async with creating:
            started = time.monotonic()
            batch = await prism.generations.create(
                prompt=f"cadence {index}", model_name="veo-3.1", duration="8s", resolution="720p"
            )
            if create_seconds is not None:
                create_seconds.append(time.monotonic() - started)
        return await prism.wait_for_generations(batch, on_update=on_update, return_exceptions=True)

    outcomes = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    return [r for o in outcomes for r in (o if isinstance(o, list) else [o])]


async def _measure(config: str, size: Size, base_url: str, stats_root: str) -> Row:
    seen_at: dict[str, float] = {}  # id -> (seen - completed_at) / scale, measured phase only
    measuring = False

    def on_update(generation: Generation) -> None:
        completed_at = generation.completed_at
        if generation.status != "completed" or completed_at is None or not measuring:
            return
        if generation.id not in seen_at:
            seen_at[generation.id] = (time.time() - completed_at.timestamp()) / size.scale

    async with PrismClient(
        "prism_sk_bench",
        base_url=base_url,
        poll=policy(config, size.scale),
        max_connections=100,
    ) as prism:
        warm_errors = 0
        if config != "learnt-cold":
            warm = await _wave(prism, size.warmup, on_update)
            warm_errors = sum(isinstance(r, BaseException) for r in warm)
        before = await _status_gets(stats_root)
        measuring = True
        started = time.monotonic()
        cpu = time.process_time()
        creates: list[float] = []
        results = await _wave(prism, size.n, on_update, creates)
        wall = time.monotonic() - started
        cpu = time.process_time() - cpu
        status_gets = await _status_gets(stats_root) - before
    lags = list(seen_at.values())
    errors = [r for r in results if isinstance(r, BaseException)]
    return {
        "config": config,
        "learns": config != "fixed",
        "generations": size.n,
        "warmup": 0 if config == "learnt-cold" else size.warmup,
        "scale": round(size.scale, 4),
        "status_requests_per_generation": round(status_gets / size.n, 2),
        "lag_p50_s": round(percentile(lags, 0.50), 2) if lags else None,
        "lag_p99_s": round(percentile(lags, 0.99), 2) if lags else None,
        "lag_max_s": round(max(lags), 2) if lags else None,
        "errors": len(errors) + warm_errors,
        "error_kinds": sorted({type(e).__name__ for e in errors}),
        "create_ms_p50": round(percentile(creates, 0.50) * 1000, 1),
        "create_ms_p99": round(percentile(creates, 0.99) * 1000, 1),
        "wall_s": round(wall, 1),
        "client_cpu_s": round(cpu, 2),
    }


def run_one(config: str, base_url: str, stats_root: str, quick: bool) -> Row:
    """One configuration, in this (fresh) process."""
    return asyncio.run(_measure(config, QUICK if quick else FULL, base_url, stats_root))


def _spawn(config: str, quick: bool, seed: int) -> Row:
    """``config`` in a fresh process against a fresh fake (same seed, same durations)."""
    scale = (QUICK if quick else FULL).scale
    with ServerProcess("fleet", MEDIAN_S * scale, SIGMA, seed, 1024, "lognormal") as server:
        asyncio.run(server.ready())
        command = [sys.executable, "-m", "benchmarks.cadence", "--one", config,
                   "--base-url", server.base_url, "--stats-root", server.stats_root]  # fmt: skip
        if quick:
            command.append("--quick")
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def _ratios(rows: list[Row]) -> list[Row]:
    """Add each row's ratios against ``fixed`` of the same round."""
    fixed = next(r for r in rows if r["config"] == "fixed")
    for row in rows:
        for name, of in (("requests", "status_requests_per_generation"), ("lag_p99", "lag_p99_s")):
            row[f"{name}_ratio_vs_fixed"] = round(row[of] / fixed[of], 3)
    return rows


TARGETS: dict[str, tuple[str, Callable[[Row], bool]]] = {
    "fixed": ("baseline", lambda row: True),
    "learnt-cold": (
        "req/gen and lag p99 <= fixed x 1.05",
        lambda r: r["requests_ratio_vs_fixed"] <= 1.05 and r["lag_p99_ratio_vs_fixed"] <= 1.05,
    ),
    "learnt-warm": (
        "<= 3.5 req/gen, lag p99 <= fixed",
        lambda r: r["status_requests_per_generation"] <= 3.5 and r["lag_p99_ratio_vs_fixed"] <= 1,
    ),
    "tight-warm": (
        "lag p99 <= fixed / 3, req/gen <= fixed",
        lambda r: r["lag_p99_ratio_vs_fixed"] <= 1 / 3 and r["requests_ratio_vs_fixed"] <= 1,
    ),
}
"""Each configuration's target, judged on the medians (ratios: medians of each round's)."""


def run(quick: bool = False, seed: int = 1, rounds: int = 1) -> list[Row]:
    """Every configuration, each in a fresh process against a fresh fake, in alternating
    rounds (seeds ``seed``, ``seed + 1``...); each figure the median of the rounds."""
    samples = [_ratios([_spawn(c, quick, seed + r) for c in CONFIGS]) for r in range(rounds)]
    rows = []
    for runs in zip(*samples, strict=True):
        row = dict(runs[0])
        for name, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                row[name] = statistics.median(r[name] for r in runs)
        row["errors"] = sum(r["errors"] for r in runs)
        row["rounds"], row["lag_p99_s_rounds"] = rounds, [r["lag_p99_s"] for r in runs]
        row["target"], met = TARGETS[row["config"]]
        row["met"] = met(row) and row["errors"] == 0
        rows.append(row)
    return rows


def table_rows(results: list[Row]) -> list[str]:
    """This case's rows of the suite's markdown table."""
    fixed = next((r for r in results if r["config"] == "fixed"), None)
    if fixed is None:
        return []
    base = (
        f"fixed: {fixed['status_requests_per_generation']} req/gen, lag p50 "
        f"{fixed['lag_p50_s']} s / p99 {fixed['lag_p99_s']} s"
    )
    return [
        f"| poll cadence: {row['config']} ({row['generations']} generations, lognormal 75 s "
        f"x{row['scale']:g}{'' if row['learns'] or row['config'] == 'fixed' else ', no learn'}) "
        f"| {row['status_requests_per_generation']} req/gen, lag p50 {row['lag_p50_s']} s / "
        f"p99 {row['lag_p99_s']} s, {row['errors']} errors | {base} | req "
        f"{row['requests_ratio_vs_fixed']}x, p99 {row['lag_p99_ratio_vs_fixed']}x | "
        f"{row['target']} | {_verdict(row['met'])} |"
        for row in results
        if row["config"] != "fixed"
    ]


def _verdict(met: bool | None) -> str:
    return "- (no learn)" if met is None else "yes" if met else "**no**"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="500 generations, 100 warm-up")
    parser.add_argument("--one", choices=CONFIGS, help="run one configuration here")
    parser.add_argument("--base-url", help="with --one: the fake's API")
    parser.add_argument("--stats-root", help="with --one: the fake's report")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="medians of this many rounds")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.base_url, args.stats_root, args.quick)))
        return
    for row in run(quick=args.quick, seed=args.seed, rounds=args.rounds):
        print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
