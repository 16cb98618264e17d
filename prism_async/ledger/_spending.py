"""The spend rules of a client: the 402 pause, the budget reservation before a paid POST, the
charge after it, and how an unsettled key's reservation is settled later.

Every paid POST of a client with a ledger is admitted first (no fleet-wide 402 pause, or this
is the one probe after it) and, with ``PrismClient(budget=...)``, reserves its quoted price in
one atomic step. Its answer settles it: accepted, the charge is recorded (and the price of its
shape learnt) and the reservation dropped; definitively refused, the reservation is released;
maybe queued, the reservation holds until its key is settled (:func:`settle_reservations`, run
by every refusal and by the tracker) or, without a key, until it lapses.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import attrs

from .._errors import (
    AmbiguousSubmissionError,
    BudgetExceededError,
    InsufficientCreditsError,
    InvalidRequestError,
    LedgerUnavailableError,
    PrismError,
    SubmissionConflictError,
    SubmissionInFlightError,
)
from ..models.requests import GenerationRequest, TemplateRequest
from ._model import Charge, Owner, Reservation, Submission, SubmissionState
from ._prices import Quote, shape_of

if TYPE_CHECKING:
    from ._base import Ledger

__all__ = [
    "Hold",
    "Spending",
    "charge_of",
    "quote",
    "settle_money",
    "settle_reservations",
    "spending_for",
]

logger = logging.getLogger("prism_async")

B = TypeVar("B")
T = TypeVar("T")
Request = GenerationRequest | TemplateRequest
_LEDGER_REFUSALS = (AmbiguousSubmissionError, SubmissionConflictError, SubmissionInFlightError)
_PRICE_POLL = 0.1
BEST_EFFORT = 1.0
"""Seconds a client without a budget waits for the ledger's 402 pause or charge record."""
OUTAGE_SKIP = 5.0
"""Seconds those calls are skipped after one did not answer in time."""
PRICE_TTL = 10.0
"""Seconds a client trusts a price it saw (a changed price is learnt by the next charge)."""
_SEEN_SHAPES = 1024
_ORPHAN = timedelta(minutes=10)
"""A keyed reservation whose key never got a row (its process died before the claim)."""


def _now() -> datetime:
    return datetime.now(UTC)


async def quote(ledger: Ledger, request: Request) -> Quote:
    """What ``request`` would cost by the prices ``ledger`` has learnt (see :class:`Quote`)."""
    shape = shape_of(request)
    seen = await ledger.price(shape.key)
    if seen is not None:
        return Quote(seen[0], "seen", seen[1])
    if shape.base != shape.key:
        per_video = await ledger.price(shape.base)
        if per_video is not None:
            return Quote(per_video[0] * shape.count, "estimated", per_video[1])
    return Quote(None, "unknown", 0)


def summary_of(request: Request, budget: str | None) -> dict[str, object]:
    """What a ledger row keeps of a paid request: what reconciliation and the spend report
    need (never the whole body)."""
    shape = shape_of(request)
    if isinstance(request, TemplateRequest):
        summary: dict[str, object] = {"template_id": request.template_id}
    else:
        summary = {"prompt": request.prompt, "model_name": request.model_name}
        summary["count"] = request.count
    summary["shape"] = shape.key
    if request.labels:
        summary["labels"] = dict(request.labels)
    if budget is not None:
        summary["budget"] = budget
    return summary


def charge_of(submission: Submission, credits: float) -> Charge:
    """The charge of a settled submission, from its row."""
    r = submission.request
    model = r.get("template_id") if submission.kind == "template" else r.get("model_name")
    count = len(submission.generation_ids) or int(r.get("count") or 1)
    return Charge(
        id=submission.key,
        at=submission.updated_at,
        credits=credits,
        kind=submission.kind,
        model=str(model or "?"),
        shape=str(r.get("shape") or model or "?"),
        count=count,
        labels=submission.labels,
        budget=r.get("budget") if isinstance(r.get("budget"), str) else None,
    )


