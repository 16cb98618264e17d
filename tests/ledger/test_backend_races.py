"""The compare-and-set race (exactly one of many contenders wins: tasks on one object, objects
of their own, OS processes), then what is particular to SQLite and to Redis."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import attrs
import pytest

from prism_async.ledger import (
    Ledger,
    RedisLedger,
    SQLiteLedger,
    SubmissionState,
)
from tests.ledger_helpers import (
    ROOT,
    Store,
    bumped,
    make_submission,
    race_command,
)
from tests.redis_server import RedisServer

S = SubmissionState


# -- the compare-and-set race ------------------------------------------------------------------


async def _race(contenders: list[Ledger], ledger: Ledger) -> None:
    """Every contender swaps the same version at once: exactly one wins, and the row is its."""
    row = make_submission("race", state=S.SENDING)
    await ledger.insert(row)
    start = asyncio.Event()

    async def contend(index: int, contender: Ledger) -> bool:
        await start.wait()
        return await contender.swap(row, bumped(row, state=S.ACCEPTED, error=f"won by {index}"))

    tasks = [asyncio.create_task(contend(i, c)) for i, c in enumerate(contenders)]
    await asyncio.sleep(0)
    start.set()
    results = await asyncio.gather(*tasks)
    assert results.count(True) == 1
    winner = results.index(True)
    stored = await ledger.get("race")
    assert stored is not None
    assert stored.version == row.version + 1
    assert stored.error == f"won by {winner}"


async def test_race_of_20_tasks_on_one_object(ledger: Ledger) -> None:
    await _race([ledger] * 20, ledger)


async def test_race_of_20_tasks_each_with_its_own_object(store: Store, ledger: Ledger) -> None:
    contenders = [store.open() for _ in range(20)]
    try:
        await _race(contenders, ledger)
    finally:
        for contender in contenders:
            await contender.aclose()


async def test_race_of_4_processes(store: Store, ledger: Ledger, tmp_path: Path) -> None:
    """Four OS processes, each with a ledger object of its own on the store, read the same
    version, wait for a common go, then swap it: exactly one wins."""
    row = make_submission("race", state=S.SENDING, version=7)
    await ledger.insert(row)
    folder = tmp_path / "race"
    folder.mkdir()
    tags = [f"p{i}" for i in range(4)]
    workers = [
        await asyncio.create_subprocess_exec(
            *race_command(store.spec, "race", row.version, folder, tag),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for tag in tags
    ]
    try:
        async with asyncio.timeout(60):
            while not all((folder / f"ready-{tag}").exists() for tag in tags):
                await asyncio.sleep(0.01)
            (folder / "go").touch()
            outputs = [await worker.communicate() for worker in workers]
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    said = [out.decode().strip() for out, _ in outputs]
    assert all(worker.returncode == 0 for worker in workers), [err for _, err in outputs]
    assert sorted(said) == ["lost", "lost", "lost", "won"], said
    stored = await ledger.get("race")
    assert stored is not None
    assert stored.version == 8
    assert stored.error == f"won by {tags[said.index('won')]}"


# -- SQLite specifics ----------------------------------------------------------------------------


async def test_sqlite_file_is_wal_with_full_sync(tmp_path: Path) -> None:
    """The embedded backend: nothing opened before the first use, then a WAL file whose
    commits are synchronous=FULL."""

    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    assert repr(ledger) == f"SQLiteLedger({str(path)!r})"
    assert not path.exists()
    try:
        await ledger.insert(make_submission("k"))
        synchronous = await ledger._run(lambda db: db.execute("PRAGMA synchronous").fetchone()[0])
        assert synchronous == 2  # FULL
    finally:
        await ledger.aclose()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_a_submission_is_frozen() -> None:
    """A row is a value: it cannot be changed in place, only replaced by a swap."""
    row = make_submission("k")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        row.state = S.REJECTED  # type: ignore[misc]
    assert row.state == S.ACCEPTED


# -- Redis specifics -----------------------------------------------------------------------------


async def test_redis_warns_when_the_server_may_lose_writes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Money-safe use needs appendonly yes + appendfsync always: said once, at first use."""
    careless = RedisServer(appendonly=False)
    try:
        ledger = RedisLedger(careless.url, prefix="warn:")
        with caplog.at_level(logging.WARNING, logger="prism_async.ledger"):
            assert await ledger.get("k") is None
            assert await ledger.get("k") is None
        await ledger.aclose()
    finally:
        careless.stop()
    warnings = [r.getMessage() for r in caplog.records if "appendfsync" in r.getMessage()]
    assert len(warnings) == 1
    assert "appendonly=no" in warnings[0]
    assert "appendfsync always" in warnings[0]


async def test_redis_is_quiet_on_a_safe_server(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = RedisLedger(redis_url, prefix=f"quiet:{id(caplog)}:")
    with caplog.at_level(logging.WARNING, logger="prism_async.ledger"):
        await ledger.insert(make_submission("k"))
    await ledger.aclose()
    assert caplog.records == []
    assert "redis://" not in repr(ledger)  # the URL may carry a password
