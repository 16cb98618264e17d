"""The Ledger primitives, the same for every backend (design.md, "Durable submissions").

Every test runs on each backend of ``tests.ledger_helpers.STORES`` (SQLite in a temporary
file, and a key prefix of its own on a real redis-server): ``get``, ``list``, ``insert``,
``swap`` (the compare-and-set), ``record``, ``generation``, ``claimed_ids``, ``aclose``, and
``resolve`` built on them. The race tests
check that exactly one of many contenders wins a swap: tasks on one object, tasks on objects
of their own, and OS processes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

from prism_async import InvalidRequestError
from prism_async.ledger import (
    GenerationRecord,
    Ledger,
    RedisLedger,
    SQLiteLedger,
    SubmissionState,
)
from prism_async.ledger._model import Owner
from tests.ledger_helpers import (
    ROOT,
    STORES,
    Store,
    bumped,
    dead_owner,
    make_submission,
    race_command,
)
from tests.redis_server import RedisServer

S = SubmissionState


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each backend."""
    return STORES[request.param](tmp_path, lambda: str(request.getfixturevalue("redis_url")))


@pytest.fixture
async def ledger(store: Store) -> AsyncIterator[Ledger]:
    """A ledger object on the store, closed after the test."""
    opened = store.open()
    try:
        yield opened
    finally:
        await opened.aclose()


async def keys_of(ledger: Ledger, state: str | None = None) -> list[str]:
    return [s.key async for s in ledger.list(state)]


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


# -- resolve ---------------------------------------------------------------------------------


async def test_resolve_with_generation_ids_reconciles(ledger: Ledger) -> None:
    """``generation_ids=[...]`` makes an ambiguous row ``reconciled`` with those ids (one new
    version) and records each generation under the key."""
    row = make_submission("k", state=S.AMBIGUOUS, error="maybe queued", version=3)
    await ledger.insert(row)
    resolved = await ledger.resolve("k", generation_ids=["gen_a", "gen_b"])
    assert resolved.state == S.RECONCILED
    assert resolved.generation_ids == ("gen_a", "gen_b")
    assert resolved.version == 4
    assert resolved.done
    assert resolved.error == "resolved by hand"
    assert await ledger.get("k") == resolved
    assert await ledger.claimed_ids() == {"gen_a", "gen_b"}
    for gid in ("gen_a", "gen_b"):
        assert await ledger.generation(gid) == GenerationRecord(gid, key="k")


async def test_resolve_not_sent_rejects(ledger: Ledger) -> None:
    """``not_sent=True`` makes an ambiguous row ``rejected`` (it may be sent again), with no
    generation recorded."""
    await ledger.insert(make_submission("k", state=S.AMBIGUOUS))
    resolved = await ledger.resolve("k", not_sent=True)
    assert resolved.state == S.REJECTED
    assert not resolved.done
    assert resolved.error is not None
    assert "not sent" in resolved.error
    assert await ledger.get("k") == resolved


async def test_resolve_not_sent_is_refused_when_ids_are_known(ledger: Ledger) -> None:
    """A row whose answer showed ids did queue them: "not sent" would pay for them twice."""
    row = make_submission("k", state=S.AMBIGUOUS, generation_ids=("gen_a",))
    await ledger.insert(row)
    with pytest.raises(InvalidRequestError) as info:
        await ledger.resolve("k", not_sent=True)
    assert info.value.field == "not_sent"
    assert "gen_a" in str(info.value)
    assert await ledger.get("k") == row


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({}, "generation_ids"),
        ({"generation_ids": ["gen_a"], "not_sent": True}, "generation_ids"),
        ({"generation_ids": []}, "generation_ids"),
        ({"generation_ids": ["gen_a", ""]}, "generation_ids"),
        ({"generation_ids": ["  "]}, "generation_ids"),
        ({"generation_ids": [], "not_sent": True}, "generation_ids"),
    ],
)
async def test_resolve_refuses_bad_arguments(
    ledger: Ledger, arguments: dict[str, Any], field: str
) -> None:
    """Exactly one of ``generation_ids`` (non-empty ids) and ``not_sent=True``; the row is
    left alone."""
    row = make_submission("k", state=S.AMBIGUOUS)
    await ledger.insert(row)
    with pytest.raises(InvalidRequestError) as info:
        await ledger.resolve("k", **arguments)
    assert info.value.field == field
    assert await ledger.get("k") == row


async def test_resolve_refuses_an_unknown_key(ledger: Ledger) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await ledger.resolve("nope", not_sent=True)
    assert info.value.field == "key"
    assert await ledger.get("nope") is None


@pytest.mark.parametrize("state", [S.ACCEPTED, S.REJECTED, S.RECONCILED])
async def test_resolve_refuses_a_row_that_is_not_ambiguous(ledger: Ledger, state: str) -> None:
    """Only an ambiguous (or dead ``sending``) row can be resolved; the others are unchanged."""
    row = make_submission("k", state=state, generation_ids=("gen_a",))
    await ledger.insert(row)
    for arguments in ({"generation_ids": ["gen_z"]}, {"not_sent": True}):
        with pytest.raises(InvalidRequestError, match="not ambiguous") as info:
            await ledger.resolve("k", **arguments)
        assert info.value.field == "key"
    assert await ledger.get("k") == row


