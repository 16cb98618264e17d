"""Upload and download of a large video: the SDK vs raw aiohttp streaming, RSS and wall time.

Each measurement runs in a fresh process (so peak RSS is its own), rounds alternate the
contenders, and medians are compared. The server runs in another process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from prism_async import PrismClient

from ._server import ServerProcess

MB = 1024 * 1024


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _one(kind: str, contender: str, root: str, path: Path) -> float:
    """One transfer; returns its wall time. Clients are set up before the clock starts."""
    if contender == "prism_async":
        async with PrismClient("prism_sk_bench", base_url=f"{root}/api") as prism:
            generation = await prism.generations.get("gen_abc123")  # as after a wait
            started = time.perf_counter()
            if kind == "upload":
                await prism.uploads.upload(path, content_type="video/mp4")
            else:
                await prism.generations.download(generation, path)
            return time.perf_counter() - started
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        if kind == "upload":
            with path.open("rb") as handle:
                size = path.stat().st_size
                headers = {"Content-Type": "video/mp4", "Content-Length": str(size)}
                async with session.put(f"{root}/upload", data=handle, headers=headers) as r:
                    await r.read()
        else:
            async with session.get(f"{root}/video") as response:
                with path.open("wb") as handle:
                    async for chunk in response.content.iter_chunked(MB):
                        await asyncio.to_thread(handle.write, chunk)
        return time.perf_counter() - started


def measure_here(kind: str, contender: str, root: str, path: str) -> dict[str, float]:
    """One transfer in this (fresh) process: wall time and peak RSS growth during it."""
    import threading

    import prism_async  # noqa: F401  (imports are not part of the growth)

    if kind == "download":
        Path(path).unlink(missing_ok=True)  # both contenders write a new file
    os.sync()  # the previous round's dirty pages must not slow this one down
    asyncio.run(asyncio.sleep(0))
    baseline = _rss()
    peak = baseline
    done = threading.Event()

    def sample() -> None:  # every 2 ms: ru_maxrss would also count start-up peaks
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall = asyncio.run(_one(kind, contender, root, Path(path)))
    done.set()
    sampler.join()
    peak = max(peak, _rss())
    return {"wall_s": wall, "rss_growth_mb": (peak - baseline) / MB}


def _spawn(kind: str, contender: str, root: str, path: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.transfers", kind, contender, root, str(path)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def run(
    quick: bool = False, *, size_mb: int | None = None, rounds: int | None = None
) -> list[dict[str, Any]]:
    """Upload then download ``size_mb`` MB with each contender, in alternating rounds."""
    size = (size_mb if size_mb is not None else (40 if quick else 190)) * MB
    rounds = rounds or (3 if quick else 5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ServerProcess("transfer", size) as server:
        asyncio.run(server.ready())
        source = Path(tmp) / "video.mp4"
        with source.open("wb") as handle:
            block = os.urandom(MB)
            for _ in range(size // MB):
                handle.write(block)
        for kind in ("upload", "download"):
            target = source if kind == "upload" else Path(tmp) / "downloaded.mp4"
            samples: dict[str, list[dict[str, float]]] = {"prism_async": [], "aiohttp": []}
            for round_number in range(rounds):
                order = ["prism_async", "aiohttp"][:: 1 if round_number % 2 == 0 else -1]
                for contender in order:
                    samples[contender].append(_spawn(kind, contender, server.root, target))
            wall = {c: statistics.median(s["wall_s"] for s in v) for c, v in samples.items()}
            rss = {c: statistics.median(s["rss_growth_mb"] for s in v) for c, v in samples.items()}
            rows.append(
                {
                    "case": kind,
                    "size_mb": size // MB,
                    "wall_s_median": {c: round(v, 3) for c, v in wall.items()},
                    "time_ratio_vs_aiohttp": round(wall["prism_async"] / wall["aiohttp"], 3),
                    "rss_growth_mb_median": {c: round(v, 1) for c, v in rss.items()},
                    "target": "RSS growth <= 32 MB, time <= 1.2x raw aiohttp",
                    "met": rss["prism_async"] <= 32
                    and wall["prism_async"] <= 1.2 * wall["aiohttp"],
                }
            )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["upload", "download"])
    parser.add_argument("contender", choices=["prism_async", "aiohttp"])
    parser.add_argument("root")
    parser.add_argument("path")
    args = parser.parse_args()
    print(json.dumps(measure_here(args.kind, args.contender, args.root, args.path)))
