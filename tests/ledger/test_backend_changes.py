"""The change feed (``Ledger.changes``) on every backend: what ``prism-async track`` follows.

Every write (insert or swap) gives its row a new change number, larger than any before; a read
returns each changed row once, newest content, oldest change first, and a cursor to go on from.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from prism_async.ledger import GenerationRecord, Ledger, SQLiteLedger, SubmissionState
from tests.ledger_helpers import Store, bumped, make_submission

S = SubmissionState


async def test_an_empty_ledger_has_no_changes(ledger: Ledger) -> None:
    """Nothing written: no rows, and the cursor stays where it was."""
    assert await ledger.changes() == ([], 0)
    assert await ledger.changes(41) == ([], 41)


async def test_inserts_come_in_order_then_nothing_more(ledger: Ledger) -> None:
    """Inserted rows come back whole, in the order they were written; from the returned
    cursor, nothing is new; a refused insert is no change."""
    for key in ("c", "a", "b"):
        assert await ledger.insert(make_submission(key, state=S.SENDING))
    rows, cursor = await ledger.changes()
    assert [row.key for row in rows] == ["c", "a", "b"]
    assert rows[1] == await ledger.get("a")
    assert cursor > 0
    assert await ledger.insert(make_submission("a", state=S.ACCEPTED)) is False
    assert await ledger.changes(cursor) == ([], cursor)


async def test_a_swap_moves_a_row_to_the_end_of_the_feed(ledger: Ledger) -> None:
    """A swapped row comes again (once, with its new content) after the cursor; a refused swap
    and a generation record are no change."""
    for key in ("a", "b", "c"):
        await ledger.insert(make_submission(key, state=S.SENDING))
    _, cursor = await ledger.changes()
    a = await ledger.get("a")
    assert a is not None
    accepted = bumped(a, state=S.ACCEPTED, generation_ids=("gen_a",))
    assert await ledger.swap(a, accepted)
    assert await ledger.swap(a, bumped(a, state=S.REJECTED)) is False  # stale: refused
    await ledger.record(GenerationRecord("gen_a", status="completed"))
    rows, after = await ledger.changes(cursor)
    assert rows == [accepted]
    assert after > cursor
    everything, _ = await ledger.changes()
    assert [row.key for row in everything] == ["b", "c", "a"]  # each once, latest change last


async def test_limit_pages_through_the_feed(ledger: Ledger) -> None:
    """``limit`` bounds a read; following the cursors reads every row exactly once."""
    keys = [f"k{i:02d}" for i in range(12)]
    for key in keys:
        await ledger.insert(make_submission(key))
    seen: list[str] = []
    cursor = 0
    while True:
        rows, cursor = await ledger.changes(cursor, limit=5)
        assert len(rows) <= 5
        if not rows:
            break
        seen += [row.key for row in rows]
    assert seen == keys


async def test_another_ledger_object_sees_the_changes(store: Store, ledger: Ledger) -> None:
    """Writes through one object appear in the feed read through another (another process)."""
    other = store.open()
    try:
        _, cursor = await other.changes()
        await ledger.insert(make_submission("x"))
        rows, _ = await other.changes(cursor)
        assert [row.key for row in rows] == ["x"]
    finally:
        await other.aclose()


async def test_sqlite_numbers_the_rows_of_a_ledger_made_before_the_feed(tmp_path: Path) -> None:
    """A ledger file without the ``changed`` column gets it on open: its rows come in the order
    they were first seen, and new writes come after them."""
    path = tmp_path / "old.db"
    async with SQLiteLedger(path) as ledger:
        for key in ("first", "second"):
            await ledger.insert(make_submission(key))
    with sqlite3.connect(path) as db:  # as an older version left it
        db.execute("DROP INDEX submissions_changed")
        db.execute("ALTER TABLE submissions DROP COLUMN changed")
    db.close()
    async with SQLiteLedger(path) as ledger:
        await ledger.insert(make_submission("third"))
        rows, _ = await ledger.changes()
    assert [row.key for row in rows] == ["first", "second", "third"]
