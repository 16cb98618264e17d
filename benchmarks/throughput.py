"""Status-poll throughput: prism.generations.get vs raw aiohttp vs httpx, concurrency 64.

All three run in this process against the same canned server in another process; rounds
alternate the order of the contenders and the medians are compared.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from prism_async import PrismClient

from ._server import ServerProcess

CONCURRENCY = 64


async def _drive(call: Callable[[], Awaitable[Any]], requests: int) -> tuple[float, float]:
    """Run ``requests`` calls, CONCURRENCY at a time.

    Returns:
        Requests per wall second, and requests per second of this process's CPU (the client's
        cost alone: the server runs in another process).
    """
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return requests / (time.perf_counter() - started), requests / (time.process_time() - cpu)


async def _measure(
    base_url: str, requests: int, rounds: int
) -> dict[str, list[tuple[float, float]]]:
    import httpx

    url = f"{base_url}/generations/gen_abc123"
    results: dict[str, list[tuple[float, float]]] = {"prism_async": [], "aiohttp": [], "httpx": []}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with (
        PrismClient("prism_sk_bench", base_url=base_url, max_connections=CONCURRENCY) as prism,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session,
        httpx.AsyncClient(limits=limits) as client,
    ):
        headers = {"Authorization": "Bearer prism_sk_bench"}

        async def with_prism() -> Any:
            return await prism.generations.get("gen_abc123")

        async def with_aiohttp() -> Any:
            async with session.get(url, headers=headers) as response:
                return await response.json()

        async def with_httpx() -> Any:
            response = await client.get(url, headers=headers)
            return response.json()

        contenders = [
            ("prism_async", with_prism),
            ("aiohttp", with_aiohttp),
            ("httpx", with_httpx),
        ]
        for _name, call in contenders:  # warm up connections and caches
            await _drive(call, CONCURRENCY * 4)
        for round_number in range(rounds):
            shift = round_number % len(contenders)
            for name, call in contenders[shift:] + contenders[:shift]:
                # httpx is an order of magnitude slower here: fewer requests, same rate.
                count = requests // 8 if name == "httpx" else requests
                results[name].append(await _drive(call, count))
    return results


def run(quick: bool = False, *, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Measure; return medians, ratios (median of the per-round ratios) and every round.

    ``size`` is ``(requests per round, rounds)``, for smoke tests.
    """
    requests, rounds = size or ((500, 15) if quick else (2_000, 21))
    with ServerProcess("canned") as server:
        asyncio.run(server.ready())
        data = asyncio.run(_measure(server.base_url, requests, rounds))

    def ratio(name: str, index: int) -> float:
        pairs = zip(data[name], data["aiohttp"], strict=True)
        return statistics.median(ours[index] / raw[index] for ours, raw in pairs)

    wall = {name: statistics.median(r[0] for r in rows) for name, rows in data.items()}
    cpu = {name: statistics.median(r[1] for r in rows) for name, rows in data.items()}
    cpu_ratio = {name: round(ratio(name, 1), 3) for name in data}
    return {
        "case": "status-poll throughput",
        "requests_per_round": requests,
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "rps_median": {name: round(value) for name, value in wall.items()},
        "rps_ratio_vs_aiohttp": {name: round(ratio(name, 0), 3) for name in data},
        "requests_per_cpu_second_median": {name: round(value) for name, value in cpu.items()},
        "cpu_ratio_vs_aiohttp": cpu_ratio,
        "target": "prism_async >= 0.9x raw aiohttp (requests per client CPU second)",
        "met": cpu_ratio["prism_async"] >= 0.9,
    }