async def test_resolve_refuses_a_sending_row_with_a_live_lease(ledger: Ledger) -> None:
    """This process holds the lease, unexpired: someone is sending it right now."""
    row = make_submission(
        "k",
        state=S.SENDING,
        lease_owner=str(Owner.me()),
        lease_expires=datetime.now(UTC) + timedelta(minutes=1),
    )
    await ledger.insert(row)
    with pytest.raises(InvalidRequestError, match="live process") as info:
        await ledger.resolve("k", not_sent=True)
    assert info.value.field == "key"
    assert await ledger.get("k") == row


@pytest.mark.parametrize("lease", ["dead process", "expired", "no owner"])
async def test_resolve_settles_a_sending_row_with_a_dead_lease(ledger: Ledger, lease: str) -> None:
    """A sending row whose owner died (or whose lease expired) can be resolved; the lease is
    cleared."""
    now = datetime.now(UTC)
    owner, expires = {
        "dead process": (str(dead_owner()), now + timedelta(minutes=1)),
        "expired": (str(Owner.me()), now - timedelta(seconds=1)),
        "no owner": (None, None),
    }[lease]
    await ledger.insert(
        make_submission("k", state=S.SENDING, lease_owner=owner, lease_expires=expires)
    )
    resolved = await ledger.resolve("k", generation_ids=["gen_a"])
    assert resolved.state == S.RECONCILED
    assert (resolved.lease_owner, resolved.lease_expires) == (None, None)
    assert await ledger.get("k") == resolved


# -- values, lifecycle, sharing ----------------------------------------------------------------


async def test_datetimes_round_trip_timezone_aware(ledger: Ledger) -> None:
    """Every datetime comes back aware and equal to the instant given, microseconds included,
    whatever the zone it was given in."""
    india = timezone(timedelta(hours=5, minutes=30))
    created = datetime(2025, 3, 1, 17, 45, 1, 999999, tzinfo=india)
    moments: dict[str, Any] = {
        "created_at": created,
        "updated_at": created + timedelta(microseconds=1),
        "sent_at": datetime(2030, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        "lease_expires": datetime(
            1999, 1, 1, 0, 0, 0, 500000, tzinfo=timezone(-timedelta(hours=8))
        ),
    }
    await ledger.insert(make_submission("k", **moments))
    back = await ledger.get("k")
    assert back is not None
    for name, moment in moments.items():
        value = getattr(back, name)
        assert value.tzinfo is not None, name
        assert value.utcoffset() is not None, name
        assert value == moment, name
        assert value - moment == timedelta(0), name

    done = datetime(2025, 3, 1, 12, 0, 0, 654321, tzinfo=india)
    await ledger.record(GenerationRecord("gen_1", completed_at=done))
    record = await ledger.generation("gen_1")
    assert record is not None
    assert record.completed_at is not None
    assert record.completed_at.tzinfo is not None
    assert record.completed_at == done


async def test_aclose_then_reuse_opens_again(ledger: Ledger) -> None:
    """A closed ledger opens again on its next use and keeps what was written; closing twice
    is harmless; ``async with`` closes it."""
    await ledger.insert(make_submission("before"))
    await ledger.aclose()
    await ledger.aclose()
    assert await ledger.get("before") is not None
    assert await ledger.insert(make_submission("after"))
    await ledger.aclose()
    async with ledger as same:
        assert same is ledger
        assert await keys_of(same) == ["before", "after"]
    assert await ledger.get("after") is not None  # reopened after the ``async with`` closed it


async def test_aclose_while_calls_are_in_flight(ledger: Ledger) -> None:
    """Closing while other calls are under way (a client closing a ledger another client
    shares): each call still completes, on the old connection or a new one."""
    await ledger.insert(make_submission("k"))
    for round_ in range(30):
        results = await asyncio.gather(
            ledger.get("k"),
            ledger.aclose(),
            ledger.get("k"),
            ledger.record(GenerationRecord(f"gen_{round_}", status="queued")),
            ledger.claimed_ids(),
            ledger.aclose(),
            ledger.get("k"),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == [], round_
        assert [getattr(results[i], "key", None) for i in (0, 2, 6)] == ["k", "k", "k"]
    assert await ledger.generation("gen_29") == GenerationRecord("gen_29", status="queued")


async def test_two_ledger_objects_on_one_store_see_each_others_writes(
    store: Store, ledger: Ledger
) -> None:
    """Two objects (two connections) on one store: each sees the other's inserts, swaps and
    records at once, and a swap from a version the other replaced is refused."""
    other = store.open()
    try:
        row = make_submission("k", state=S.SENDING)
        assert await ledger.insert(row)
        assert await other.get("k") == row
        assert await other.insert(make_submission("k")) is False

        accepted = bumped(row, state=S.ACCEPTED, generation_ids=("gen_1",))
        assert await other.swap(row, accepted)
        assert await ledger.get("k") == accepted
        assert await ledger.swap(row, bumped(row, state=S.AMBIGUOUS)) is False
        assert await ledger.claimed_ids() == {"gen_1"}

        await other.record(GenerationRecord("gen_1", status="completed"))
        assert await ledger.generation("gen_1") == GenerationRecord("gen_1", status="completed")
        assert await keys_of(other) == ["k"]
    finally:
        await other.aclose()


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

    from prism_async.ledger import SQLiteLedger

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
