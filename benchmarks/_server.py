"""Servers for the benchmarks, each run in its own process so it does not share the client's CPU.

* ``status``: generation ``gen_<i>`` is ``generating`` until ``t0 + finish[i]`` (wall clock,
  shared by both processes), then ``completed``; ``GET /stats`` counts status requests.
* ``canned``: a bare asyncio HTTP/1.1 server answering every request with the same small JSON
  generation, as fast as possible, so the client is what is measured.
* ``transfer``: presign + a PUT sink that reads and discards the body, a completed generation
  whose ``video_url`` streams ``size`` bytes.
* ``fake``: the SDK's own :class:`~prism_async.testing.FakePrismServer` (the whole API, videos
  included) with unlimited credits; ``args`` are ``(shortest, longest, seed, video_bytes)``:
  each generation takes a seeded random number of seconds between the two. An optional fifth
  argument ``"lognormal"`` draws them from a lognormal distribution instead, with median
  ``shortest`` and sigma ``longest``.
* ``fleet``: the same fake, plus a second port (``stats_root``) that reports what the fake saw
  without going through its request log's JSON: ``GET /progress`` (generations created,
  requests received) and ``GET /report`` (every generation's prompt and wall-clock creation
  and finish times, create POSTs per prompt, status GETs, video GETs per generation, and the
  other requests by route), for ``fleet.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web

from prism_async.testing import _data

CREATED_AT = "2026-02-26T12:00:00.000Z"
GENERATION = _data.generation("gen_abc123", "generating", created_at=CREATED_AT)
"""The generation every server answers with (its shape: the fake's, from ``_data``)."""


def finish_offsets(n: int, seed: int, start: float, end: float) -> list[float]:
    """When each generation finishes, in seconds after ``t0`` (the same on both sides)."""
    rng = random.Random(seed)
    return [rng.uniform(start, end) for _ in range(n)]


def _status_app(offsets: list[float], t0: float) -> web.Application:
    counts = {"status": 0}

    async def status(request: web.Request) -> web.Response:
        counts["status"] += 1
        index = int(request.match_info["id"].removeprefix("gen_"))
        done = time.time() >= t0 + offsets[index]
        body = _data.generation(
            request.match_info["id"],
            "completed" if done else "generating",
            video_url="https://storage.bench.test/v.mp4" if done else None,
            created_at=CREATED_AT,
        )
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application()
    app.router.add_get("/api/generations/{id}", status)
    app.router.add_get("/stats", stats)
    return app


def _transfer_app(size: int) -> web.Application:
    chunk = random.Random(1).randbytes(1 << 20)

    async def presign(request: web.Request) -> web.Response:
        body = await request.json()
        root = f"http://{request.host}"
        return web.json_response(
            _data.presigned_upload(
                "bench/upload.mp4",
                f"{root}/upload?X-Amz-Signature=bench",
                body["contentType"],
                200 * 1024 * 1024,
            )
        )

    async def sink(request: web.Request) -> web.Response:
        received = 0
        while data := await request.content.read(1 << 20):
            received += len(data)
        return web.Response(text=str(received))

    async def generation(request: web.Request) -> web.Response:
        root = f"http://{request.host}"
        video_url = f"{root}/video?X-Amz-Signature=b"
        return web.json_response(
            _data.generation("gen_abc123", "completed", video_url=video_url, created_at=CREATED_AT)
        )

    async def video(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = size
        response.content_type = "video/mp4"
        await response.prepare(request)
        left = size
        while left > 0:
            piece = chunk[: min(left, len(chunk))]
            await response.write(piece)
            left -= len(piece)
        return response

    app = web.Application(client_max_size=1 << 40)
    app.router.add_post("/api/s3/presign-upload", presign)
    app.router.add_put("/upload", sink)
    app.router.add_get("/api/generations/{id}", generation)
    app.router.add_get("/video", video)
    return app


class _Canned(asyncio.Protocol):
    """Answers every request on a keep-alive connection with the same JSON body."""

    RESPONSE = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(json.dumps(GENERATION))).encode()
        + b"\r\n\r\n"
        + json.dumps(GENERATION).encode()
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer.rsplit(b"\r\n\r\n", 1)[1]
            self.transport.write(self.RESPONSE * count)


def _run_canned(sock: socket.socket) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Canned, sock=sock, backlog=1024)
        await server.serve_forever()

    asyncio.run(serve())


