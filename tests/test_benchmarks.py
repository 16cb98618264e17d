"""Smoke tests: every benchmark still runs, at a tiny size (numbers are not judged here)."""

from __future__ import annotations

from benchmarks import bulk_wait
from prism_async import PollPolicy


async def test_bulk_wait_benchmark_runs_for_both_contenders() -> None:
    """The bulk-wait benchmark completes 40 waits without error for prism_async and the loop."""
    policy = PollPolicy(initial_delay=0.1, interval=0.1, max_interval=0.2, timeout=30)
    for contender in ("prism_async", "naive"):
        row = await bulk_wait._run(contender, 40, 0.3, 0.8, policy, seed=3)
        assert row["waits"] == 40
        assert row["errors"] == 0
        assert row["status_requests_per_generation"] >= 1
        assert row["lag_p99_s"] >= 0
