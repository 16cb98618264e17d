"""Helpers for the ledger tests: backends to run the suite on, rows, owners, a race worker.

A backend is a :class:`Store`: a picklable description (``spec``) of one empty store from which
any number of ledger objects can be opened, in this process or another one. To run the
backend suite on another backend, add a factory to :data:`STORES` and a branch to
:func:`open_ledger`.

Run as ``python -m tests.ledger_helpers race SPEC KEY VERSION DIR TAG`` it is one contender of
the compare-and-set race between processes (see ``tests/ledger/test_backend_races.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from prism_async.ledger import Ledger, RedisLedger, SQLiteLedger, Submission, SubmissionState
from prism_async.ledger._model import Owner

ROOT = Path(__file__).resolve().parent.parent
"""The project root: the working directory of worker processes (``tests`` is importable)."""


@attrs.frozen
class Store:
    """One empty store of some backend; :meth:`open` makes a ledger object on it."""

    name: str
    spec: dict[str, str]

    def open(self) -> Ledger:
        """A new ledger object on this store (its own connection)."""
        return open_ledger(self.spec)


def open_ledger(spec: dict[str, str]) -> Ledger:
    """A ledger object on the store ``spec`` describes (in any process)."""
    if spec["backend"] == "sqlite":
        return SQLiteLedger(spec["path"])
    if spec["backend"] == "redis":
        return RedisLedger(spec["url"], prefix=spec["prefix"])
    raise ValueError(f"unknown ledger backend {spec['backend']!r}")


def sqlite_store(tmp_path: Path, redis_url: Callable[[], str]) -> Store:
    """A SQLite file in the test's temporary directory."""
    return Store("sqlite", {"backend": "sqlite", "path": str(tmp_path / "ledger.db")})


def redis_store(tmp_path: Path, redis_url: Callable[[], str]) -> Store:
    """A key prefix of its own on the session's Redis server."""
    prefix = f"test:{uuid.uuid4().hex}:"
    return Store("redis", {"backend": "redis", "url": redis_url(), "prefix": prefix})


STORES: dict[str, Callable[[Path, Callable[[], str]], Store]] = {
    "sqlite": sqlite_store,
    "redis": redis_store,
}
"""Every backend the suite runs on: name -> factory of an empty store (given a temporary
directory and a function returning the session's Redis URL, started on first use)."""


def make_submission(
    key: str = "campaign-42/clip-7",
    *,
    state: str = SubmissionState.ACCEPTED,
    **changes: Any,
) -> Submission:
    """A plausible row; ``changes`` override any field."""
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "key": key,
        "kind": "generation",
        "state": state,
        "attempt": 1,
        "fingerprint": "f" * 64,
        "created_at": now,
        "updated_at": now,
        "request": {"prompt": "A cat", "model_name": "veo-3.1", "count": 1},
    }
    fields.update(changes)
    return Submission(**fields)


def bumped(submission: Submission, **changes: Any) -> Submission:
    """``submission`` changed as a backend expects a swap's new row: the next version."""
    return attrs.evolve(submission, version=submission.version + 1, **changes)


def _start_time(pid: int) -> str:
    """A running process's start time as :class:`Owner` records it ("?" without /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "?"


def dead_owner() -> Owner:
    """The owner a lease would name for a process of this host that has since exited."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    start = _start_time(child.pid)
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=30)
    return Owner(socket.gethostname(), child.pid, start)


# -- the compare-and-set race between processes ------------------------------------------------


def race_command(spec: dict[str, str], key: str, version: int, folder: Path, tag: str) -> list[str]:
    """The command line of one contender."""
    return [
        sys.executable,
        "-m",
        "tests.ledger_helpers",
        "race",
        json.dumps(spec),
        key,
        str(version),
        str(folder),
        tag,
    ]


async def _contend(spec: dict[str, str], key: str, version: int, folder: Path, tag: str) -> str:
    """Read the row, say ready, wait for the go, then swap it: ``won`` or ``lost``."""
    ledger = open_ledger(spec)
    try:
        current = await ledger.get(key)
        if current is None or current.version != version:
            return f"unexpected row {current!r}"
        (folder / f"ready-{tag}").touch()
        deadline = time.monotonic() + 60
        while not (folder / "go").exists():
            if time.monotonic() > deadline:
                return "no go"
            await asyncio.sleep(0.001)
        won = await ledger.swap(current, bumped(current, error=f"won by {tag}"))
        return "won" if won else "lost"
    finally:
        await ledger.aclose()


def main(argv: list[str]) -> int:
    """``race SPEC KEY VERSION DIR TAG``: print ``won`` or ``lost``."""
    if len(argv) != 6 or argv[0] != "race":
        print("usage: python -m tests.ledger_helpers race SPEC KEY VERSION DIR TAG")
        return 2
    spec, key, version, folder, tag = argv[1:]
    print(asyncio.run(_contend(json.loads(spec), key, int(version), Path(folder), tag)))
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
