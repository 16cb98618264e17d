"""What a bulk run decides before it sends anything: each request's ledger key, and what the
run's keys have been charged (``max_credits``, the CLI's summary).

Keys come from the request itself, never its position: ``f"{run_id}/{digest}"``, where
``digest`` is the first 16 hex digits of the request's fingerprint (the hash the ledger keeps
of the body as sent), and ``f"{run_id}/{digest}.{n}"`` for the n-th identical request. So
inserting, deleting or reordering lines changes no other request's key, and two identical lines
are still two videos. Rows written by earlier versions under ``f"{run_id}/{index}"`` are taken
over by a request with the same fingerprint (the same position first), so an old ledger resumes
without paying again.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from attrs import frozen

from .._errors import InvalidRequestError
from ._base import Ledger
from ._durable import fingerprint
from ._model import Submission, SubmissionState

if TYPE_CHECKING:
    from ..models.requests import GenerationRequest, TemplateRequest

    Request: TypeAlias = GenerationRequest | TemplateRequest

__all__ = ["Budget", "Credits", "Plan", "plan_run"]

Shape = tuple[tuple[str, Any], ...]
"""The request fields that set a price (model, duration, resolution, count, audio, template)."""

_PRICED = ("modelName", "duration", "resolution", "count", "hasAudio", "templateId", "template_id")
DIGITS = 16
"""Hex digits of the fingerprint in a derived key."""


@frozen
class Plan:
    """One request of a run: where it stands in the input, its key, its fingerprint."""

    index: int
    request: Request
    key: str
    fingerprint: str
    shape: Shape


async def plan_run(
    ledger: Ledger,
    requests: Sequence[Request],
    kinds: Sequence[tuple[str, dict[str, Any]]],
    run_id: str,
) -> tuple[list[Plan], dict[str, Submission]]:
    """Each request's :class:`Plan`, and the ledger rows of their keys (one read).

    ``kinds`` holds each request's ledger kind and fingerprinted body.
    """
    prints = [fingerprint(kind, body) for kind, body in kinds]
    keys = _derived(requests, prints, run_id)
    legacy = [f"{run_id}/{index}" for index in range(len(requests))]
    known = await ledger.get_many([*keys, *legacy])
    _adopt_legacy(requests, prints, keys, legacy, known)
    _check_unique(keys)
    plans = [
        Plan(index, request, key, print_, _shape(kind, body))
        for index, (request, key, print_, (kind, body)) in enumerate(
            zip(requests, keys, prints, kinds, strict=True)
        )
    ]
    return plans, {plan.key: known[plan.key] for plan in plans if plan.key in known}


def _derived(requests: Sequence[Request], prints: Sequence[str], run_id: str) -> list[str]:
    seen: Counter[str] = Counter()
    keys = []
    for request, print_ in zip(requests, prints, strict=True):
        if request.key is not None:
            keys.append(request.key)
            continue
        seen[print_] += 1
        nth = seen[print_]
        keys.append(f"{run_id}/{print_[:DIGITS]}" + (f".{nth}" if nth > 1 else ""))
    return keys


def _adopt_legacy(
    requests: Sequence[Request],
    prints: Sequence[str],
    keys: list[str],
    legacy: Sequence[str],
    known: Mapping[str, Submission],
) -> None:
    """Give a request with no row under its derived key an earlier version's positional row
    with the same fingerprint, one row per request, the same position first."""
    taken = set(keys)
    free: dict[str, list[str]] = defaultdict(list)
    for key in legacy:
        row = known.get(key)
        if row is not None and key not in taken:
            free[row.fingerprint].append(key)
    if not free:
        return
    for index, (request, print_) in enumerate(zip(requests, prints, strict=True)):
        rows = free.get(print_)
        if request.key is not None or keys[index] in known or not rows:
            continue
        same_place = legacy[index]
        keys[index] = same_place if same_place in rows else rows[0]
        rows.remove(keys[index])


def _check_unique(keys: Sequence[str]) -> None:
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key in first:
            raise InvalidRequestError(
                "requests", f"requests[{first[key]}] and requests[{index}] have the key {key!r}"
            )
        first[key] = index


def _shape(kind: str, body: Mapping[str, Any]) -> Shape:
    return (("kind", kind), *((name, body[name]) for name in _PRICED if name in body))


class Credits:
    """What a run's keys were charged: the API's figure where it gave one; else (reconciled or
    resolved by hand) the price seen for the same request shape, or the highest price seen.
    Keys that may have been charged (ambiguous, in flight elsewhere) are held at that price."""

    def __init__(self) -> None:
        self._figures: dict[str, float] = {}
        self._priced = 0.0
        self._unpriced: dict[str, Shape] = {}
        self._held: dict[str, Shape] = {}
        self._prices: dict[Shape, float] = {}
        self.highest = 0.0
        """The highest price seen."""

    def count(self, plan: Plan, row: Submission | None) -> None:
        """Count a key as its ledger row stands."""
        state = None if row is None else row.state
        if row is not None and row.done:
            self.charge(plan, row.credits_charged)
        elif state in (SubmissionState.AMBIGUOUS, SubmissionState.SENDING):
            self.hold(plan)
        else:
            self.forget(plan.key)

    def charge(self, plan: Plan, credits: float | None) -> None:
        """``plan``'s key was charged ``credits`` (None: the API's figure is unknown)."""
        self.forget(plan.key)
        if credits is None:
            self._unpriced[plan.key] = plan.shape
            return
        self._figures[plan.key] = credits
        self._priced += credits
        self._prices[plan.shape] = credits
        self.highest = max(self.highest, credits)

    def hold(self, plan: Plan) -> None:
        """``plan``'s key may have been charged: hold its price until it is settled."""
        self.forget(plan.key)
        self._held[plan.key] = plan.shape

    def forget(self, key: str) -> None:
        """``key`` was not charged (or is counted again next)."""
        self._priced -= self._figures.pop(key, 0.0)
        self._unpriced.pop(key, None)
        self._held.pop(key, None)

    def price(self, shape: Shape) -> float:
        """The price of a request shape: the last seen for it, else the highest seen."""
        return self._prices.get(shape, self.highest)

    @property
    def charged(self) -> float:
        """Credits the keys were charged."""
        return self._priced + sum(self.price(shape) for shape in self._unpriced.values())

    @property
    def held(self) -> float:
        """Credits the keys that may have been charged would come to."""
        return sum(self.price(shape) for shape in self._held.values())


class Budget:
    """``max_credits`` and the stop after a 402, shared by a run's submissions."""

    def __init__(self, max_credits: float | None, credits: Credits) -> None:
        self.max_credits = max_credits
        self.credits = credits
        self.in_flight = 0
        self.stopped = False
        self.changed = asyncio.Condition()

    async def reserve(self) -> bool:
        """Whether one more submission may start now (it waits while prices are unknown).

        Every credit the run's keys were (or may have been) charged counts, and each
        submission in flight at the highest price seen.
        """
        async with self.changed:
            while True:
                if self.stopped:
                    return False
                if self.max_credits is None:
                    break
                price = self.credits.highest
                if price == 0.0 and self.in_flight:
                    await self.changed.wait()  # no price seen yet: one submission at a time
                    continue
                spent = self.credits.charged + self.credits.held
                if spent + (self.in_flight + 1) * price > self.max_credits:
                    return False
                break
            self.in_flight += 1
            return True

    async def release(self, *, stop: bool = False) -> None:
        """A submission ended (its charge already counted in ``credits``)."""
        async with self.changed:
            self.in_flight -= 1
            self.stopped = self.stopped or stop
            self.changed.notify_all()
