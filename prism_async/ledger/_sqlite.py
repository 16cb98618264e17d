"""SQLiteLedger: the embedded default, one file, safe for many processes on one machine.

Standard library ``sqlite3`` on a thread of its own (never on the event loop), WAL journal,
``synchronous=FULL`` (a commit is on disk before the call returns), every primitive a single
statement (so atomic), and the compare-and-set an ``UPDATE ... WHERE version = ?``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from ._base import Ledger
from ._model import GenerationRecord, Submission
from ._sqlite_money import MONEY_SCHEMA, SQLiteMoney
from ._sqlite_timings import TIMINGS_SCHEMA, SQLiteTimings

__all__ = ["SQLiteLedger"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    generation_ids TEXT NOT NULL,
    credits_charged REAL,
    sent_at REAL,
    error TEXT,
    request TEXT NOT NULL,
    lease_owner TEXT,
    lease_expires REAL,
    version INTEGER NOT NULL,
    changed INTEGER
);
CREATE INDEX IF NOT EXISTS submissions_state ON submissions (state);
CREATE TABLE IF NOT EXISTS generations (
    id TEXT PRIMARY KEY,
    key TEXT,
    status TEXT,
    error TEXT,
    completed_at REAL,
    path TEXT,
    size INTEGER
);
"""
_COLUMNS = (
    "key, kind, state, attempt, fingerprint, created_at, updated_at, generation_ids, "
    "credits_charged, sent_at, error, request, lease_owner, lease_expires, version"
)
_PAGE = 500
_NEXT_CHANGE = "(SELECT coalesce(max(changed), 0) + 1 FROM submissions)"
"""The change number of a write: one more than any before (writes are serialised)."""
_RECORD = (
    "INSERT INTO generations (id, key, status, error, completed_at, path, size) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "key = coalesce(excluded.key, key), status = coalesce(excluded.status, status), "
    "error = coalesce(excluded.error, error), "
    "completed_at = coalesce(excluded.completed_at, completed_at), "
    "path = coalesce(excluded.path, path), size = coalesce(excluded.size, size)"
)


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _moment(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def _row(submission: Submission) -> tuple[Any, ...]:
    s = submission
    return (
        s.key,
        s.kind,
        s.state,
        s.attempt,
        s.fingerprint,
        s.created_at.timestamp(),
        s.updated_at.timestamp(),
        json.dumps(list(s.generation_ids)),
        s.credits_charged,
        _seconds(s.sent_at),
        s.error,
        json.dumps(s.request, sort_keys=True),
        s.lease_owner,
        _seconds(s.lease_expires),
        s.version,
    )


def _submission(row: sqlite3.Row) -> Submission:
    return Submission(
        key=row["key"],
        kind=row["kind"],
        state=row["state"],
        attempt=row["attempt"],
        fingerprint=row["fingerprint"],
        created_at=datetime.fromtimestamp(row["created_at"], tz=UTC),
        updated_at=datetime.fromtimestamp(row["updated_at"], tz=UTC),
        generation_ids=tuple(json.loads(row["generation_ids"])),
        credits_charged=row["credits_charged"],
        sent_at=_moment(row["sent_at"]),
        error=row["error"],
        request=json.loads(row["request"]),
        lease_owner=row["lease_owner"],
        lease_expires=_moment(row["lease_expires"]),
        version=row["version"],
    )


def _add_change_numbers(db: sqlite3.Connection) -> None:
    """Give a ledger made before the change feed its ``changed`` column (rows numbered in
    the order they were first seen), once, whichever process gets there first."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(submissions)")}
    if "changed" not in columns:
        db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(submissions)")}
            if "changed" not in columns:
                db.execute("ALTER TABLE submissions ADD COLUMN changed INTEGER")
                db.execute("UPDATE submissions SET changed = rowid")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    db.execute("CREATE INDEX IF NOT EXISTS submissions_changed ON submissions (changed)")


def _transaction(
    db: sqlite3.Connection, works: list[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]]:
    """Run ``works`` in one transaction, each in a savepoint of its own: ``(True, result)`` or
    ``(False, error)`` (that one undone) for each. The commit is all or nothing."""
    outcomes: list[tuple[bool, Any]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for work in works:
            db.execute("SAVEPOINT one")
            try:
                outcomes.append((True, work(db)))
            except Exception as exc:
                db.execute("ROLLBACK TO one")
                outcomes.append((False, exc))
            db.execute("RELEASE one")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


class SQLiteLedger(SQLiteMoney, SQLiteTimings, Ledger):
    """A ledger in one SQLite file (made when missing); share the file, not the object, between
    processes. A client given it closes it when the client closes; a closed ledger opens
    again on its next use.

    Args:
        path: the database file, e.g. ``"prism-ledger.db"``.
        busy_timeout: seconds a write waits for another process's write to finish.
        reconcile_window: seconds an ambiguous key waits for its generations to show up in
            the history before it counts as never queued (default 30 minutes).
        reconcile_interval: seconds between reconciliations of a waiting key (at most 60).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        reconcile_window: float = 1800.0,
        reconcile_interval: float = 30.0,
    ) -> None:
        self.configure_reconciliation(window=reconcile_window, interval=reconcile_interval)
        self.path = os.fspath(path)
        self._busy_ms = int(busy_timeout * 1000)
        # A thread of its own and the connection only that thread uses (made on first use).
        self._worker: tuple[ThreadPoolExecutor, list[sqlite3.Connection]] | None = None
        # Group commit: writes queued while a transaction is being written share the next one.
        self._writes: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.path!r})"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(_SCHEMA + MONEY_SCHEMA + TIMINGS_SCHEMA)
            _add_change_numbers(db)
        except BaseException:
            db.close()  # e.g. not a database: never leave the connection open
            raise
        return db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._worker is None:
            thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prism-ledger")
            self._worker = (thread, [])
        thread, held = self._worker

        def call() -> T:
            if not held:
                held.append(self._connect())
            return work(held[0])

        return await asyncio.get_running_loop().run_in_executor(thread, call)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in a transaction; writes that queue up meanwhile share one commit (and
        one flush to disk). Each gets its own result or error; a failed commit fails them all,
        and none of them then happened."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda f: f.cancelled() or f.exception())  # no unread warning
        self._writes.append((work, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await done

    async def _drain(self) -> None:
        while self._writes:
            batch, self._writes = self._writes, []
            try:
                works = [work for work, _ in batch]
                outcomes = await self._run(functools.partial(_transaction, works=works))
            except BaseException as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, done), (ok, value) in zip(batch, outcomes, strict=True):
                if not done.done():
                    done.set_result(value) if ok else done.set_exception(value)

    async def get(self, key: str) -> Submission | None:
        def read(db: sqlite3.Connection) -> Submission | None:
            row = db.execute(f"SELECT {_COLUMNS} FROM submissions WHERE key = ?", (key,))
            found = row.fetchone()
            return None if found is None else _submission(found)

        return await self._run(read)

    async def list(self, state: str | None = None) -> AsyncIterator[Submission]:
        after = 0
        while True:

            def page(db: sqlite3.Connection, after: int = after) -> list[sqlite3.Row]:
                where = "rowid > ?" + ("" if state is None else " AND state = ?")
                args = (after,) if state is None else (after, state)
                query = f"SELECT rowid, {_COLUMNS} FROM submissions WHERE {where} ORDER BY rowid"
                return db.execute(f"{query} LIMIT {_PAGE}", args).fetchall()

            rows = await self._run(page)
            for row in rows:
                yield _submission(row)
            if len(rows) < _PAGE:
                return
            after = rows[-1]["rowid"]

    async def insert(self, submission: Submission) -> bool:
        marks = ", ".join("?" * 15)
        sql = (
            f"INSERT OR IGNORE INTO submissions ({_COLUMNS}, changed) "
            f"VALUES ({marks}, {_NEXT_CHANGE})"
        )
        return await self._write(lambda db: db.execute(sql, _row(submission)).rowcount == 1)

    async def swap(self, expected: Submission, new: Submission) -> bool:
        if new.key != expected.key:
            raise ValueError("swap keeps the key")
        names = _COLUMNS.split(", ")
        sets = ", ".join(f"{name} = ?" for name in names[1:])
        sql = (
            f"UPDATE submissions SET {sets}, changed = {_NEXT_CHANGE} WHERE key = ? AND version = ?"
        )
        args = (*_row(new)[1:], expected.key, expected.version)
        return await self._write(lambda db: db.execute(sql, args).rowcount == 1)

    async def record(self, record: GenerationRecord) -> None:
        await self.record_many([record])

    async def record_many(self, records: Sequence[GenerationRecord]) -> None:
        """Every record in one transaction (one commit, one flush)."""
        rows = [
            (r.id, r.key, r.status, r.error, _seconds(r.completed_at), r.path, r.size)
            for r in records
        ]
        if rows:
            await self._write(lambda db: db.executemany(_RECORD, rows))

    async def get_many(self, keys: Sequence[str]) -> dict[str, Submission]:
        wanted = list(dict.fromkeys(keys))

        def read(db: sqlite3.Connection) -> dict[str, Submission]:
            found: dict[str, Submission] = {}
            for start in range(0, len(wanted), _PAGE):
                chunk = wanted[start : start + _PAGE]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT {_COLUMNS} FROM submissions WHERE key IN ({marks})"
                found.update((r["key"], _submission(r)) for r in db.execute(sql, chunk))
            return found

        return await self._run(read)

    async def generation(self, generation_id: str) -> GenerationRecord | None:
        def read(db: sqlite3.Connection) -> GenerationRecord | None:
            sql = "SELECT * FROM generations WHERE id = ?"
            row = db.execute(sql, (generation_id,)).fetchone()
            if row is None:
                return None
            fields = {k: row[k] for k in row.keys()}  # noqa: SIM118  (sqlite3.Row)
            fields["completed_at"] = _moment(fields["completed_at"])
            return GenerationRecord(**fields)

        return await self._run(read)

    async def changes(
        self, after: int = 0, *, limit: int = 500
    ) -> tuple[Sequence[Submission], int]:
        def read(db: sqlite3.Connection) -> tuple[Sequence[Submission], int]:
            sql = (
                f"SELECT changed, {_COLUMNS} FROM submissions WHERE changed > ? "
                "ORDER BY changed LIMIT ?"
            )
            rows = db.execute(sql, (after, max(1, limit))).fetchall()
            return [_submission(row) for row in rows], rows[-1]["changed"] if rows else after

        return await self._run(read)

    async def claimed_ids(self) -> set[str]:
        def read(db: sqlite3.Connection) -> set[str]:
            rows = db.execute("SELECT generation_ids FROM submissions WHERE generation_ids != '[]'")
            return {i for (ids,) in rows for i in json.loads(ids)}

        return await self._run(read)

    async def aclose(self) -> None:
        """Close the database and its thread (idempotent; a later call opens them again)."""
        # Detached at once: a call made meanwhile gets a new thread and connection, while
        # calls already queued on the old thread run (on the old connection) before it closes.
        if self._writer is not None:
            await asyncio.shield(self._writer)  # queued writes are written first
        worker, self._worker = self._worker, None
        if worker is None:
            return
        thread, held = worker

        def close() -> None:
            while held:
                held.pop().close()

        await asyncio.get_running_loop().run_in_executor(thread, close)
        thread.shutdown(wait=False)
