"""The learnt durations of :class:`~prism_async.ledger.SQLiteLedger`: one transaction per
``add_durations`` (the samples, and the trimming to the window and the key cap), so atomic
across every process sharing the file.

``durations`` holds the samples (``created`` orders them: the window keeps the latest created);
``duration_keys`` each key with the ``seq`` of its latest sample, so the least recently written
keys are found by an index, not by scanning the samples. A ledger file made before them gains
both tables when it is opened (``CREATE TABLE IF NOT EXISTS``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from ._timings import Sample, check_samples

__all__ = ["TIMINGS_SCHEMA", "SQLiteTimings"]

T = TypeVar("T")

TIMINGS_SCHEMA = """
CREATE TABLE IF NOT EXISTS durations (
    seq INTEGER PRIMARY KEY, key TEXT NOT NULL, seconds REAL NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS durations_key ON durations (key, created);
CREATE TABLE IF NOT EXISTS duration_keys (key TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS duration_keys_seq ON duration_keys (seq);
"""
_NOTE_KEY = (
    "INSERT INTO duration_keys (key, seq) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET seq = excluded.seq"
)
_TRIM_KEY = (  # all but the key's `window` latest created (the index finds the cut)
    "DELETE FROM durations WHERE key = ? AND created < "
    "(SELECT created FROM durations WHERE key = ? ORDER BY created DESC LIMIT 1 OFFSET ?)"
)


def _add(db: sqlite3.Connection, samples: list[Sample], window: int, cap: int) -> None:
    latest: dict[str, int] = {}
    for key, seconds, created in samples:
        cursor = db.execute(
            "INSERT INTO durations (key, seconds, created) VALUES (?, ?, ?)",
            (key, seconds, created),
        )
        assert cursor.lastrowid is not None
        latest[key] = cursor.lastrowid
    db.executemany(_NOTE_KEY, latest.items())
    db.executemany(_TRIM_KEY, [(key, key, max(1, window) - 1) for key in latest])
    over = db.execute("SELECT count(*) FROM duration_keys").fetchone()[0] - max(1, cap)
    if over > 0:
        sql = "SELECT key FROM duration_keys ORDER BY seq LIMIT ?"
        dropped = [(key,) for (key,) in db.execute(sql, (over,)).fetchall()]
        db.executemany("DELETE FROM durations WHERE key = ?", dropped)
        db.executemany("DELETE FROM duration_keys WHERE key = ?", dropped)


class SQLiteTimings:
    """Mixed into :class:`~prism_async.ledger.SQLiteLedger` (which provides ``_run``/``_write``
    and the :class:`~prism_async.ledger._timings.Timings` limits)."""

    DURATION_WINDOW: int
    DURATION_KEYS: int

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # pragma: no cover - SQLiteLedger's

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # pragma: no cover - SQLiteLedger's

    async def add_durations(self, samples: Sequence[Sample]) -> None:
        """Add the samples and trim to the window and the key cap (one transaction)."""
        checked = check_samples(samples)
        if checked:
            window, cap = self.DURATION_WINDOW, self.DURATION_KEYS
            await self._write(lambda db: _add(db, checked, window, cap))

    async def durations(self, key: str) -> list[float]:
        """The seconds kept for ``key``, the latest created first."""

        def read(db: sqlite3.Connection) -> list[float]:
            sql = "SELECT seconds FROM durations WHERE key = ? ORDER BY created DESC, seq DESC"
            return [float(seconds) for (seconds,) in db.execute(sql, (key,))]

        return await self._run(read)
