"""The Ledger primitives on every backend (SQLite in a temporary file, and a key prefix of its
own on a real redis-server): ``insert``, ``get``, ``swap`` (the compare-and-set), ``list``,
``record``, ``generation``, ``claimed_ids`` and the batch forms."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from prism_async.ledger import (
    GenerationRecord,
    Ledger,
    RedisLedger,
    SQLiteLedger,
    SubmissionState,
)
from tests.ledger.helpers import keys_of
from tests.ledger_helpers import (
    bumped,
    make_submission,
)

S = SubmissionState


# -- insert, get, swap -------------------------------------------------------------------------


async def test_insert_a_new_key_then_get_it_back(ledger: Ledger) -> None:
    """A new key is inserted (True) and every field comes back as it was given."""
    row = make_submission(
        "campaign-42/clip-7",
        generation_ids=("gen_a", "gen_b"),
        credits_charged=240.0,
        sent_at=datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        error="a note, with ünïcode",
        request={"prompt": "Un chat « roux »", "model_name": "veo-3.1", "count": 2},
        lease_owner="host:1:2",
        lease_expires=datetime(2025, 3, 1, 12, 1, tzinfo=UTC),
    )
    assert await ledger.insert(row) is True
    assert await ledger.get("campaign-42/clip-7") == row


async def test_insert_an_existing_key_changes_nothing(ledger: Ledger) -> None:
    """A second insert of the key is refused (False) and the first row stays as it was."""
    first = make_submission("k", state=S.SENDING, request={"prompt": "first"})
    assert await ledger.insert(first)
    other = make_submission("k", state=S.ACCEPTED, attempt=9, generation_ids=("gen_x",))
    assert await ledger.insert(other) is False
    assert await ledger.get("k") == first
    assert await keys_of(ledger) == ["k"]


async def test_get_an_unknown_key_is_none(ledger: Ledger) -> None:
    """An unknown key is None, also next to other keys (and keys are exact, not prefixes)."""
    assert await ledger.get("nope") is None
    await ledger.insert(make_submission("clip-1"))
    assert await ledger.get("clip-") is None
    assert await ledger.get("CLIP-1") is None
    assert await ledger.get("clip-1") is not None


async def test_swap_succeeds_only_with_the_current_version(ledger: Ledger) -> None:
    """A swap from the stored version replaces the row; from any other version it changes
    nothing; a swap of an unknown key is refused."""
    original = make_submission("k", state=S.SENDING)
    await ledger.insert(original)

    stale = attrs.evolve(original, version=original.version + 5)
    assert await ledger.swap(stale, bumped(stale, state=S.REJECTED)) is False
    assert await ledger.get("k") == original

    accepted = bumped(original, state=S.ACCEPTED, generation_ids=("gen_1",), error=None)
    assert await ledger.swap(original, accepted) is True
    assert await ledger.get("k") == accepted

    # the first version is now stale: swapping from it again is refused
    assert await ledger.swap(original, bumped(original, state=S.AMBIGUOUS)) is False
    assert await ledger.get("k") == accepted

    ghost = make_submission("ghost")
    assert await ledger.swap(ghost, bumped(ghost)) is False
    assert await ledger.get("ghost") is None


async def test_swap_only_compares_the_version(ledger: Ledger) -> None:
    """The compare-and-set token is the version: an ``expected`` copy whose other fields are
    out of date still wins if its version is the stored one."""
    original = make_submission("k", state=S.SENDING)
    await ledger.insert(original)
    outdated_copy = attrs.evolve(original, error="some other text", attempt=3)
    new = bumped(original, state=S.ACCEPTED)
    assert await ledger.swap(outdated_copy, new)
    assert await ledger.get("k") == new


# -- list ----------------------------------------------------------------------------------------


async def test_list_in_first_seen_order_all_and_by_state(ledger: Ledger) -> None:
    """Keys come back in the order they were first inserted (not sorted, not by last change);
    a state filters; an unknown state lists nothing."""
    for key, state in [("c", S.ACCEPTED), ("a", S.REJECTED), ("b", S.ACCEPTED), ("d", S.SENDING)]:
        await ledger.insert(make_submission(key, state=state))
    assert await keys_of(ledger) == ["c", "a", "b", "d"]

    # changing a row (the last-but-one) does not move it
    a = await ledger.get("a")
    assert a is not None
    assert await ledger.swap(a, bumped(a, state=S.ACCEPTED))
    assert await keys_of(ledger) == ["c", "a", "b", "d"]
    assert await keys_of(ledger, S.ACCEPTED) == ["c", "a", "b"]
    assert await keys_of(ledger, S.SENDING) == ["d"]
    assert await keys_of(ledger, S.REJECTED) == []
    assert await keys_of(ledger, "no-such-state") == []
    listed = [s async for s in ledger.list()]
    assert listed[1] == await ledger.get("a")  # whole rows, not just keys


async def test_unsettled_rows_are_listed_in_first_seen_order_as_they_move(ledger: Ledger) -> None:
    """``sending`` and ``ambiguous`` (what reconciliation reads, indexed on Redis) follow every
    swap: a row leaves them when it settles and comes back when it is sent again."""
    for key, state in [("x", S.AMBIGUOUS), ("y", S.SENDING), ("z", S.AMBIGUOUS), ("w", S.ACCEPTED)]:
        await ledger.insert(make_submission(key, state=state))
    assert await keys_of(ledger, S.AMBIGUOUS) == ["x", "z"]
    x = await ledger.get("x")
    assert x is not None
    assert await ledger.swap(x, rejected := bumped(x, state=S.REJECTED))
    assert await keys_of(ledger, S.AMBIGUOUS) == ["z"]
    assert await ledger.swap(rejected, bumped(rejected, state=S.SENDING))
    assert await keys_of(ledger, S.SENDING) == ["x", "y"]
    assert await keys_of(ledger, S.REJECTED) == []


async def test_a_redis_ledger_written_before_the_index_lists_its_unsettled_rows(
    redis_url: str,
) -> None:
    """A ledger an earlier version wrote (no index of unsettled keys) lists its ambiguous rows
    all the same: the index is built at the first such read."""
    import redis.asyncio as redis

    ledger = RedisLedger(redis_url, prefix="prism:test:old-index:")
    try:
        await ledger.insert(make_submission("old-1", state=S.AMBIGUOUS))
        await ledger.insert(make_submission("old-2", state=S.ACCEPTED))
        await ledger.insert(make_submission("old-3", state=S.AMBIGUOUS))
        client = redis.Redis.from_url(redis_url)
        await client.delete("prism:test:old-index:unsettled")  # as an earlier version left it
        await client.aclose()
        assert await keys_of(ledger, S.AMBIGUOUS) == ["old-1", "old-3"]
        assert await keys_of(ledger, S.AMBIGUOUS) == ["old-1", "old-3"]
    finally:
        await ledger.aclose()


async def test_list_pages_past_500_rows(ledger: Ledger) -> None:
    """1,100 rows (more than two pages of 500) are all listed once, in order, and so are the
    550 of one state (which are spread over every page)."""
    keys = [f"key-{i:05d}-{(i * 7919) % 1100}" for i in range(1100)]  # not in sorted order
    for i, key in enumerate(keys):
        state = S.ACCEPTED if i % 2 else S.REJECTED
        assert await ledger.insert(make_submission(key, state=state))
    assert await keys_of(ledger) == keys
    assert await keys_of(ledger, S.ACCEPTED) == keys[1::2]
    assert await keys_of(ledger, S.REJECTED) == keys[0::2]


async def test_list_can_be_left_early_and_run_again(ledger: Ledger) -> None:
    """Breaking out of the iterator is fine; a new iteration starts from the first key."""
    for key in ("x", "y", "z"):
        await ledger.insert(make_submission(key))
    async for first in ledger.list():
        assert first.key == "x"
        break
    assert await keys_of(ledger) == ["x", "y", "z"]


# -- generations ---------------------------------------------------------------------------------


async def test_record_upserts_and_none_keeps_the_value(ledger: Ledger) -> None:
    """``record`` adds a generation, then updates only the fields it gives."""
    assert await ledger.generation("gen_1") is None
    await ledger.record(GenerationRecord("gen_1", key="k", status="queued"))
    assert await ledger.generation("gen_1") == GenerationRecord("gen_1", key="k", status="queued")

    done = datetime(2025, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)
    await ledger.record(GenerationRecord("gen_1", status="completed", completed_at=done))
    assert await ledger.generation("gen_1") == GenerationRecord(
        "gen_1", key="k", status="completed", completed_at=done
    )

    await ledger.record(GenerationRecord("gen_1", path="/videos/gen_1.mp4", size=262144))
    assert await ledger.generation("gen_1") == GenerationRecord(
        "gen_1",
        key="k",
        status="completed",
        completed_at=done,
        path="/videos/gen_1.mp4",
        size=262144,
    )

    await ledger.record(GenerationRecord("gen_1", status="failed", error="NSFW", size=0))
    final = await ledger.generation("gen_1")
    assert final is not None
    assert (final.status, final.error, final.size, final.path) == (
        "failed",
        "NSFW",
        0,  # 0 is a value, not "unknown"
        "/videos/gen_1.mp4",
    )
    assert final.key == "k"

    await ledger.record(GenerationRecord("gen_2"))  # an id alone is a row too
    assert await ledger.generation("gen_2") == GenerationRecord("gen_2")
    assert await ledger.generation("gen_3") is None


async def test_claimed_ids_are_every_id_any_row_holds(ledger: Ledger) -> None:
    """``claimed_ids`` unions the ids of every row, whatever its state; rows without ids and
    generation records add nothing."""
    assert await ledger.claimed_ids() == set()
    await ledger.insert(make_submission("a", state=S.ACCEPTED, generation_ids=("g1", "g2")))
    await ledger.insert(make_submission("b", state=S.AMBIGUOUS, generation_ids=("g3",)))
    await ledger.insert(make_submission("c", state=S.RECONCILED, generation_ids=("g4",)))
    await ledger.insert(make_submission("d", state=S.REJECTED))
    await ledger.record(GenerationRecord("g9", key="d"))
    assert await ledger.claimed_ids() == {"g1", "g2", "g3", "g4"}

    b = await ledger.get("b")
    assert b is not None
    await ledger.swap(b, bumped(b, state=S.REJECTED, generation_ids=()))
    assert await ledger.claimed_ids() == {"g1", "g2", "g4"}


# -- the batch forms ----------------------------------------------------------------------------


async def test_get_many_returns_the_known_keys(ledger: Ledger) -> None:
    rows = [make_submission(f"k{i}", state=S.ACCEPTED, generation_ids=(f"g{i}",)) for i in range(3)]
    for row in rows:
        await ledger.insert(row)
    found = await ledger.get_many(["k2", "nope", "k0", "k2"])
    assert found == {"k2": rows[2], "k0": rows[0]}
    assert await ledger.get_many([]) == {}
    many = [f"k{i}" for i in range(3)] + [f"missing{i}" for i in range(700)]  # past one page
    assert set(await ledger.get_many(many)) == {"k0", "k1", "k2"}


async def test_record_many_writes_every_record_with_upsert_rules(ledger: Ledger) -> None:
    await ledger.record(GenerationRecord("g1", status="completed", path="/a.mp4", size=3))
    await ledger.record_many(
        [
            GenerationRecord("g1", status="failed"),  # path and size kept
            GenerationRecord("g2", key="k"),
            GenerationRecord("g2", status="completed"),  # later in the batch wins
        ]
    )
    assert await ledger.generation("g1") == GenerationRecord(
        "g1", status="failed", path="/a.mp4", size=3
    )
    assert await ledger.generation("g2") == GenerationRecord("g2", key="k", status="completed")
    await ledger.record_many([])


async def test_sqlite_writes_that_queue_up_share_a_commit(tmp_path: Path) -> None:
    """Group commit: 40 concurrent inserts take fewer transactions than writes, each gets its
    own answer, and one write that fails is undone alone."""
    ledger = SQLiteLedger(tmp_path / "group.db")
    transactions = 0
    run = ledger._run

    async def counting(work: Any) -> Any:
        nonlocal transactions
        transactions += isinstance(work, functools.partial)
        return await run(work)

    ledger._run = counting  # type: ignore[method-assign]
    try:
        rows = [make_submission(f"k{i}") for i in range(40)]
        results = await asyncio.gather(*(ledger.insert(row) for row in [*rows, rows[0]]))
        assert results == [True] * 40 + [False]
        assert 1 <= transactions < 41

        def broken(db: Any) -> None:
            db.execute("INSERT INTO submissions (key) VALUES ('half a row')")  # NOT NULL fails

        good = make_submission("after")
        outcomes = await asyncio.gather(
            ledger._write(broken), ledger.insert(good), return_exceptions=True
        )
        assert isinstance(outcomes[0], sqlite3.IntegrityError)
        assert outcomes[1] is True
        assert await ledger.get("after") == good
        assert len([s async for s in ledger.list()]) == 41
    finally:
        await ledger.aclose()
