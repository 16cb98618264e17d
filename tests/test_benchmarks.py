"""Smoke tests: every benchmark case still runs, at a tiny size (numbers are not judged here)."""

from __future__ import annotations

from benchmarks import __main__ as suite
from benchmarks import (
    budget,
    bulk_wait,
    cadence,
    fleet,
    imports,
    ledger,
    parsing,
    throughput,
    transfers,
)
from benchmarks._server import ServerProcess
from prism_async import PollPolicy


async def test_bulk_wait_runs_for_both_contenders() -> None:
    """The bulk-wait benchmark completes 40 waits without error for prism_async and the loop."""
    policy = PollPolicy(initial_delay=0.1, interval=0.1, max_interval=0.2, timeout=30)
    for contender in ("prism_async", "naive"):
        row = await bulk_wait._run(contender, 40, 0.3, 0.8, policy, seed=3)
        assert row["waits"] == 40
        assert row["errors"] == 0
        assert row["status_requests_per_generation"] >= 1


async def test_cadence_measures_learnt_against_fixed() -> None:
    """The cadence case warms up, measures, and compares a learnt policy with the fixed one."""
    size = cadence.Size(n=6, warmup=6, scale=1 / 200)
    args = (cadence.MEDIAN_S * size.scale, cadence.SIGMA, 3, 1024, "lognormal")
    with ServerProcess("fleet", *args) as server:
        await server.ready()
        rows = [
            await cadence._measure(config, size, server.base_url, server.stats_root)
            for config in ("fixed", "learnt-warm")
        ]
    rows = cadence._ratios(rows)
    assert [row["errors"] for row in rows] == [0, 0]
    assert all(row["status_requests_per_generation"] >= 1 for row in rows)
    assert rows[0]["requests_ratio_vs_fixed"] == 1.0
    assert rows[1]["learns"]


def test_throughput_runs_all_three_clients() -> None:
    """The throughput case measures prism_async, aiohttp and httpx against the canned server."""
    row = throughput.run(size=(64, 1))
    assert set(row["rps_median"]) == {"prism_async", "aiohttp", "httpx"}
    assert all(value > 0 for value in row["rps_median"].values())


def test_transfers_run_both_ways() -> None:
    """Upload and download of a 1 MB file run for both contenders in fresh processes."""
    rows = transfers.run(size_mb=1, rounds=1)
    assert [row["case"] for row in rows] == ["upload", "download"]
    for row in rows:
        assert row["wall_s_median"]["prism_async"] > 0
        assert row["rss_growth_mb_median"]["aiohttp"] >= 0


def test_parsing_and_imports_and_the_table() -> None:
    """Parsing and import-time cases run, and the suite renders them as a markdown table."""
    results = {"parsing": parsing.run(size=(50, 1)), "imports": [imports.run(rounds=1)]}
    assert results["parsing"][0]["per_second_median"]["json.loads alone"] > 0
    text = suite.table(results)
    assert text.startswith("| case |")
    assert "import time" in text
    assert "parse status response" in text


def test_ledger_case_runs_both_parts_and_the_table() -> None:
    """The ledger case submits with and without a SQLite ledger at concurrency 1 and 8, runs
    ``prism.run`` and the plain pipeline in fresh processes (every video downloaded), and the
    suite renders both rows."""
    submits = ledger.run_submits(size=(4, 1))
    for concurrency in ("c1", "c8"):
        rates = submits[concurrency]["posts_per_s_median"]
        assert rates["ledger"] > 0
        assert rates["none"] > 0
    runs = ledger.run_runs(size=(6, 1), seconds=(0.2, 0.6))
    assert runs["errors"] == {"ledger": 0, "none": 0}
    assert [s["files"] for s in runs["samples"]["ledger"] + runs["samples"]["none"]] == [6, 6]
    assert runs["judged"] is False
    text = suite.table({"ledger": [submits, runs]})
    assert "create with a SQLite ledger" in text
    assert "prism.run, 6 generations" in text
    assert "- (quick)" in text


def test_budget_case_runs_every_part_and_the_table(redis_url: str) -> None:
    """The budget case submits with and without a budget on a SQLite and a Redis ledger (the
    budget charged for every submission, nothing left reserved), runs ``prism.run`` with a
    budget (price learnt, and cold) and without one in fresh processes (every video
    downloaded), times ``reserve`` against a budget's history, and the suite renders the
    rows."""
    submits = budget.run_submits(size=(4, 1), redis_url=redis_url)
    for backend in ("sqlite", "redis"):
        ms = submits[backend]["ms_per_submission_median"]
        assert ms["budget"] > 0
        assert ms["none"] > 0
        [after] = submits[backend]["budget_after"]
        assert after["reserved"] == 0
        assert after["spent"] > 0
    runs = budget.run_runs(size=(6, 1), seconds=(0.2, 0.6))
    assert runs["errors"] == {"budget": 0, "none": 0, "cold": 0}
    assert [s["files"] for c in ("budget", "none", "cold") for s in runs["samples"][c]] == [6] * 3
    assert runs["samples"]["budget"][0]["budget_after"]["reserved"] == 0
    assert runs["judged"] is False
    history = budget.run_history(sizes=(0, 20), redis_url=redis_url)
    for backend in ("sqlite", "redis"):
        assert set(history[backend]) == {"lifetime", "day"}
        assert all(ms > 0 for window in history[backend].values() for ms in window.values())
    text = suite.table({"budget": [submits, runs, history]})
    assert "create(key=) with a budget, c=1 (4 x 1)" in text
    assert "ledger.reserve with 0 -> 20 charges in the budget" in text
    assert "prism.run with a budget, 6 generations" in text
    assert "- (quick)" in text


def test_fleet_case_runs_workers_and_a_tracker() -> None:
    """30 submissions through 2 real taskiq worker processes and a ``prism-async track``
    process, on a real redis-server, against the fake in another process: no duplicate POST,
    every video downloaded once, a detection lag for each generation, and the table row."""
    [row] = fleet.run(size=30, seconds=(0.5, 2.0), poll=0.5)
    assert row["duplicate_posts"] == 0
    assert row["keys_without_post"] == 0
    assert row["downloaded"] == 30
    assert row["duplicate_downloads"] == 0
    assert row["detected"] == 30
    assert row["met"] is True
    assert row["judged"] is False
    assert row["tracker_max_pending"] >= 1
    assert row["submissions_per_s"] > 0
    assert row["projection"]["in_flight"] == 2083
    text = suite.table({"fleet": [row]})
    assert "fleet: 30 generations, 2 workers + 1 tracker" in text
