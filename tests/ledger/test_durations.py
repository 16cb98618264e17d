"""The learnt generation durations on every backend (SQLite in a temporary file, and a key
prefix of its own on a real redis-server): order, the window, the key cap, float precision,
what survives reopening, an older ledger file gaining the tables, an unreachable Redis."""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
from pathlib import Path

import pytest

from prism_async import InvalidRequestError, LedgerUnavailableError
from prism_async.ledger import Ledger, RedisLedger, SQLiteLedger
from prism_async.ledger import _timings as timings
from tests.conftest import free_port
from tests.ledger_helpers import Store

_created = itertools.count(1_800_000_000)


def at(key: object, seconds: object, created: float | None = None) -> tuple[str, float, float]:
    """A sample created after every one made before (unless ``created`` is given)."""
    stamp = float(next(_created)) if created is None else created
    return key, seconds, stamp  # type: ignore[return-value]


def key(model: str = "veo-3.1", duration: int = 8) -> str:
    """A key as the poll scheduler makes one (JSON text)."""
    return json.dumps(["generation", {"model": model, "duration": duration}], sort_keys=True)


def test_the_limits() -> None:
    assert (timings.DURATION_WINDOW, timings.DURATION_KEYS) == (64, 1000)
    assert (Ledger.DURATION_WINDOW, Ledger.DURATION_KEYS) == (64, 1000)


async def test_most_recent_first_and_an_unknown_key_is_empty(ledger: Ledger) -> None:
    assert await ledger.durations(key()) == []
    await ledger.add_durations([at(key(), 1.0), at(key("kling"), 5.0), at(key(), 2.0)])
    await ledger.add_durations([at(key(), 3.0)])
    await ledger.add_durations([])  # nothing to write
    assert await ledger.durations(key()) == [3.0, 2.0, 1.0]
    assert await ledger.durations(key("kling")) == [5.0]
    assert await ledger.durations(key("other")) == []


async def test_full_float_precision(ledger: Ledger) -> None:
    values = [0.1 + 0.2, 1 / 3, 123456.789012345678, 5e-324, 1.7976931348623157e308, 7]
    await ledger.add_durations([at("k", value) for value in values])
    assert await ledger.durations("k") == [float(v) for v in reversed(values)]


async def test_each_key_keeps_its_window(ledger: Ledger) -> None:
    window = timings.DURATION_WINDOW
    await ledger.add_durations([at("a", float(i)) for i in range(window + 10)])
    await ledger.add_durations([at("b", 1.5)])
    for i in range(window + 10, window + 15):
        await ledger.add_durations([at("a", float(i))])
    kept = await ledger.durations("a")
    assert kept == [float(i) for i in range(window + 14, 14, -1)]
    assert len(kept) == window
    assert await ledger.durations("b") == [1.5]


async def test_a_smaller_window_and_key_cap_on_one_ledger_object(ledger: Ledger) -> None:
    ledger.DURATION_WINDOW, ledger.DURATION_KEYS = 2, 3
    await ledger.add_durations(
        [at("a", 1.0), at("b", 1.0), at("c", 1.0), at("a", 2.0), at("a", 3.0)]
    )
    assert await ledger.durations("a") == [3.0, 2.0]
    await ledger.add_durations([at("b", 2.0)])  # b written again: c is now the oldest write
    await ledger.add_durations([at("d", 1.0)])  # a fourth key: c goes
    assert await ledger.durations("c") == []
    assert [await ledger.durations(k) for k in "abd"] == [[3.0, 2.0], [2.0, 1.0], [1.0]]
    await ledger.add_durations(  # beyond the cap at once
        [at("e", 1.0), at("f", 1.0), at("g", 1.0), at("h", 1.0)]
    )
    assert [await ledger.durations(k) for k in "abdefgh"] == [[]] * 4 + [[1.0]] * 3
    await ledger.add_durations([at("c", 9.0)])  # a dropped key starts again from nothing
    assert await ledger.durations("c") == [9.0]