def _fake(
    port: int,
    shortest: float,
    longest: float,
    seed: int,
    video_bytes: int,
    distribution: str = "uniform",
) -> Any:
    from prism_async.testing import FakePrismServer

    rng = random.Random(seed)

    def seconds() -> float:
        if distribution == "lognormal":  # median ``shortest``, sigma ``longest``
            return rng.lognormvariate(math.log(shortest), longest)
        return rng.uniform(shortest, longest)

    return FakePrismServer(
        api_key="prism_sk_bench",
        credits=10**12,
        generation_seconds=seconds,
        port=port,
        video_bytes=video_bytes,
    )


def _run_fake(port: int, *args: Any) -> None:
    asyncio.run(_fake(port, *args).serve_forever())


def _fleet_report(fake: Any) -> dict[str, Any]:
    """What the fake saw, for the fleet case; times are wall-clock (``time.time()``)."""
    now = fake.now()
    offset = time.time() - now  # server clock (monotonic, never advanced here) -> wall clock
    posts: Counter[str] = Counter()
    videos: Counter[str] = Counter()
    status_gets = 0
    other: Counter[str] = Counter()
    for request in fake.requests:
        path: str = request.path
        if request.method == "POST" and path == "/api/generations":
            posts[str((request.json or {}).get("prompt"))] += 1
        elif request.method == "GET" and path.startswith("/api/generations/"):
            status_gets += 1
        elif request.method == "GET" and path.startswith("/storage/videos/"):
            videos[path.rsplit("/", 1)[-1].removesuffix(".mp4")] += 1
        else:
            other[f"{request.method} {'/'.join(path.split('/')[:3])}"] += 1
    return {
        "generations": [
            [g.id, g.prompt, g.created + offset, g.finished_at() + offset, g.status_at(now)]
            for g in fake.generations.values()
        ],
        "posts_by_prompt": dict(posts),
        "status_gets": status_gets,
        "video_gets_by_generation": dict(videos),
        "other_requests": dict(other),
    }


def _fleet_stats_app(fake: Any) -> web.Application:
    async def progress(request: web.Request) -> web.Response:
        return web.json_response(
            {"generations": len(fake.generations), "requests": len(fake.requests)}
        )

    async def report(request: web.Request) -> web.Response:
        return web.json_response(_fleet_report(fake))

    app = web.Application()
    app.router.add_get("/progress", progress)
    app.router.add_get("/report", report)
    return app


def _run_fleet(port: int, stats: socket.socket, *args: Any) -> None:
    """The fake on ``port`` and its report on ``stats``, in one event loop."""

    async def serve() -> None:
        fake = _fake(port, *args)
        await fake.start()
        runner = web.AppRunner(_fleet_stats_app(fake), access_log=None)
        await runner.setup()
        await web.SockSite(runner, stats).start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await fake.close()

    asyncio.run(serve())


def _serve(conn: Connection, kind: str, args: tuple[Any, ...]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    conn.send(sock.getsockname()[1])
    if kind in ("fake", "fleet"):  # FakePrismServer binds its own socket: hand it the port
        port = sock.getsockname()[1]
        sock.close()
        if kind == "fake":
            _run_fake(port, *args)
            return
        stats = socket.socket()
        stats.bind(("127.0.0.1", 0))
        stats.listen(128)
        conn.send(stats.getsockname()[1])
        _run_fleet(port, stats, *args)
        return
    if kind == "canned":
        _run_canned(sock)
        return
    factory: Callable[..., web.Application] = _status_app if kind == "status" else _transfer_app
    web.run_app(
        factory(*args), sock=sock, print=None, access_log=None, handle_signals=False, backlog=4096
    )


class ServerProcess:
    """Start one of the servers above in a separate process; ``base_url`` once started."""

    def __init__(self, kind: str, *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._parent, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, kind, args), daemon=True)
        self.kind = kind
        self.root = ""
        self.base_url = ""
        self.stats_root = ""
        """``fleet``: the root of its report (``/progress``, ``/report``)."""

    def __enter__(self) -> ServerProcess:
        self._process.start()
        port = self._parent.recv()
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root}/api"
        if self.kind == "fleet":
            self.stats_root = f"http://127.0.0.1:{self._parent.recv()}"
        return self

    @property
    def pid(self) -> int | None:
        """The server's process id (once started)."""
        return self._process.pid

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(5)

    async def ready(self) -> None:
        """Wait until the server accepts connections."""
        host, port = "127.0.0.1", int(self.root.rsplit(":", 1)[1])
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError("benchmark server did not start")

    async def stats(self) -> dict[str, int]:
        import aiohttp

        await self.ready()
        async with aiohttp.ClientSession() as session, session.get(f"{self.root}/stats") as r:
            return dict(await r.json())
