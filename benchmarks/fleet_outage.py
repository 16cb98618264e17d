"""The fleet benchmark through a worker kill and a Redis outage (``--only fleet_outage``).

The fleet of ``fleet.py`` (same sizes, processes and figures), and in the middle of the run:

* once a third of the submissions have reached the fake (POSTs in flight), one worker process
  (the child of a ``taskiq worker`` manager, picked from the pids the workers announce) is
  killed with SIGKILL; its manager starts a new one. Its jobs come back to a worker once idle
  for the broker's ``idle_timeout``, which this case sets to 30 s (``FLEET_IDLE_TIMEOUT_MS``,
  with ``reclaim_interval`` 5 s) instead of the production 20 minutes, so that they do within
  the run;
* once every submission is enqueued and a fifth of the videos are on disk, the Redis server
  (AOF, ``appendfsync always``) is killed with SIGKILL for ``OUTAGE_SECONDS``, then started
  again on the same port with the same append-only file.

Reported on top of the fleet's figures: POSTs per key (max: must be 1), videos paid for but
not downloaded (must be 0), worker restarts (the one kill), tracker restarts (must be 0: the
same tracker process throughout), the outage's length (kill to the new server answering
PING), the time from Redis back to the last video on disk and to the last video of the
generations that finished before it was back (the outage's backlog), and the keys accepted only
after the killed worker's jobs came back (``accepted_after_idle_timeout``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from tests.redis_server import redis_server_binary, wait_for_pong

from . import fleet
from ._server import ServerProcess

OUTAGE_SECONDS = 10.0
IDLE_TIMEOUT_MS = 30_000
"""The workers' ``idle_timeout``: above a heartbeat interval (a quarter of it) plus the outage
plus a heartbeat's backoff, so that no live worker's job is taken over because of the outage."""
RECLAIM_INTERVAL = 5.0
RECONCILE_WINDOW = 60.0
"""The ledger's ``reconcile_window`` (production: 30 minutes): a key whose worker died after
marking it sent, with no generation the API lists for it, is rejected and sent again after
this long (above the longest generation, 25 s in ``--quick``). At 30 minutes, a kill between
the ledger's write and the POST leaving kept the run waiting for half an hour (seen)."""
RECONCILE_INTERVAL = 5.0
KILL_WORKER_AT = 1 / 3
"""The share of the submissions on the fake when a worker is killed."""
KILL_REDIS_AT = 1 / 5
"""The share of the videos on disk when Redis is killed."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RestartableRedis:
    """A Redis server on a fixed port with its data (AOF, fsync always) in a temporary folder:
    killed (SIGKILL) and started again on the same port with the same append-only file (as
    ``tests/taskiq_workers.py``'s, with a ``subprocess`` that outlives event loops)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="prism-redis-outage-")
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start it and wait until it answers PING (its append-only file read)."""
        self._process = subprocess.Popen(  # noqa: ASYNC220 (outlives the event loop; quick)
            [
                redis_server_binary(),
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", self._dir.name),
                *("--save", "", "--protected-mode", "no"),
                *("--appendonly", "yes", "--appendfsync", "always"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await wait_for_pong(self.port, 30)

    def kill(self) -> None:
        """SIGKILL it (what it acknowledged is in its append-only file)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)

    def stop(self) -> None:
        """Kill it and remove its data."""
        self.kill()
        self._dir.cleanup()


def _on_disk(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for name in os.listdir(folder) if name.endswith(".mp4"))


async def _announced(running: fleet.Running) -> set[int]:
    """The worker processes announced so far (retried while Redis is not back)."""
    for _ in range(100):
        try:
            pids = await running.redis.smembers(f"{fleet.PREFIX}bench:workers")
        except (OSError, RedisConnectionError):
            await asyncio.sleep(0.2)
            continue
        return {int(pid) for pid in pids}
    raise RuntimeError("Redis did not come back")


async def _victim(running: fleet.Running) -> int:
    """A live worker process of this fleet (the child of one of its managers)."""
    for pid in sorted(await _announced(running)):
        fields = fleet._stat(pid)
        if fields and fields[0] != "Z" and int(fields[2]) in running.worker_groups:
            return pid
    raise RuntimeError("no live worker process to kill")


async def _disrupt(
    running: fleet.Running, server: RestartableRedis, outage: float
) -> dict[str, Any]:
    """Kill a worker mid-submit, then Redis for ``outage`` seconds mid-wait; what was done."""
    n = running.n
    while True:  # a third of the submissions on the fake: POSTs in flight
        progress = await fleet._get_json(f"{running.fake.stats_root}/progress")
        if int(progress["generations"]) >= n * KILL_WORKER_AT:
            break
        await asyncio.sleep(0.01)
    victim = await _victim(running)
    os.kill(victim, signal.SIGKILL)
    worker_killed = time.time()
    created_at_kill = int(progress["generations"])
    await running.enqueued.wait()
    while (on_disk := await asyncio.to_thread(_on_disk, running.downloads)) < n * KILL_REDIS_AT:
        await asyncio.sleep(0.05)
    created_at_outage = int(
        (await fleet._get_json(f"{running.fake.stats_root}/progress"))["generations"]
    )
    server.kill()
    down = time.time()
    await asyncio.sleep(outage)
    alive = [p.poll() is None for p in running.processes.started]
    await server.start()
    back = time.time()
    await running.downloaded.wait()
    announced = await _announced(running)
    return {
        "worker_killed_at": worker_killed,
        "victim": victim,
        "created_at_worker_kill": created_at_kill,
        "redis_down_at": down,
        "redis_back_at": back,
        "on_disk_at_redis_kill": on_disk,
        "created_at_redis_kill": created_at_outage,
        "all_alive_during_outage": all(alive),
        "worker_processes": len(announced),
    }


