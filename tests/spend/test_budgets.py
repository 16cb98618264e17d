"""Spend control in one process: quotes, budgets, labels, the spend report, bad input."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from prism_async import (
    BudgetExceededError,
    GenerationRequest,
    InvalidRequestError,
    PrismClient,
    PrismError,
    TemplateRequest,
)
from prism_async.ledger import Charge, Reservation, SQLiteLedger, SubmissionState
from prism_async.ledger._prices import shape_of
from prism_async.testing import MODEL_PRICES, TEMPLATE_PRICE, FakePrismServer
from tests.conftest import NO_WAIT

PRICE = MODEL_PRICES["veo-3.1"]
VARIABLES = {"hook": "Hello there", "benefit": "Saves time"}


@pytest.fixture
async def fake() -> AsyncIterator[FakePrismServer]:
    async with FakePrismServer() as server:
        yield server


def client(fake: FakePrismServer, db: Path, **options: object) -> PrismClient:
    return PrismClient(
        fake.api_key,
        base_url=fake.base_url,
        retry=NO_WAIT,
        ledger=SQLiteLedger(db),
        **options,  # type: ignore[arg-type]
    )


def posts(fake: FakePrismServer) -> int:
    return len(fake.requests_to("POST", "/api/*"))


async def test_quote_is_seen_after_one_submission_and_estimated_by_count(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    one = GenerationRequest(prompt="a cat", model_name="veo-3.1")
    async with client(fake, tmp_path / "l.db") as prism:
        assert (await prism.quote(one)).basis == "unknown"
        assert (await prism.quote(one)).credits is None
        await prism.generations.create(prompt="a dog", model_name="veo-3.1")
        seen = await prism.quote(one)
        assert (seen.credits, seen.basis, seen.samples) == (PRICE, "seen", 1)
        three = GenerationRequest(prompt="x", model_name="veo-3.1", count=3)
        estimated = await prism.quote(three)
        assert (estimated.credits, estimated.basis) == (3 * PRICE, "estimated")
        # an omitted count is the same shape as count=1
        explicit = await prism.quote(GenerationRequest(prompt="x", model_name="veo-3.1", count=1))
        assert explicit.basis == "seen"
        # another setting is another shape
        other = GenerationRequest(prompt="x", model_name="veo-3.1", resolution="1080p")
        assert (await prism.quote(other)).basis == "unknown"
        await prism.templates.generate("abc123", variables=VARIABLES)
        template = await prism.quote(TemplateRequest("abc123"))
        assert (template.credits, template.basis) == (TEMPLATE_PRICE, "seen")
        await prism.generations.create(prompt="a bird", model_name="veo-3.1", count=3)
        exact = await prism.quote(three)
        assert (exact.credits, exact.basis, exact.samples) == (3 * PRICE, "seen", 1)


async def test_a_budget_refuses_before_sending(fake: FakePrismServer, tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    async with SQLiteLedger(db) as ledger:
        await ledger.set_budget("ads", 3 * PRICE)
    async with client(fake, db, budget="ads") as prism:
        for index in range(3):  # the first is a probe (price unknown), then at the seen price
            await prism.generations.create(prompt=f"clip {index}", model_name="veo-3.1")
        sent = posts(fake)
        with pytest.raises(BudgetExceededError) as refused:
            await prism.generations.create(prompt="one too many", model_name="veo-3.1")
        error = refused.value
        assert (error.budget, error.max_credits, error.spent, error.reserved) == (
            "ads",
            3 * PRICE,
            3 * PRICE,
            0,
        )
        assert error.needed == PRICE
        assert not error.maybe_sent
        assert posts(fake) == sent
        assert prism.ledger is not None
        budget = await prism.ledger.budget("ads")
        assert budget is not None
        assert (budget.spent, budget.reserved) == (3 * PRICE, 0)
        # raising the cap keeps what was spent
        raised = await prism.ledger.set_budget("ads", 4 * PRICE)
        assert (raised.spent, raised.available) == (3 * PRICE, PRICE)
        await prism.generations.create(prompt="now it fits", model_name="veo-3.1")
    assert 10_000 - fake.credits == 4 * PRICE


async def test_a_rolling_budget_admits_again_when_its_window_moves(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    now = datetime.now(UTC)
    async with SQLiteLedger(db) as ledger:
        await ledger.set_budget("daily", 2 * PRICE, per="day")
        for index, hours in enumerate((30, 1)):  # one outside the day, one inside it
            await ledger.add_charge(
                Charge(
                    f"old/{index}",
                    now - timedelta(hours=hours),
                    PRICE,
                    "generation",
                    "veo-3.1",
                    "s",
                    budget="daily",
                )
            )
        budget = await ledger.budget("daily")
        assert budget is not None
        assert budget.spent == PRICE
    async with client(fake, db, budget="daily") as prism:
        await prism.generations.create(prompt="fits in the window", model_name="veo-3.1")
        with pytest.raises(BudgetExceededError):
            await prism.generations.create(prompt="does not", model_name="veo-3.1")
    async with SQLiteLedger(db) as ledger:
        # on a clock 23 h 30 min later, the charge of an hour ago has left the window
        later = now + timedelta(hours=23, minutes=30)
        charge = Charge("next", later, 0.0, "generation", "veo-3.1", "s", budget="daily")
        held = Reservation("next", "daily", PRICE, later, charge)
        verdict, before = await ledger.reserve(held, later)
        assert verdict == "reserved"
        assert before is not None
        assert before.spent == PRICE  # only this morning's charge is left in the window
        verdict, _ = await ledger.reserve(attrs.evolve(held, id="again"), later)
        assert verdict == "refused"


async def test_labels_are_kept_never_sent_and_reported(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    async with client(fake, tmp_path / "l.db") as prism:
        await prism.generations.create(
            prompt="spring ad", model_name="veo-3.1", key="spring/1", labels={"campaign": "spring"}
        )
        await prism.generations.create(
            prompt="spring ad two",
            model_name="veo-3.1",
            count=2,
            labels={"campaign": "spring", "team": "ads"},
        )
        await prism.generations.create(prompt="no labels", model_name="kling-2.5", key="misc/1")
        await prism.templates.generate("abc123", variables=VARIABLES, labels={"team": "ads"})
        for request in fake.requests_to("POST", "/api/*"):
            assert "labels" not in request.json
        ledger = prism.ledger
        assert ledger is not None
        row = await ledger.get("spring/1")
        assert row is not None
        assert row.labels == {"campaign": "spring"}
        by_label = {r.group: r.credits for r in await ledger.spend(by="label")}
        assert by_label == {
            "campaign=spring": 3 * PRICE,
            "team=ads": 2 * PRICE + TEMPLATE_PRICE,
            "(none)": MODEL_PRICES["kling-2.5"],
        }
        charged = 10_000 - fake.credits
        for by in ("run", "model", "day", "budget"):
            rows = await ledger.spend(by=by)
            assert sum(r.credits for r in rows) == charged, by
        by_model = {r.group: (r.credits, r.generations) for r in await ledger.spend(by="model")}
        assert by_model["veo-3.1"] == (float(3 * PRICE), 3)
        assert by_model["abc123"] == (float(TEMPLATE_PRICE), 1)
        by_run = {r.group for r in await ledger.spend(by="run")}
        assert by_run == {"spring", "misc", "(none)"}
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        assert await ledger.spend(by="day", since=tomorrow) == []


async def test_bad_spend_input_is_refused_before_anything_is_sent(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    async with SQLiteLedger(db) as ledger:
        for cap in (0, -5, "ten", True):
            with pytest.raises(InvalidRequestError) as info:
                await ledger.set_budget("b", cap)  # type: ignore[arg-type]
            assert info.value.field == "max_credits"
        with pytest.raises(InvalidRequestError) as info:
            await ledger.set_budget("b", 100, per="week")
        assert info.value.field == "per"
        with pytest.raises(InvalidRequestError) as info:
            await ledger.spend(by="colour")
        assert info.value.field == "by"
    with pytest.raises(InvalidRequestError) as info:
        PrismClient(fake.api_key, base_url=fake.base_url, budget="b")
    assert info.value.field == "budget"
    assert "ledger" in str(info.value)
    for labels in ({"a": 1}, {1: "a"}, ["a"], {"": "x"}):
        with pytest.raises(InvalidRequestError) as info:
            GenerationRequest(prompt="p", model_name="veo-3.1", labels=labels)  # type: ignore[arg-type]
        assert info.value.field == "labels"
    async with client(fake, db, budget="nobody") as prism:
        with pytest.raises(InvalidRequestError) as info:
            await prism.generations.create(prompt="p", model_name="veo-3.1")
        assert info.value.field == "budget"
        with pytest.raises(InvalidRequestError) as info:
            await prism.generations.create(prompt="p", model_name="veo-3.1", labels={"a": 2})  # type: ignore[dict-item]
        assert info.value.field == "labels"
    assert posts(fake) == 0


async def test_an_ambiguous_key_keeps_its_reservation_until_it_is_settled(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    async with SQLiteLedger(db) as ledger:
        await ledger.set_budget("b", 2 * PRICE)
    async with client(fake, db, budget="b") as prism:
        await prism.generations.create(prompt="learn the price", model_name="veo-3.1")
        fake.inject("POST", "/api/generations", status=502, processed=True)
        with pytest.raises(PrismError):
            await prism.generations.create(prompt="lost answer", model_name="veo-3.1", key="k")
        shared = prism.ledger
        assert shared is not None
        held = await shared.budget("b")
        assert held is not None
        assert (held.spent, held.reserved) == (PRICE, PRICE)
        with pytest.raises(BudgetExceededError):  # the ambiguous key's credits are held
            await prism.generations.create(prompt="no room", model_name="veo-3.1")
        settled = await prism.reconcile("k")
        assert settled.state == SubmissionState.RECONCILED
        after = await shared.budget("b")
        assert after is not None
        assert (after.spent, after.reserved) == (2 * PRICE, 0)
        rejected_budget = await shared.set_budget("b", 3 * PRICE)
        assert rejected_budget.available == PRICE
        fake.credits = 0
        with pytest.raises(PrismError):  # a definitive refusal releases its reservation
            await prism.generations.create(prompt="refused", model_name="veo-3.1", key="r")
        released = await shared.budget("b")
        assert released is not None
        assert released.reserved == 0


async def test_one_probe_per_unknown_shape(fake: FakePrismServer, tmp_path: Path) -> None:
    """Two submissions of a shape never charged: one goes first, the other waits for its
    price and reserves at it."""
    db = tmp_path / "l.db"
    async with SQLiteLedger(db) as ledger:
        await ledger.set_budget("b", 10 * PRICE)
    fake.inject("POST", "/api/generations", delay=0.3)
    async with client(fake, db, budget="b") as prism:
        first = asyncio.create_task(prism.generations.create(prompt="one", model_name="veo-3.1"))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(prism.generations.create(prompt="two", model_name="veo-3.1"))
        await asyncio.sleep(0.1)
        assert posts(fake) == 1  # the second waits for the probe's price
        await asyncio.gather(first, second)
        assert posts(fake) == 2
        assert prism.ledger is not None
        budget = await prism.ledger.budget("b")
        assert budget is not None
        assert (budget.spent, budget.reserved) == (2 * PRICE, 0)


async def test_a_key_held_by_a_dead_process_is_taken_over(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    """A job redelivered after its worker died between reserving and writing the key's row:
    the new attempt takes the reservation over (a sweep would release the dead one's)."""
    db = tmp_path / "l.db"
    now = datetime.now(UTC)
    async with SQLiteLedger(db) as ledger:
        await ledger.set_budget("b", 2 * PRICE)
        charge = Charge("warm", now, PRICE, "generation", "veo-3.1", shape_key(), budget="b")
        await ledger.add_charge(charge)  # the price is known
        dead = f"{socket.gethostname()}:{2**22 + 1}:?"  # above any Linux pid_max: gone
        held = Reservation("k", "b", PRICE, now, attrs.evolve(charge, id="k"), owner=dead)
        assert (await ledger.reserve(held, now))[0] == "reserved"
    async with client(fake, db, budget="b") as prism:
        assert prism.ledger is not None
        (mine,) = [r async for r in prism.ledger.reservations()]
        assert mine.owner == dead
        await prism.generations.create(prompt="the job again", model_name="veo-3.1", key="k")
        assert [r async for r in prism.ledger.reservations()] == []
        budget = await prism.ledger.budget("b")
        assert budget is not None
        assert (budget.spent, budget.reserved) == (2 * PRICE, 0)
    assert posts(fake) == 1


def shape_key() -> str:
    return shape_of(GenerationRequest(prompt="x", model_name="veo-3.1")).key


async def test_a_replayed_key_holds_and_spends_nothing_more(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    async with SQLiteLedger(db) as ledger:
        await ledger.set_budget("b", 3 * PRICE)
    async with client(fake, db, budget="b") as prism:
        first = await prism.generations.create(prompt="once", model_name="veo-3.1", key="k")
        again = await prism.generations.create(prompt="once", model_name="veo-3.1", key="k")
        assert again.ids == first.ids
        assert posts(fake) == 1
        assert prism.ledger is not None
        assert [r async for r in prism.ledger.reservations()] == []
        budget = await prism.ledger.budget("b")
        assert budget is not None
        assert (budget.spent, budget.reserved) == (PRICE, 0)


async def test_a_settled_key_replays_under_a_full_budget(
    fake: FakePrismServer, tmp_path: Path
) -> None:
    """The budget is spent, but the key was accepted: its batch comes back, nothing refused."""
    db = tmp_path / "l.db"
    async with SQLiteLedger(db) as ledger:
        await ledger.set_budget("b", PRICE)
    async with client(fake, db, budget="b") as prism:
        first = await prism.generations.create(prompt="once", model_name="veo-3.1", key="k")
        again = await prism.generations.create(prompt="once", model_name="veo-3.1", key="k")
        assert again.ids == first.ids
        with pytest.raises(BudgetExceededError):
            await prism.generations.create(prompt="new", model_name="veo-3.1", key="other")
    assert posts(fake) == 1
