"""10,000 concurrent waits on generations that finish at random times.

Reports status requests per generation, detection lag (finish -> wait sees it) p50/p99 against
``max_interval``, peak resident memory per pending wait, CPU seconds, and errors; optionally
the naive loop users write by hand (``while True: get; sleep(interval)``) at the same interval.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, NamedTuple

from prism_async import Generation, PollPolicy, PrismClient, RetryPolicy

from ._server import ServerProcess, finish_offsets

PAGE = os.sysconf("SC_PAGE_SIZE")


class Size(NamedTuple):
    """How many waits, and the window (seconds after they start) in which they finish."""

    n: int
    start: float
    end: float


FULL = Size(n=10_000, start=10.0, end=40.0)
QUICK = Size(n=1_000, start=4.0, end=12.0)
HUGE = Size(n=100_000, start=300.0, end=540.0)
POLICY = PollPolicy(
    initial_delay=1.0, interval=1.0, max_interval=4.0, multiplier=1.5, jitter=0.1, learn=False
)
"""The fixed backoff (this case measures the scheduler; ``cadence.py`` measures learning)."""
HUGE_POLICY = PollPolicy(
    initial_delay=60.0, interval=60.0, max_interval=120.0, multiplier=1.5, jitter=0.1, learn=False
)
"""For 100,000 waits: about 1,000 status requests a second, which one server process on this
machine answers while the client runs (at 2,000 a second the two shared 2 cores with queueing:
lag p99 1.24x the bound)."""


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _naive_wait(prism: PrismClient, generation_id: str, interval: float) -> Generation:
    await asyncio.sleep(interval)
    while True:
        generation = await prism.generations.get(generation_id)
        if generation.is_done:
            return generation
        await asyncio.sleep(interval)


async def _run(
    contender: str, n: int, start: float, end: float, policy: PollPolicy, seed: int
) -> dict[str, Any]:
    offsets = finish_offsets(n, seed, start, end)
    t0 = time.time() + 2.0  # leave the server process time to start
    with ServerProcess("status", offsets, t0) as server:
        lags: list[float] = []
        async with PrismClient(
            "prism_sk_bench",
            base_url=server.base_url,
            poll=policy,
            retry=RetryPolicy(max_retries=10, initial=0.1),
            max_connections=100,
        ) as prism:
            await server.stats()  # the server is up
            await asyncio.sleep(max(0.0, t0 - time.time()))
            gc.collect()
            baseline = rss()
            peak = baseline
            ids = [f"gen_{index}" for index in range(n)]

            def seen(generation: Generation) -> None:
                if generation.is_done:
                    index = int(generation.id.removeprefix("gen_"))
                    lags.append(time.time() - (t0 + offsets[index]))

            cpu_before = time.process_time()
            started = time.monotonic()
            if contender == "prism_async":
                waits = prism.wait_for_generations(
                    ids,
                    on_update=seen,
                    return_exceptions=True,
                    timeout=end + 2 * policy.max_interval + 60,
                )
            else:

                async def naive_all() -> list[Generation | BaseException]:
                    async def one(generation_id: str) -> Generation:
                        generation = await _naive_wait(prism, generation_id, policy.interval)
                        seen(generation)
                        return generation

                    return await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)

                waits = naive_all()
            task = asyncio.ensure_future(waits)
            # Every wait created and asleep before its first poll: the state of a pending wait.
            await asyncio.sleep(policy.initial_delay * 0.6)
            sleeping = rss()
            first_finish = t0 + min(offsets)
            while not task.done():
                await asyncio.sleep(0.05)
                if time.time() < first_finish:  # every wait is still pending (and polling)
                    peak = max(peak, rss())
            results = task.result()
            wall = time.monotonic() - started
            cpu = time.process_time() - cpu_before
        stats = await server.stats()
    errors = [r for r in results if isinstance(r, BaseException)]
    return {
        "contender": contender,
        "waits": n,
        "errors": len(errors),
        "status_requests_per_generation": round(stats["status"] / n, 2),
        "lag_p50_s": round(percentile(lags, 0.50), 3),
        "lag_p99_s": round(percentile(lags, 0.99), 3),
        "lag_p99_over_max_interval": round(percentile(lags, 0.99) / policy.max_interval, 2),
        "max_interval_s": policy.max_interval,
        "rss_per_sleeping_wait_kb": round((sleeping - baseline) / n / 1024, 2),
        "rss_per_pending_wait_kb": round((peak - baseline) / n / 1024, 2),
        "client_cpu_s": round(cpu, 2),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "median_lag_s": round(statistics.median(lags), 3) if lags else None,
    }


def run_one(
    contender: str, quick: bool = False, seed: int = 1, huge: bool = False
) -> dict[str, Any]:
    """One contender, in this process."""
    size, policy = (HUGE, HUGE_POLICY) if huge else (QUICK if quick else FULL, POLICY)
    return asyncio.run(_run(contender, size.n, size.start, size.end, policy, seed))


def run(
    quick: bool = False, naive: bool = True, seed: int = 1, huge: bool = False
) -> list[dict[str, Any]]:
    """Run prism_async (and the naive loop), each in a fresh process so memory is its own."""
    contenders = ["prism_async", "naive"] if naive else ["prism_async"]
    rows = []
    for contender in contenders:
        command = [
            sys.executable,
            "-m",
            "benchmarks.bulk_wait",
            "--one",
            contender,
            "--seed",
            str(seed),
        ]
        if quick:
            command.append("--quick")
        if huge:
            command.append("--huge")
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 waits instead of 10,000")
    parser.add_argument("--one", choices=["prism_async", "naive"], help="run one contender here")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--huge", action="store_true", help="100,000 waits at a 60-120 s cadence (about 11 min)"
    )
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.quick, args.seed, args.huge)))
        return
    for row in run(quick=args.quick, naive=not args.no_naive, seed=args.seed, huge=args.huge):
        print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
