"""``resolve`` on every backend, and what every backend keeps exactly: values, lifecycle,
sharing one store between ledger objects."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from prism_async import InvalidRequestError
from prism_async.ledger import (
    GenerationRecord,
    Ledger,
    SubmissionState,
)
from prism_async.ledger._model import Owner
from tests.ledger.helpers import keys_of
from tests.ledger_helpers import (
    Store,
    bumped,
    dead_owner,
    make_submission,
)

S = SubmissionState


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
