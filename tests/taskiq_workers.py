"""Real ``taskiq worker`` processes for the deploy and dead-letter tests, their journal, and a
Redis server a test can kill and start again on the same port, data and append-only file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from taskiq.kicker import AsyncKicker

from prism_async.integrations.taskiq import TASK_LABELS, PrismStreamBroker
from tests.ledger_helpers import ROOT
from tests.redis_server import redis_server_binary, wait_for_pong

__all__ = ["Journal", "RestartableRedis", "Workers", "kick", "workers"]

APP = "tests.taskiq_deploy_app:broker"


class Workers:
    """``taskiq worker`` processes (each its own process group: the manager and its worker),
    their output in ``logs``; :meth:`stop` kills what is left (its own process groups only)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, *extra: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``taskiq worker`` (one worker process) as ``name``."""
        command = [
            sys.executable, "-m", "taskiq", "worker", APP, "--workers", "1",
            "--max-async-tasks", "10", *extra,
        ]  # fmt: skip
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env={**self.env, **env}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.processes[name] = process
        return process

    def output(self, name: str) -> str:
        """What the process ``name`` printed so far."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def everything(self) -> str:
        """Every process's output, for a failing test."""
        return "\n".join(f"== {name}\n{self.output(name)[-4000:]}" for name in self.processes)

    def stop(self) -> None:
        """SIGKILL every process group still running."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)


@contextlib.contextmanager
def workers(env: dict[str, str], logs: Path) -> Iterator[Workers]:
    """:class:`Workers`, stopped (and their output printed if the test failed) at the end."""
    running = Workers(env, logs)
    try:
        yield running
    except BaseException:
        print(running.everything())
        raise
    finally:
        running.stop()


class Journal:
    """The journal file the app's tasks write (``<event> <tag> <pid>`` per line)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self, event: str, tag: str | None = None) -> list[tuple[str, int]]:
        """``(tag, pid)`` of each ``event`` line (of ``tag``), in order."""
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            kind, what, pid = line.split()
            if kind == event and (tag is None or what == tag):
                found.append((what, int(pid)))
        return found

    def pids(self, event: str, tag: str) -> list[int]:
        """The pids of the processes that wrote ``event`` for ``tag``."""
        return [pid for _, pid in self.events(event, tag)]

    def workers(self) -> list[int]:
        """The pids of the worker processes started so far."""
        return [pid for _, pid in self.events("worker")]


async def kick(client: PrismStreamBroker, task: str, *args: Any) -> None:
    """Enqueue the app's ``task`` with ``args`` (as the SDK's tasks: acked when executed)."""
    kicker: AsyncKicker[Any, Any] = AsyncKicker(task, client, dict(TASK_LABELS))
    await kicker.kiq(*args)


class RestartableRedis:
    """A Redis server on ``port`` with its data (AOF, fsync always) in ``directory``: killed
    (SIGKILL) and started again on the same port with the same data."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it and wait until it answers PING."""
        self._process = await asyncio.create_subprocess_exec(
            redis_server_binary(),
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
            stdout=asyncio.subprocess.DEVNULL,
        )
        await wait_for_pong(self.port, 15)

    async def kill(self) -> None:
        """SIGKILL it (what it acknowledged is in its append-only file)."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