async def settle_money(ledger: Ledger, submission: Submission, held: float = 0.0) -> None:
    """Record what a settled key was charged (its price seen when the API's figure is unknown)
    or release its reservation. Best effort: the next sweep does it if this fails."""
    try:
        if submission.done:
            credits = submission.credits_charged
            if credits is None:
                seen = await ledger.price(str(submission.request.get("shape")))
                credits = seen[0] if seen is not None else held
            await ledger.add_charge(charge_of(submission, credits))
        elif submission.state == SubmissionState.REJECTED:
            await ledger.release(submission.key)
    except (NotImplementedError, LedgerUnavailableError) as exc:
        logger.debug("the charge of %s is not recorded now: %s", submission.key, exc)


async def settle_reservations(ledger: Ledger) -> int:
    """Settle every reservation whose key is settled, and drop lapsed ones; how many went."""
    now, gone = _now(), 0
    async for held in ledger.reservations():
        if held.expires is not None and held.expires <= now:
            await ledger.release(held.id)
            gone += 1
            continue
        if held.id.startswith("~"):
            continue
        row = await ledger.get(held.id)
        if row is None:
            owner = Owner.parse(held.owner or "")
            if now - held.at > _ORPHAN or (owner is not None and owner.is_gone()):
                await ledger.release(held.id)  # its process died before the key's row: unsent
                gone += 1
        elif row.done or row.state == SubmissionState.REJECTED:
            await settle_money(ledger, row, held.credits)
            gone += 1
    return gone


@attrs.define
class Hold:
    """What :meth:`Spending.hold` took for one paid POST."""

    charge: Charge
    reservation: Reservation | None = None
    ours: bool = False
    """Whether this call made the reservation (not a key's earlier attempt)."""
    probe_402: bool = False
    """This POST is the one probe after a 402 pause."""


def spending_for(
    ledger: Ledger | None, budget: object, pause_on_402: object, timeout: float
) -> Spending | None:
    """A client's spend rules (None without a ledger), its settings checked.

    Raises:
        InvalidRequestError: a budget without a ledger, or not a name; a negative pause.
    """
    if budget is not None and (ledger is None or not isinstance(budget, str) or not budget):
        why = "must be a budget's name (a non-empty string)"
        if ledger is None:
            why = "needs a ledger: PrismClient(ledger=..., budget=...)"
        raise InvalidRequestError("budget", why)
    if isinstance(pause_on_402, bool) or not isinstance(pause_on_402, int | float):
        raise InvalidRequestError("pause_on_402", "must be seconds, 0 or more")
    if pause_on_402 < 0:
        raise InvalidRequestError("pause_on_402", "must be seconds, 0 or more")
    if ledger is None:
        return None
    return Spending(ledger, budget=budget, pause_on_402=float(pause_on_402), timeout=timeout)