async def test_a_smaller_cap_on_the_class(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend reads the cap from the ledger at each write (so from its class too)."""
    monkeypatch.setattr(type(ledger), "DURATION_KEYS", 5)
    await ledger.add_durations([at(f"k{i}", float(i)) for i in range(8)])
    found = [await ledger.durations(f"k{i}") for i in range(8)]
    assert found == [[]] * 3 + [[float(i)] for i in range(3, 8)]


async def test_another_ledger_object_sees_them_and_they_survive_reopening(store: Store) -> None:
    first, second = store.open(), store.open()
    try:
        await first.add_durations([at("k", 1.25), at("k", 2.5)])
        assert await second.durations("k") == [2.5, 1.25]
        await second.add_durations([at("k", 4.0)])
    finally:
        await first.aclose()
        await second.aclose()
    again = store.open()
    try:
        assert await again.durations("k") == [4.0, 2.5, 1.25]
    finally:
        await again.aclose()


async def test_bad_samples_are_refused_and_nothing_is_written(ledger: Ledger) -> None:
    for bad in (float("nan"), float("inf"), "1.0", True, None):
        with pytest.raises(InvalidRequestError):
            await ledger.add_durations([at("k", 1.0), at("k", bad)])
    with pytest.raises(InvalidRequestError):
        await ledger.add_durations([at(3, 1.0)])
    assert await ledger.durations("k") == []


async def test_an_older_ledger_file_gains_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    made = SQLiteLedger(path)
    await made.price("s")  # opens (so makes) the file
    await made.aclose()
    with contextlib.closing(sqlite3.connect(path)) as db, db:  # as before durations
        db.executescript("DROP TABLE durations; DROP TABLE duration_keys;")
    tables = "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') AND name LIKE 'dur%'"
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute(tables).fetchall() == []
    reopened = SQLiteLedger(path)
    try:
        assert await reopened.durations("k") == []
        await reopened.add_durations([at("k", 2.0)])
        assert await reopened.durations("k") == [2.0]
    finally:
        await reopened.aclose()
    with contextlib.closing(sqlite3.connect(path)) as db:
        names = {name for (name,) in db.execute(tables)}
    assert names == {"durations", "durations_key", "duration_keys", "duration_keys_seq"}


async def test_trimming_uses_the_key_index(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    try:
        await ledger.add_durations([at("k", 1.0)])
    finally:
        await ledger.aclose()
    with contextlib.closing(sqlite3.connect(tmp_path / "l.db")) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT created FROM durations WHERE key = ? "
            "ORDER BY created DESC LIMIT 1 OFFSET 63",
            ("k",),
        ).fetchall()
    assert "durations_key" in " ".join(str(step) for step in plan)


async def test_an_unreachable_redis_raises_ledger_unavailable() -> None:
    ledger = RedisLedger(f"redis://127.0.0.1:{free_port()}/0", retry_for=0.05)
    try:
        with pytest.raises(LedgerUnavailableError):
            await ledger.add_durations([at("k", 1.0)])
        with pytest.raises(LedgerUnavailableError):
            await ledger.durations("k")
    finally:
        await ledger.aclose()


async def test_a_backend_without_durations_says_so() -> None:
    class Bare(timings.Timings):
        pass

    with pytest.raises(NotImplementedError, match="Bare keeps no durations"):
        await Bare().add_durations([at("k", 1.0)])
    with pytest.raises(NotImplementedError, match="Bare keeps no durations"):
        await Bare().durations("k")


async def test_the_window_keeps_the_latest_created_not_the_latest_written(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a burst, the last to finish are its slowest: the window is by creation."""
    await ledger.add_durations([at("k", 1.0, created=100.0), at("k", 9.0, created=50.0)])
    await ledger.add_durations([at("k", 2.0, created=200.0)])
    assert await ledger.durations("k") == [2.0, 1.0, 9.0]
    monkeypatch.setattr(ledger, "DURATION_WINDOW", 2)
    await ledger.add_durations([at("k", 7.0, created=10.0)])  # older than the window
    assert await ledger.durations("k") == [2.0, 1.0]
