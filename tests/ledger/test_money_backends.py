"""The money primitives on every backend (SQLite in a temporary file, and a key prefix of its
own on a real redis-server): charges and the prices they teach, budgets, reservations (the cap,
the probe rule, lapsing, the race of many reservers), the rolling windows, the charges report
and ``spend``, and the fleet-wide 402 pause."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from prism_async import LedgerUnavailableError
from prism_async.ledger import Budget, Charge, Ledger, RedisLedger, Reservation, SpendRow
from prism_async.ledger._prices import base_of
from tests.conftest import free_port
from tests.ledger_helpers import Store

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
"""A fixed clock for the calls that take ``now`` (whole seconds: timestamps round-trip)."""


def shape(count: int = 1, model: str = "veo-3.1") -> str:
    """A generation shape as ``shape_of`` makes it."""
    fields = {"model": model, "duration": 8, "resolution": "720p", "has_audio": False}
    return json.dumps(
        ["generation", {**fields, "template_id": None, "count": count}], sort_keys=True
    )


def charge(
    id: str, credits: float, *, at: datetime | None = None, budget: str | None = "b",
    kind: str = "generation", model: str = "veo-3.1", shape: str = shape(), count: int = 1,
    labels: dict[str, str] | None = None,
) -> Charge:  # fmt: skip
    at = at or datetime.now(UTC)
    return Charge(id, at, credits, kind, model, shape, count, labels or {}, budget)


def hold(
    id: str, credits: float, *, budget: str = "b", probe: bool = False,
    expires: datetime | None = None, of: str | None = None,
    probe_until: datetime | None = T0 + timedelta(minutes=1),
) -> Reservation:  # fmt: skip
    """A reservation of ``credits`` (a probe of shape ``of``, or ``shape()``; a probe holds its
    shape until ``probe_until``)."""
    what = charge(id, credits, budget=budget, shape=of or shape())
    return Reservation(
        id, budget, credits, T0, what, probe=probe, expires=expires,
        probe_until=probe_until if probe else None,
    )  # fmt: skip


async def reserve(ledger: Ledger, reservation: Reservation, now: datetime = T0) -> str:
    verdict, _ = await ledger.reserve(reservation, now)
    return verdict


async def ids_held(ledger: Ledger) -> list[str]:
    return sorted([r.id async for r in ledger.reservations()])


# -- charges and prices -------------------------------------------------------------------------


async def test_a_charge_is_recorded_once_learns_its_prices_and_drops_its_reservation(
    ledger: Ledger,
) -> None:
    await ledger.set_budget("b", 1000)
    two = shape(count=2)
    base = base_of(two)
    assert base is not None
    assert await ledger.price(two) is None
    assert await reserve(ledger, hold("k1", 50)) == "reserved"

    assert await ledger.add_charge(charge("k1", 48, shape=two, count=2)) is True
    assert await ids_held(ledger) == []
    assert await ledger.price(two) == (48.0, 1)
    assert await ledger.price(base) == (24.0, 1)  # per video
    budget = await ledger.budget("b")
    assert budget is not None
    assert (budget.spent, budget.reserved) == (48.0, 0.0)

    # Once per id: a second add changes nothing (but still drops a reservation of that id).
    assert await reserve(ledger, hold("k1", 50)) == "reserved"
    assert await ledger.add_charge(charge("k1", 999, shape=two, count=2)) is False
    assert await ids_held(ledger) == []
    assert await ledger.price(two) == (48.0, 1)
    assert [c.credits async for c in ledger.charges()] == [48.0]

    # The latest price wins; samples count the charges seen.
    assert await ledger.add_charge(charge("k2", 50, shape=two, count=2))
    assert await ledger.price(two) == (50.0, 2)
    assert await ledger.price(base) == (25.0, 2)
    assert await ledger.add_charge(charge("k3", 30, shape=shape(count=1)))
    assert await ledger.price(base) == (30.0, 3)  # the same base, one video

    # A template's shape is priced, with no per-video price; a charge of no video teaches none.
    template = json.dumps(["template", "tpl_1"])
    assert await ledger.add_charge(charge("t1", 70, kind="template", shape=template))
    assert await ledger.price(template) == (70.0, 1)
    assert await ledger.add_charge(charge("z1", 5, shape=shape(count=3, model="m"), count=0))
    assert await ledger.price(shape(count=3, model="m")) == (5.0, 1)
    assert await ledger.price(str(base_of(shape(model="m")))) is None


async def test_a_charge_round_trips_through_the_report(ledger: Ledger) -> None:
    at = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    recorded = Charge(
        "run-1/clip-é", at, 12.5, "generation", "veo-3.1", shape(count=3), count=3,
        labels={"team": "ünï", "k": "v"}, budget=None,
    )  # fmt: skip
    assert await ledger.add_charge(recorded)
    assert [c async for c in ledger.charges()] == [recorded]


async def test_release_drops_a_reservation_whatever_its_names(ledger: Ledger) -> None:
    name, odd = "bü dget 🎬:x", json.dumps(["template", "tpl 🎬 ü"])
    await ledger.set_budget(name, 100)
    assert await reserve(ledger, hold("~r1", 0, budget=name, probe=True, of=odd)) == "reserved"
    assert await reserve(ledger, hold("~r2", 0, budget=name, probe=True, of=odd)) == "refused"
    await ledger.release("~r1")
    await ledger.release("~r1")  # nothing left: nothing happens
    await ledger.release("never-held")
    assert await ids_held(ledger) == []
    assert await reserve(ledger, hold("~r2", 0, budget=name, probe=True, of=odd)) == "reserved"
    assert await ledger.add_charge(charge("a:b", 40, budget=name, shape=odd))
    assert await ledger.budget(name) == Budget(name, 100.0, None, spent=40.0, reserved=40.0)
    await ledger.release("~r2")
    assert await ledger.budget(name) == Budget(name, 100.0, None, spent=40.0)


# -- budgets and reservations -----------------------------------------------------------------


async def test_a_budget_counts_its_charges_and_its_reservations(ledger: Ledger) -> None:
    assert await ledger.budget("b") is None
    assert await ledger.set_budget("b", 100) == Budget("b", 100.0, None)
    await ledger.set_budget("other", 100)
    assert await ledger.add_charge(charge("c1", 10))
    assert await ledger.add_charge(charge("c2", 2.5))
    assert await ledger.add_charge(charge("c3", 7, budget="other"))
    assert await ledger.add_charge(charge("c4", 9, budget=None))
    assert await reserve(ledger, hold("r1", 30)) == "reserved"
    assert await ledger.budget("b") == Budget("b", 100.0, None, spent=12.5, reserved=30.0)
    assert await ledger.budget("other") == Budget("other", 100.0, None, spent=7.0)
    await ledger.release("r1")
    assert await ledger.budget("b") == Budget("b", 100.0, None, spent=12.5)


async def test_reserve_refuses_exactly_past_the_cap(ledger: Ledger) -> None:
    await ledger.set_budget("b", 100)
    assert await ledger.reserve(hold("r1", 40), T0) == ("reserved", Budget("b", 100.0, None))
    assert await reserve(ledger, hold("r2", 40)) == "reserved"
    verdict, before = await ledger.reserve(hold("r3", 40), T0)
    assert (verdict, before) == ("refused", Budget("b", 100.0, None, reserved=80.0))
    assert await reserve(ledger, hold("r4", 20)) == "reserved"  # exactly the cap fits
    assert await reserve(ledger, hold("r5", 0.01)) == "refused"
    assert await ids_held(ledger) == ["r1", "r2", "r4"]
    assert await ledger.reserve(hold("x", 1, budget="nope"), T0) == ("refused", None)


async def test_a_second_reservation_of_an_id_is_held_and_changes_nothing(ledger: Ledger) -> None:
    await ledger.set_budget("b", 100)
    first = hold("k", 40)
    assert await reserve(ledger, first) == "reserved"
    verdict, before = await ledger.reserve(first, T0)
    assert (verdict, before) == ("held", Budget("b", 100.0, None, reserved=40.0))
    assert await reserve(ledger, hold("k", 90)) == "held"  # another quote: still the first
    assert [r async for r in ledger.reservations()] == [first]


async def test_a_lapsed_reservation_counts_for_nothing(ledger: Ledger) -> None:
    await ledger.set_budget("b", 100)
    now = datetime.now(UTC)
    lapsing = hold("~gone", 60, expires=now - timedelta(seconds=1))
    assert await reserve(ledger, lapsing, now - timedelta(minutes=1)) == "reserved"
    assert await reserve(ledger, hold("~live", 30, expires=now + timedelta(hours=1))) == "reserved"
    assert await reserve(ledger, hold("keyed", 10)) == "reserved"  # never lapses
    budget = await ledger.budget("b")
    assert budget is not None
    assert budget.reserved == 40.0
    assert await reserve(ledger, hold("fits", 60), now) == "reserved"  # over the lapsed one's
    assert "~gone" in await ids_held(ledger)  # lapsed, not dropped (the sweep releases it)


async def test_the_probe_rule(ledger: Ledger) -> None:
    """One probe per shape (whatever its budget) within its ``probe_until``, only while the
    shape has no price and the budget has room."""
    await ledger.set_budget("b", 100)
    await ledger.set_budget("c", 100)
    one, other = shape(model="new"), shape(model="newer")
    assert await reserve(ledger, hold("p1", 0, probe=True, of=one)) == "reserved"
    assert await reserve(ledger, hold("p2", 0, probe=True, of=one)) == "refused"
    assert await reserve(ledger, hold("p2", 0, budget="c", probe=True, of=one)) == "refused"
    assert await reserve(ledger, hold("p3", 0, probe=True, of=other)) == "reserved"
    await ledger.release("p1")
    assert await reserve(ledger, hold("p2", 0, probe=True, of=one)) == "reserved"
    # Past its probe_until, a probe no longer keeps the others waiting (its sender died).
    x = shape(model="x")
    assert await reserve(ledger, hold("~p5", 0, probe=True, of=x)) == "reserved"
    late = hold("~p6", 0, probe=True, of=x)
    assert await reserve(ledger, late, T0 + timedelta(seconds=59)) == "refused"
    assert await reserve(ledger, late, T0 + timedelta(minutes=1)) == "reserved"
    # Nor does a lapsed one, nor one without a probe_until.
    y = shape(model="y")
    lapsing = hold("~p7", 0, probe=True, of=y, expires=T0 + timedelta(seconds=5))
    assert await reserve(ledger, lapsing) == "reserved"
    assert (
        await reserve(ledger, hold("~p8", 0, probe=True, of=y), T0 + timedelta(seconds=5))
        == "reserved"
    )
    z = shape(model="z")
    assert await reserve(ledger, hold("~p9", 0, probe=True, of=z, probe_until=None)) == "reserved"
    assert await reserve(ledger, hold("~p10", 0, probe=True, of=z)) == "reserved"
    # Once its shape is priced, a probe counts at that price; a new probe of it is refused
    # (it was quoted before the price was learnt: the caller quotes again).
    assert await ledger.add_charge(charge("p2", 20, shape=one))
    assert await ledger.add_charge(charge("elsewhere", 15, shape=other, budget="c"))
    budget = await ledger.budget("b")
    assert budget is not None
    assert (budget.spent, budget.reserved) == (20.0, 15.0)  # p3 at the price of `other`
    assert await reserve(ledger, hold("p4", 0, probe=True, of=one)) == "refused"
    # No room: spent + reserved reaching the cap refuses a probe.
    assert await reserve(ledger, hold("big", 65)) == "reserved"  # 20 spent + 15 + 65
    assert await reserve(ledger, hold("p11", 0, probe=True, of=shape(model="w"))) == "refused"
    await ledger.release("big")
    assert await reserve(ledger, hold("p11", 0, probe=True, of=shape(model="w"))) == "reserved"


@pytest.mark.parametrize(
    ("per", "length"), [("hour", timedelta(hours=1)), ("day", timedelta(days=1))]
)
async def test_a_rolling_budget_counts_only_its_window(
    ledger: Ledger, per: str, length: timedelta
) -> None:
    await ledger.set_budget("b", 100, per=per)
    now = datetime.now(UTC)
    assert await ledger.add_charge(charge("old", 70, at=now - length - timedelta(minutes=5)))
    assert await ledger.add_charge(charge("new", 20, at=now - length + timedelta(minutes=5)))
    assert await ledger.budget("b") == Budget("b", 100.0, per, spent=20.0)
    assert await reserve(ledger, hold("r", 80), now) == "reserved"

    # At a given ``now``: the window starts at now - length (inclusive).
    await ledger.release("r")
    edge = T0 - length
    assert await ledger.add_charge(charge("edge", 30, at=edge))
    assert await ledger.add_charge(charge("before", 50, at=edge - timedelta(microseconds=1)))
    verdict, before = await ledger.reserve(hold("r", 70), T0)
    assert (verdict, before) == ("reserved", Budget("b", 100.0, per, spent=30.0))
    assert await reserve(ledger, hold("r2", 1), T0) == "refused"
    # A second later, the charge at the edge has left the window.
    verdict, before = await ledger.reserve(hold("r2", 30), T0 + timedelta(seconds=1))
    assert (verdict, before) == ("reserved", Budget("b", 100.0, per, reserved=70.0))


async def test_changing_a_budget_keeps_what_it_spent(ledger: Ledger) -> None:
    await ledger.set_budget("b", 100)
    assert await ledger.add_charge(charge("c1", 40))
    assert await ledger.add_charge(charge("c2", 30, at=datetime.now(UTC) - timedelta(hours=2)))
    assert await ledger.set_budget("b", 200, per="day") == Budget("b", 200.0, "day", spent=70.0)
    assert await ledger.set_budget("b", 50, per="hour") == Budget("b", 50.0, "hour", spent=40.0)
    assert await ledger.set_budget("b", 60) == Budget("b", 60.0, None, spent=70.0)
    assert await reserve(ledger, hold("r", 1)) == "refused"  # 70 spent of a cap of 60


async def test_two_ledgers_racing_reserve_exactly_the_cap(store: Store) -> None:
    """50 reservations of 30 credits at once, from two ledger objects, against a cap of 600:
    exactly 20 are held."""
    ledgers = [store.open(), store.open()]
    try:
        await ledgers[0].set_budget("b", 600)
        go = asyncio.Event()

        async def one(n: int) -> str:
            await go.wait()
            verdict, _ = await ledgers[n % 2].reserve(hold(f"~r{n}", 30), T0)
            return verdict

        tasks = [asyncio.create_task(one(n)) for n in range(50)]
        await asyncio.sleep(0)
        go.set()
        verdicts = await asyncio.gather(*tasks)
        assert verdicts.count("reserved") == 20
        assert verdicts.count("refused") == 30
        assert await ledgers[1].budget("b") == Budget("b", 600.0, None, reserved=600.0)
        assert len(await ids_held(ledgers[0])) == 20
    finally:
        for opened in ledgers:
            await opened.aclose()


# -- the report -------------------------------------------------------------------------------


async def test_charges_come_oldest_first_from_since_in_pages(ledger: Ledger) -> None:
    """1,010 charges (three per second, so ties cross the 500-row pages), added out of order."""
    base = datetime(2025, 1, 1, tzinfo=UTC)
    made = [charge(f"c{n:04d}", 1, at=base + timedelta(seconds=n // 3)) for n in range(1010)]
    shuffled = random.Random(7).sample(made, len(made))
    for step in range(0, len(shuffled), 50):
        await asyncio.gather(*(ledger.add_charge(c) for c in shuffled[step : step + 50]))
    expected = sorted(made, key=lambda c: (c.at, c.id))
    assert [c.id async for c in ledger.charges()] == [c.id for c in expected]
    since = base + timedelta(seconds=100)
    assert [c.id async for c in ledger.charges(since)] == [c.id for c in expected if c.at >= since]
    assert [c async for c in ledger.charges(base + timedelta(days=1))] == []


async def test_spend_groups_real_charges(ledger: Ledger) -> None:
    day1, day2 = datetime(2025, 1, 1, 9, tzinfo=UTC), datetime(2025, 1, 2, 9, tzinfo=UTC)
    await ledger.add_charge(charge("run-a/1", 100, at=day1, labels={"team": "x"}, count=2))
    await ledger.add_charge(charge("run-a/2", 50, at=day2, labels={"team": "x", "k": "v"}))
    await ledger.add_charge(charge("run-b/1", 30, at=day2, model="kling", budget=None))
    await ledger.add_charge(charge("~anon", 5, at=day2, budget="other"))

    def rows(found: list[SpendRow]) -> list[tuple[object, ...]]:
        return [(r.group, r.credits, r.generations, r.submissions) for r in found]

    assert rows(await ledger.spend()) == [
        ("run-a", 150.0, 3, 2), ("run-b", 30.0, 1, 1), ("(none)", 5.0, 1, 1),
    ]  # fmt: skip
    assert rows(await ledger.spend("label")) == [
        ("team=x", 150.0, 3, 2), ("k=v", 50.0, 1, 1), ("(none)", 35.0, 2, 2),
    ]  # fmt: skip
    assert rows(await ledger.spend("model")) == [("veo-3.1", 155.0, 4, 3), ("kling", 30.0, 1, 1)]
    assert rows(await ledger.spend("day")) == [
        ("2025-01-01", 100.0, 2, 1),
        ("2025-01-02", 85.0, 3, 3),
    ]
    assert rows(await ledger.spend("budget")) == [
        ("b", 150.0, 3, 2), ("(none)", 30.0, 1, 1), ("other", 5.0, 1, 1),
    ]  # fmt: skip
    assert rows(await ledger.spend("run", since=day2.date())) == [
        ("run-a", 50.0, 1, 1), ("run-b", 30.0, 1, 1), ("(none)", 5.0, 1, 1),
    ]  # fmt: skip


# -- the 402 pause ----------------------------------------------------------------------------


async def test_admit_paid_open_paused_then_one_probe_at_a_time(ledger: Ledger) -> None:
    assert await ledger.admit_paid(T0, 30) == ("open", None)
    until = T0 + timedelta(seconds=60)
    await ledger.pause_paid(until)
    assert await ledger.admit_paid(T0, 30) == ("paused", until)
    assert await ledger.admit_paid(until - timedelta(seconds=1), 30) == ("paused", until)

    later = until + timedelta(seconds=1)
    assert await ledger.admit_paid(later, 30) == ("probe", None)
    lease_end = later + timedelta(seconds=30)
    assert await ledger.admit_paid(later, 30) == ("paused", lease_end)
    assert await ledger.admit_paid(lease_end - timedelta(seconds=1), 30) == ("paused", lease_end)
    # The probe's lease ran out with no answer: the next caller is the probe.
    assert await ledger.admit_paid(lease_end, 10) == ("probe", None)

    # The probe's 402 renews the pause (and forgets the lease); its success clears it.
    renewed = lease_end + timedelta(minutes=5)
    await ledger.pause_paid(renewed)
    assert await ledger.admit_paid(lease_end + timedelta(seconds=1), 30) == ("paused", renewed)
    assert await ledger.admit_paid(renewed, 30) == ("probe", None)
    await ledger.clear_paid_pause()
    assert await ledger.admit_paid(renewed, 30) == ("open", None)
    await ledger.clear_paid_pause()  # no pause: nothing happens
    assert await ledger.admit_paid(T0, 30) == ("open", None)


async def test_the_pause_is_shared_and_one_probe_wins(store: Store) -> None:
    ledgers = [store.open() for _ in range(2)]
    try:
        await ledgers[0].pause_paid(T0)
        verdicts = await asyncio.gather(*(ledgers[n % 2].admit_paid(T0, 30) for n in range(20)))
        assert sorted(v for v, _ in verdicts).count("probe") == 1
        assert verdicts.count(("paused", T0 + timedelta(seconds=30))) == 19
    finally:
        for opened in ledgers:
            await opened.aclose()


# -- particular to Redis ----------------------------------------------------------------------


@pytest.fixture
async def redis_ledger(redis_url: str) -> AsyncIterator[RedisLedger]:
    opened = RedisLedger(redis_url, prefix=f"test:{uuid.uuid4().hex}:")
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_redis_keeps_money_under_the_prefix(redis_ledger: RedisLedger) -> None:
    await redis_ledger.set_budget("b", 100)
    await redis_ledger.reserve(hold("r", 10), T0)
    await redis_ledger.add_charge(charge("c", 10))
    await redis_ledger.pause_paid(T0)
    async with redis_ledger._redis() as client:
        keys = sorted(cast(list[str], await client.keys(f"{redis_ledger.prefix}*")))
    names = [key.removeprefix(redis_ledger.prefix) for key in keys]
    assert names == [
        "money:budget:b", "money:charges", "money:charges:at", "money:held:b", "money:pause",
        "money:prices", "money:reservations", "money:spent:b", "money:totals",
    ]  # fmt: skip


async def test_redis_a_retried_reservation_is_still_ours(
    redis_ledger: RedisLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry of a reservation whose answer was lost (the same call: the same nonce) finds it
    held by itself: ``reserved``, not ``held``."""
    await redis_ledger.set_budget("b", 100)
    same = uuid.uuid4()
    monkeypatch.setattr(uuid, "uuid4", lambda: same)
    assert await reserve(redis_ledger, hold("k", 40)) == "reserved"
    assert await reserve(redis_ledger, hold("k", 40)) == "reserved"
    monkeypatch.undo()
    assert await reserve(redis_ledger, hold("k", 40)) == "held"
    budget = await redis_ledger.budget("b")
    assert budget is not None
    assert budget.reserved == 40.0


async def test_redis_money_calls_raise_ledger_unavailable_when_redis_is_down() -> None:
    ledger = RedisLedger(f"redis://127.0.0.1:{free_port()}/0", retry_for=0.05)
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: ledger.add_charge(charge("c", 1)),
            lambda: ledger.price("s"),
            lambda: ledger.put_budget("b", 1, None),
            lambda: ledger.budget("b"),
            lambda: ledger.reserve(hold("r", 1), T0),
            lambda: ledger.release("r"),
            lambda: ledger.pause_paid(T0),
            lambda: ledger.clear_paid_pause(),
            lambda: ledger.admit_paid(T0, 30),
        ]
        for call in calls:
            with pytest.raises(LedgerUnavailableError):
                await call()
        with pytest.raises(LedgerUnavailableError):
            [c async for c in ledger.charges()]
        with pytest.raises(LedgerUnavailableError):
            [r async for r in ledger.reservations()]
    finally:
        await ledger.aclose()
