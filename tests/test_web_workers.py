"""The README's web examples under real multi-process servers, webhooks delivered by the fake.

``tests/apps/fastapi_app.py`` runs under ``uvicorn --workers 2``, ``tests/apps/aiohttp_app.py``
as two processes sharing one port (``reuse_port``): each file is the README's example verbatim
(a test checks it), pointed at the fake by environment variables only (each fleet with a
SQLite ledger of its own: every request submits with ``key=``). Both fleets run at once
against one in-process :class:`FakePrismServer`. The fake delivers each webhook to the shared
port, so the process that receives it is rarely the one waiting: the Redis bus carries it over.
Every wait first polls once (after the client's 5 s ``initial_delay``) and then sleeps for the
hub's 60 s fallback, so a missed webhook would show as a minute, and a missed close on SIGTERM
as a minute of draining.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from statistics import median
from typing import Any

import pytest
from redis import asyncio as aioredis

from prism_async.testing import FakeGeneration, FakePrismServer
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "fleet-secret-0123456789abcdef"
LIVE, DRAINED = 6, 4
"""Per fleet: waits ended by their webhook, then waits in flight when the fleet stops."""
ACCESS = re.compile(r'^(\d+) .*"GET (/probe/\d+) HTTP')
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(process)d %(levelname)s %(name)s %(message)s"},
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(process)d ACCESS "%(request_line)s" %(status_code)s',
            "use_colors": False,
        },
    },
    "handlers": {
        "plain": {"class": "logging.StreamHandler", "formatter": "plain"},
        "access": {"class": "logging.StreamHandler", "formatter": "access"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["plain"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        "prism_async": {"handlers": ["plain"], "level": "WARNING", "propagate": False},
    },
}
AIOHTTP_MAIN = (
    "import logging, runpy;"
    "logging.basicConfig(level=logging.INFO, format='%(process)d %(name)s %(message)s');"
    "runpy.run_module('tests.apps.aiohttp_app', run_name='__main__')"
)


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def send(connection: Connection, method: str, path: str) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a kept-alive connection; the status and body of its answer."""
    reader, writer = connection
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode()
    )
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    length = int(re.search(r"content-length: *(\d+)", head)[1])  # type: ignore[index]
    return int(head.split()[1]), await reader.readexactly(length)


