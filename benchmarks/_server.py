"""A minimal generation-status server, run in its own process so it does not share the client's CPU.

Generation ``gen_<i>`` is ``generating`` until ``t0 + finish[i]`` (wall clock, shared by both
processes), then ``completed``. ``GET /stats`` reports how many status requests it answered.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web


def finish_offsets(n: int, seed: int, start: float, end: float) -> list[float]:
    """When each generation finishes, in seconds after ``t0`` (the same on both sides)."""
    rng = random.Random(seed)
    return [rng.uniform(start, end) for _ in range(n)]


def _app(offsets: list[float], t0: float) -> web.Application:
    counts = {"status": 0}

    async def status(request: web.Request) -> web.Response:
        counts["status"] += 1
        index = int(request.match_info["id"].removeprefix("gen_"))
        done = time.time() >= t0 + offsets[index]
        body: dict[str, Any] = {
            "id": request.match_info["id"],
            "status": "completed" if done else "generating",
            "template_id": None,
            "video_url": "https://storage.bench.test/v.mp4" if done else None,
            "share_url": None,
            "created_at": "2026-02-26T12:00:00.000Z",
            "completed_at": None,
            "error": None,
        }
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application()
    app.router.add_get("/api/generations/{id}", status)
    app.router.add_get("/stats", stats)
    return app


def _serve(conn: Connection, offsets: list[float], t0: float) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    conn.send(sock.getsockname()[1])
    web.run_app(
        _app(offsets, t0),
        sock=sock,
        print=None,
        access_log=None,
        handle_signals=False,
        backlog=4096,
    )


class StatusServer:
    """Start the status server in a separate process; ``base_url`` once started."""

    def __init__(self, offsets: list[float], t0: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._parent, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, offsets, t0), daemon=True)
        self.base_url = ""

    def __enter__(self) -> StatusServer:
        self._process.start()
        port = self._parent.recv()
        self.base_url = f"http://127.0.0.1:{port}/api"
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(5)

    async def stats(self) -> dict[str, int]:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            root = self.base_url.removesuffix("/api")
            for _ in range(50):
                try:
                    async with session.get(f"{root}/stats") as response:
                        return dict(await response.json())
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        raise RuntimeError("status server did not answer")