def summarize(
    seen: dict[str, Any], n: int, seconds: tuple[float, float], poll: float, workers: int
) -> dict[str, Any]:
    """The fleet's figures of one run, and what the kill and the outage did."""
    row = fleet.summarize(seen, n, seconds, poll, workers)
    done: dict[str, Any] = seen["disruption"]
    report: dict[str, Any] = seen["report"]
    files: dict[str, float] = seen["files"]
    posts: dict[str, int] = report["posts_by_prompt"]
    paid = {g[0] for g in report["generations"]}
    back, down = done["redis_back_at"], done["redis_down_at"]
    last = max(files.values(), default=back)
    finished = {g[0]: g[3] for g in report["generations"]}
    backlog = [files[gid] for gid, at in finished.items() if at < back and gid in files]
    reclaimed_after = done["worker_killed_at"] + IDLE_TIMEOUT_MS / 1000
    accepted: dict[str, float] = seen["accepted_at"]
    # The Redis server's pid changed with the restart: its CPU is not counted.
    for name in ("cpu_s", "cpu_s_until_submitted"):
        row[name].pop("redis", None)
    row.update(
        {
            "case": "fleet outage",
            "posts_per_key_max": max(posts.values(), default=0),
            "paid_not_downloaded": len(paid - set(files)),
            "worker_restarts": done["worker_processes"] - workers,
            "tracker_restarts": 0 if seen["tracker_alive"] else 1,
            "worker_killed_after_s": round(done["worker_killed_at"] - seen["started"], 2),
            "created_at_worker_kill": done["created_at_worker_kill"],
            "redis_killed_after_s": round(done["redis_down_at"] - seen["started"], 2),
            "on_disk_at_redis_kill": done["on_disk_at_redis_kill"],
            "created_at_redis_kill": done["created_at_redis_kill"],
            "outage_s": round(back - down, 2),
            "redis_back_to_last_download_s": round(last - back, 2),
            "finished_during_outage": sum(1 for at in finished.values() if down <= at < back),
            "redis_back_to_backlog_on_disk_s": round(max(backlog, default=back) - back, 2),
            "accepted_after_idle_timeout": sum(
                1 for at in accepted.values() if at >= reclaimed_after
            ),
            "fleet_alive_through_outage": done["all_alive_during_outage"],
            "idle_timeout_ms": IDLE_TIMEOUT_MS,
            "reconcile_window_s": RECONCILE_WINDOW,
        }
    )
    row["target"] = (
        "1 POST per key, every video paid for downloaded exactly once, the tracker never "
        "restarted, the worker restarted once"
    )
    row["met"] = bool(
        row["met"]
        and row["posts_per_key_max"] == 1
        and row["paid_not_downloaded"] == 0
        and row["tracker_restarts"] == 0
        and row["worker_restarts"] == 1
    )
    return row


def run_one(
    n: int, seconds: tuple[float, float], poll: float, workers: int, seed: int, outage: float
) -> dict[str, Any]:
    """One fleet run through a worker kill and a Redis outage, in a temporary folder."""
    server = RestartableRedis()
    worker_env = {
        "FLEET_IDLE_TIMEOUT_MS": str(IDLE_TIMEOUT_MS),
        "FLEET_RECLAIM_INTERVAL": f"{RECLAIM_INTERVAL:g}",
        "FLEET_RECONCILE_WINDOW": f"{RECONCILE_WINDOW:g}",
        "FLEET_RECONCILE_INTERVAL": f"{RECONCILE_INTERVAL:g}",
    }

    async def go(fake: ServerProcess, folder: Path) -> dict[str, Any]:
        await server.start()

        async def disrupt(running: fleet.Running) -> dict[str, Any]:
            return await _disrupt(running, server, outage)

        return await fleet._fleet(
            server.url, fake, folder, n, seconds, poll, workers,
            disrupt=disrupt, worker_env=worker_env,
        )  # fmt: skip

    try:
        with (
            tempfile.TemporaryDirectory(prefix="prism-fleet-outage-bench-") as tmp,
            ServerProcess("fleet", seconds[0], seconds[1], seed, fleet.VIDEO_BYTES) as fake,
        ):
            asyncio.run(fake.ready())
            seen = asyncio.run(go(fake, Path(tmp)))
    finally:
        server.stop()
    return summarize(seen, n, seconds, poll, workers)


def run(
    quick: bool = False,
    *,
    size: int | None = None,
    seconds: tuple[float, float] | None = None,
    poll: float = fleet.POLL_INTERVAL,
    workers: int = fleet.WORKERS,
    seed: int = 1,
    outage: float = OUTAGE_SECONDS,
) -> list[dict[str, Any]]:
    """The fleet case through a worker kill and a Redis outage (one run)."""
    full_n, full_seconds = fleet.SIZES["full"]
    default_n, default_seconds = fleet.SIZES["quick" if quick else "full"]
    n, seconds = size or default_n, seconds or default_seconds
    row = run_one(n, seconds, poll, workers, seed, outage)
    row["judged"] = n >= full_n and seconds == full_seconds
    return [row]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="500 generations of 5-25 s")
    parser.add_argument("--n", type=int, help="generations")
    parser.add_argument("--workers", type=int, default=fleet.WORKERS, help="worker processes")
    parser.add_argument("--poll", type=float, default=fleet.POLL_INTERVAL, help="cadence (s)")
    parser.add_argument("--outage", type=float, default=OUTAGE_SECONDS, help="seconds down")
    args = parser.parse_args(argv)
    rows = run(args.quick, size=args.n, poll=args.poll, workers=args.workers, outage=args.outage)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