class Spending:
    """The spend rules of one client (see the module docstring)."""

    def __init__(
        self, ledger: Ledger, *, budget: str | None, pause_on_402: float, timeout: float
    ) -> None:
        self.ledger = ledger
        self.budget = budget
        self.pause_on_402 = pause_on_402
        self.timeout = timeout
        self._keeps_money = True  # False once a custom backend says it keeps none
        self._owner = str(Owner.me())
        # Prices this client saw charged or quoted "seen", for PRICE_TTL seconds: a budgeted
        # POST then reads no price from the ledger (the reservation still checks the cap).
        self._seen: dict[str, tuple[float, float]] = {}
        self._skip_until = 0.0  # best-effort calls are skipped until then (a ledger outage)

    def _remember(self, shape: str, credits: float) -> None:
        if len(self._seen) >= _SEEN_SHAPES:
            self._seen.clear()
        self._seen[shape] = (credits, asyncio.get_running_loop().time())

    async def _quote(self, request: Request) -> Quote:
        """The quote a reservation is made at: a price this client saw in the last
        PRICE_TTL seconds, else the ledger's."""
        shape = shape_of(request).key
        seen = self._seen.get(shape)
        if seen is not None and asyncio.get_running_loop().time() - seen[1] < PRICE_TTL:
            return Quote(seen[0], "seen", 1)
        priced = await quote(self.ledger, request)
        if priced.basis == "seen" and priced.credits is not None:
            self._remember(shape, priced.credits)
        return priced

    async def paid(
        self,
        request: Request,
        send: Callable[[], Awaitable[B]],
        *,
        credits_of: Callable[[B], float | None],
        count_of: Callable[[B], int],
        charged_by_ledger: bool,
        replayed: Callable[[], bool] = lambda: False,
    ) -> B:
        """Send a paid request under the rules. ``charged_by_ledger``: its key's row records
        the charge when it settles (so only the reservation is dealt with here);
        ``replayed()``: the ledger answered from its record, sending nothing."""
        hold = await self.hold(request)
        try:
            result = await send()
        except BaseException as exc:
            await self._failed(hold, exc)
            raise
        if replayed():  # an accepted key: charged when it was accepted; hold nothing now
            if hold is not None and hold.reservation is not None:
                await self._quietly(self.ledger.release(hold.charge.id))
            return result
        await self._accepted(hold, credits_of(result), count_of(result), charged_by_ledger)
        return result

    async def _quietly(self, write: Awaitable[None]) -> None:
        try:
            await write
        except (LedgerUnavailableError, NotImplementedError) as exc:
            logger.warning("the ledger could not drop a reservation (the sweep will): %s", exc)

    async def hold(self, request: Request) -> Hold | None:
        """Admit one paid POST: raise if the fleet is paused by a 402 or the budget cannot hold
        its quoted price; else what it holds."""
        if not self._keeps_money:
            return None
        shape = shape_of(request)
        charge = Charge(
            id=request.key or f"~{secrets.token_hex(8)}",
            at=_now(),
            credits=0.0,
            kind=shape.kind,
            model=shape.model,
            shape=shape.key,
            count=shape.count,
            labels=dict(request.labels or {}),
            budget=self.budget,
        )
        hold = Hold(charge)
        try:
            hold.probe_402 = await self._admit()
        except NotImplementedError:
            if self.budget is not None:
                raise InvalidRequestError("budget", "this ledger keeps no budgets") from None
            self._keeps_money = False
            return None
        if self.budget is not None:
            await self._reserve(hold, request)
        return hold

    async def _best_effort(self, call: Awaitable[T]) -> T | None:
        """A money call of a client without a budget: the request never waits for a ledger in
        trouble (bounded to BEST_EFFORT seconds, then skipped for OUTAGE_SKIP seconds)."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._skip_until:
            if inspect.iscoroutine(call):
                call.close()  # never awaited: no "coroutine was never awaited" warning
            return None
        try:
            async with asyncio.timeout(BEST_EFFORT):
                return await call
        except (TimeoutError, LedgerUnavailableError) as exc:
            self._skip_until = loop.time() + OUTAGE_SKIP
            logger.warning(
                "the ledger is not answering (%s): paid requests go on without the shared "
                "402 pause and their charges are not recorded for %g s",
                type(exc).__name__,
                OUTAGE_SKIP,
            )
            return None

    async def _admit(self) -> bool:
        admit = self.ledger.admit_paid(_now(), self.timeout)
        if self.budget is not None:  # a budget needs the ledger: its errors are the caller's
            verdict, until = await admit
        else:
            answer = await self._best_effort(admit)
            if answer is None:
                return False
            verdict, until = answer
        if verdict == "paused":
            error = InsufficientCreditsError(
                "paid requests are paused after a 402 seen by a process sharing the ledger "
                f"(until {until:%H:%M:%S} UTC): not sent",
                status_code=402,
                code="insufficient_credits",
            )
            error.paused_until = until
            raise error
        return verdict == "probe"

    async def _reserve(self, hold: Hold, request: Request) -> None:
        assert self.budget is not None
        deadline = asyncio.get_running_loop().time() + self.timeout
        swept = took_over = False
        while True:
            priced = await self._quote(request)
            credits = priced.credits if priced.credits is not None else 0.0
            reservation = Reservation(
                id=hold.charge.id,
                budget=self.budget,
                credits=credits,
                at=_now(),
                charge=attrs.evolve(hold.charge, credits=credits),
                probe=priced.credits is None,
                expires=(
                    None
                    if request.key is not None
                    else _now() + timedelta(seconds=self.ledger.reconcile_window)
                ),
                owner=self._owner,
                probe_until=(
                    _now() + timedelta(seconds=self.timeout) if priced.credits is None else None
                ),
            )
            verdict, budget = await self.ledger.reserve(reservation, _now())
            if budget is None:
                raise InvalidRequestError("budget", f"no budget is named {self.budget!r}")
            if verdict == "held" and not took_over:
                took_over = True
                if await self.ledger.get(reservation.id) is None:
                    # An earlier attempt holds it whose process may have died before the key's
                    # row was written: a sweep would release that one under us. Take it over
                    # (released, then reserved again as ours: refused if it no longer fits).
                    # With a row, it stays: the key may have been sent, and is settled later.
                    await self.ledger.release(reservation.id)
                    continue
            if verdict != "refused":
                hold.reservation, hold.ours = reservation, verdict == "reserved"
                return
            room = budget.spent + budget.reserved < budget.max_credits
            if reservation.probe and room and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(_PRICE_POLL)  # another probe of this shape: wait for its price
                continue
            if not swept and await settle_reservations(self.ledger):
                swept = True  # settled keys freed credits: try once more
                continue
            if request.key is not None:
                row = await self.ledger.get(request.key)
                if row is not None and row.state != SubmissionState.REJECTED:
                    return  # the ledger answers for this key (or refuses it): nothing is sent
            raise BudgetExceededError(
                budget.name,
                max_credits=budget.max_credits,
                spent=budget.spent,
                reserved=budget.reserved,
                needed=priced.credits,
            )

    async def _accepted(
        self, hold: Hold | None, credits: float | None, count: int, charged_by_ledger: bool
    ) -> None:
        if hold is None:
            return
        if credits is not None and count == hold.charge.count:
            self._remember(hold.charge.shape, credits)  # what this very shape was charged
        try:
            if hold.probe_402:
                await self.ledger.clear_paid_pause()
            if not charged_by_ledger:
                paid = credits if credits is not None else (
                    hold.reservation.credits if hold.reservation is not None else 0.0
                )
                charge = attrs.evolve(hold.charge, at=_now(), credits=paid, count=count or 1)
                if self.budget is None:
                    await self._best_effort(self.ledger.add_charge(charge))
                else:
                    await self.ledger.add_charge(charge)
        except (LedgerUnavailableError, NotImplementedError) as exc:
            logger.warning(
                "the charge of a paid request (%s) is not recorded in the ledger: %s",
                hold.charge.id,
                exc,
            )

    async def _failed(self, hold: Hold | None, exc: BaseException) -> None:
        if hold is None:
            return
        try:
            if isinstance(exc, InsufficientCreditsError) and exc.paused_until is None:
                until = _now() + timedelta(seconds=self.pause_on_402)
                await self._best_effort(self.ledger.pause_paid(until))
            definitive = isinstance(exc, PrismError) and not exc.maybe_sent
            if hold.ours and definitive and not isinstance(exc, _LEDGER_REFUSALS):
                await self.ledger.release(hold.charge.id)
        except (LedgerUnavailableError, NotImplementedError) as failure:
            logger.warning("the ledger could not record a refused paid request: %s", failure)