class Fleet:
    """Two server processes on one port, their log lines tagged with the pid that wrote them."""

    def __init__(self, kind: str, redis_url: str, port: int) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.port = port
        self.processes: list[asyncio.subprocess.Process] = []
        self.lines: list[tuple[int, str]] = []
        self._readers: list[asyncio.Task[None]] = []

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            pid = int(line.split(" ", 1)[0]) if line[:1].isdigit() else process.pid
            self.lines.append((pid, line))

    async def start(self, env: dict[str, str], tmp_path: Path) -> None:
        if self.kind == "fastapi":
            config = tmp_path / "uvicorn-log.json"
            config.write_text(json.dumps(LOG_CONFIG))
            uvicorn = [sys.executable, "-m", "uvicorn", "tests.apps.fastapi_app:app"]
            options = ["--workers", "2", "--host", "127.0.0.1", "--port", str(self.port)]
            # the test pins its connections first and uses them later (uvicorn closes a
            # connection idle for 5 s by default; aiohttp's default is 75 s)
            options += ["--timeout-keep-alive", "120"]
            commands = [[*uvicorn, *options, "--log-config", str(config)]]
            ready = "Application startup complete"
        else:
            commands = [[sys.executable, "-u", "-c", AIOHTTP_MAIN]] * 2
            ready = "Running on"
        for command in commands:
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=ROOT,
                env={**env, "PORT": str(self.port)},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            self.processes.append(process)
            self._readers.append(asyncio.create_task(self._read(process)))
        async with asyncio.timeout(15):  # both processes serve before any request is sent
            while len({pid for pid, line in self.lines if ready in line}) < 2:
                assert all(p.returncode is None for p in self.processes), self.lines
                await asyncio.sleep(0.05)

    def signal(self, signum: int) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signum)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL to each process group still alive after 10 s."""
        self.signal(signal.SIGTERM)
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        _, pending = await asyncio.wait(self._readers, timeout=5)
        for reader in pending:  # (a straggler still holds the pipe)
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def connect(self, per_process: int) -> dict[int, list[Connection]]:
        """Kept-alive connections, ``per_process`` to each process: the kernel spreads new
        connections over the processes, and an access-logged probe tells where each went."""
        pinned: dict[int, list[Connection]] = {}
        for probe in range(200):
            if len(pinned) == 2 and all(len(c) >= per_process for c in pinned.values()):
                return pinned
            connection = await asyncio.open_connection("127.0.0.1", self.port)
            assert (await send(connection, "GET", f"/probe/{probe}"))[0] == 404

            def logged(probe: int = probe) -> list[int]:
                return [
                    int(line.split()[0]) for _, line in self.lines if self._probed(line) == probe
                ]

            await until(lambda: bool(logged()), 5)
            pid = logged()[0]
            if len(pinned.get(pid, ())) < per_process:
                pinned.setdefault(pid, []).append(connection)
            else:
                connection[1].close()
        raise AssertionError(f"200 connections did not reach both processes: {pinned}")

    @staticmethod
    def _probed(line: str) -> int | None:
        match = ACCESS.match(line)
        return int(match[2].rsplit("/", 1)[1]) if match else None

    async def receivers(self) -> dict[str, int]:
        """Generation id -> pid of the process that received its webhook (the bus's stream)."""
        redis: Any = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            entries: list[tuple[str, dict[str, str]]] = await redis.xrange("prism:webhooks")
        finally:
            await redis.aclose()
        return {
            json.loads(fields["event"])["generation_id"]: int(fields["origin"].split("-")[0])
            for _, fields in entries
        }


@pytest.fixture
async def fleets(
    redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[FakePrismServer, list[Fleet]]]:
    """The fake, and both README apps running as two processes each (stopped in any case)."""
    base = redis_url.rsplit("/", 1)[0]
    async with FakePrismServer(generation_seconds=100) as fake:
        env = {
            **os.environ,
            "PRISM_API_KEY": fake.api_key,
            "PRISM_BASE_URL": fake.base_url,
            "PRISM_WEBHOOK_SECRET": SECRET,
        }
        fleets = [
            Fleet("fastapi", f"{base}/7", free_port()),
            Fleet("aiohttp", f"{base}/8", free_port()),
        ]
        try:
            for fleet in fleets:
                redis = aioredis.Redis.from_url(fleet.redis_url)
                await redis.flushdb()
                await redis.aclose()
            await asyncio.gather(
                *(
                    fleet.start(
                        {
                            **env,
                            "REDIS_URL": fleet.redis_url,
                            "PRISM_HOOK_URL": f"http://127.0.0.1:{fleet.port}/prism/hook",
                            "PRISM_LEDGER": str(tmp_path / f"{fleet.kind}-ledger.db"),
                        },
                        tmp_path,
                    )
                    for fleet in fleets
                )
            )
            yield fake, fleets
        finally:
            await asyncio.gather(*(fleet.stop() for fleet in fleets))


def readme_blocks() -> list[str]:
    """Every python block of the README."""
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


@pytest.mark.parametrize("name", ["fastapi_app", "aiohttp_app"])
def test_the_apps_are_the_readme_examples(name: str) -> None:
    """Each app the tests run is one of the README's examples, character for character."""
    assert (ROOT / "tests" / "apps" / f"{name}.py").read_text() in readme_blocks()


async def until(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def exercise(fake: FakePrismServer, fleet: Fleet) -> tuple[list[float], float, int]:
    """LIVE + DRAINED waits in ``fleet``, half in each process, all past their first poll
    (sleeping for the 60 s fallback). The LIVE ones' generations complete, with webhooks; then
    the DRAINED ones' complete while the fleet no longer gets webhooks, and it gets SIGTERM.

    Returns the LIVE waits' latencies (generation completed -> answer received), how long
    the fleet took to answer the DRAINED ones after SIGTERM, and how many LIVE waits were
    woken in a process other than the one that received their webhook.
    """
    waiting: dict[str, tuple[int, Connection]] = {}  # hook -> (pid, connection)
    live: list[str] = []
    drained: list[str] = []
    for pid, connections in (await fleet.connect((LIVE + DRAINED) // 2)).items():
        for n, connection in enumerate(connections):
            hook = f"{fleet.kind}{len(waiting)}"
            waiting[hook] = (pid, connection)
            (live if n < LIVE // 2 else drained).append(hook)
    answered: dict[str, float] = {}

    async def make_video(hook: str) -> dict[str, Any]:
        status, body = await send(waiting[hook][1], "POST", f"/videos?hook={hook}&key={hook}")
        answered[hook] = time.monotonic()
        assert status == 200, body
        return dict(json.loads(body))

    def generations() -> list[FakeGeneration]:
        return list(fake.generations.values())

    def generation_of(hook: str) -> str:
        prompt = json.dumps({"hook": hook})
        return next(g.id for g in generations() if g.prompt == prompt)

    def polled(hook: str) -> int:
        return len(fake.requests_to("GET", f"/api/generations/{generation_of(hook)}"))

    calls = {hook: asyncio.create_task(make_video(hook)) for hook in waiting}
    prompts = [json.dumps({"hook": hook}) for hook in waiting]

    def sent() -> bool:
        for call in calls.values():  # a call that failed never creates its generation
            if call.done() and not call.cancelled() and call.exception() is not None:
                raise AssertionError(f"{fleet.kind}: {call.exception()!r}\n{fleet.lines}")
        return len(prompts) == sum(g.prompt in prompts for g in generations())

    try:
        await until(sent, 10)
        await until(lambda: all(polled(hook) == 1 for hook in waiting), 10)  # the first polls
        await asyncio.sleep(0.2)  # now sleeping for the fallback

        completed = time.monotonic()
        for hook in live:
            fake.complete_generation(generation_of(hook))
        videos = await asyncio.wait_for(asyncio.gather(*(calls[h] for h in live)), 10)
        latencies = [answered[hook] - completed for hook in live]
        assert [video["id"] for video in videos] == [generation_of(h) for h in live]
        assert all(polled(hook) == 2 for hook in live)  # the first poll, then the confirmation

        dead = f"http://127.0.0.1:{free_port()}/prism/hook"
        for hook in drained:  # Prism can no longer reach the app
            fake.generations[generation_of(hook)].webhook_url = dead
            fake.complete_generation(generation_of(hook))
        await fake.drain_webhooks()
        stopping = time.monotonic()
        fleet.signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*(calls[h] for h in drained)), 20)
        drain = max(answered[hook] for hook in drained) - stopping
        assert all(polled(hook) == 2 for hook in drained)  # polled at once on SIGTERM
    finally:
        for call in calls.values():
            call.cancel()
        for _, (_, writer) in waiting.values():
            writer.close()
    async with asyncio.timeout(10):  # the processes end by themselves
        await asyncio.gather(*(process.wait() for process in fleet.processes))
    receivers = await fleet.receivers()
    crossed = sum(receivers[generation_of(hook)] != waiting[hook][0] for hook in live)
    return latencies, drain, crossed


async def test_readme_web_apps_under_several_processes(
    fleets: tuple[FakePrismServer, list[Fleet]],
) -> None:
    """Under uvicorn --workers 2 and two aiohttp processes on one port: no webhook is refused,
    each wait ends right after its webhook whichever process got it, and SIGTERM drains the
    waits in flight at once instead of after the 60 s fallback."""
    fake, running = fleets
    results = await asyncio.gather(*(exercise(fake, fleet) for fleet in running))
    for fleet, (latencies, drain, crossed) in zip(running, results, strict=True):
        print(
            f"{fleet.kind}: webhook -> answer median {median(latencies) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms; {crossed}/{LIVE} woken across processes; "
            f"SIGTERM -> last answer {drain:.2f} s"
        )
        assert max(latencies) < 2.0
        assert drain < 3.0
        assert crossed >= 1
        problems = [line for _, line in fleet.lines if re.search(r"WARNING|ERROR|Traceback", line)]
        assert problems == []
    hooks = {f"http://127.0.0.1:{fleet.port}/prism/hook" for fleet in running}
    delivered = [d.status for d in fake.webhook_deliveries if d.url.split("?")[0] in hooks]
    assert delivered == [200] * LIVE * len(running)  # not one 401
