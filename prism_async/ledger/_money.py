"""What a ledger keeps of money: charges, learnt prices, budgets and their reservations, and the
fleet-wide pause after a 402. :class:`~prism_async.ledger.Ledger` inherits it.

A backend provides the primitives (each one atomic); the reports and rules built on them are
here, the same for every backend.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta

from .._errors import InvalidRequestError
from ._model import Budget, Charge, Reservation, SpendRow

__all__ = ["PERIODS", "SPEND_GROUPS", "Money", "check_budget", "window_start"]

PERIODS = {None: None, "day": timedelta(days=1), "hour": timedelta(hours=1)}
"""A budget's ``per``, and the rolling window it counts."""
SPEND_GROUPS = ("run", "label", "model", "day", "budget")
"""What ``ledger.spend(by=...)`` groups by."""
NONE = "(none)"


def check_budget(name: object, max_credits: object, per: object) -> tuple[str, float, str | None]:
    """A budget's settings, checked.

    Raises:
        InvalidRequestError: an empty name, a cap that is not a positive number, a ``per``
            other than None, ``"day"`` and ``"hour"``.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError("name", "must be a non-empty string")
    if isinstance(max_credits, bool) or not isinstance(max_credits, int | float):
        raise InvalidRequestError("max_credits", "must be a number of credits")
    if not max_credits > 0:
        raise InvalidRequestError("max_credits", f"must be positive; got {max_credits!r}")
    if per not in PERIODS:
        raise InvalidRequestError("per", f"must be None, 'day' or 'hour'; got {per!r}")
    return name, float(max_credits), per


def window_start(per: str | None, now: datetime) -> datetime | None:
    """Where a budget's rolling window starts at ``now`` (None: a lifetime cap)."""
    length = PERIODS.get(per)
    return None if length is None else now - length


def _since(since: datetime | date | None) -> datetime | None:
    if since is None or isinstance(since, datetime):
        if isinstance(since, datetime) and since.tzinfo is None:
            return since.replace(tzinfo=UTC)
        return since
    if isinstance(since, date):
        return datetime.combine(since, time(), tzinfo=UTC)
    raise InvalidRequestError("since", "must be a datetime, a date or None")


class Money:
    """Charges, prices, budgets, reservations and the 402 pause (see the module docstring)."""

    # -- primitives a backend provides (each atomic) ------------------------------------------

    async def add_charge(self, charge: Charge) -> bool:
        """Record an accepted submission's charge, once per ``charge.id`` (False when it was
        recorded already); in the same step, drop the reservation with that id and learn the
        price of its shape (and the per-video price of its base shape)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no charges")

    async def price(self, shape: str) -> tuple[float, int] | None:
        """The latest price learnt for a shape (or a base shape: per video) and how many
        charges it was learnt from; None when none was seen."""
        raise NotImplementedError(f"{type(self).__name__} keeps no prices")

    async def put_budget(self, name: str, max_credits: float, per: str | None) -> None:
        """Create or change a budget (its charges, so its ``spent``, are kept)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no budgets")

    async def budget(self, name: str) -> Budget | None:
        """A budget with what it has spent (within its window) and holds reserved; None when
        there is no budget of that name."""
        raise NotImplementedError(f"{type(self).__name__} keeps no budgets")

    async def reserve(self, reservation: Reservation, now: datetime) -> tuple[str, Budget | None]:
        """Atomically hold ``reservation.credits`` of its budget if they fit.

        They fit when ``spent + reserved + credits <= max_credits``; a probe (an unknown price,
        0 credits) fits when ``spent + reserved < max_credits``, no price of its shape is known
        (it was quoted before one was learnt: the caller quotes again) and no other probe of
        the same shape is within its ``probe_until``. A probe counts in ``reserved`` at its
        shape's price once that is learnt. Lapsed reservations (``expires`` past) count for
        nothing.

        Returns:
            ``"reserved"`` (held now), ``"held"`` (a reservation with that id was held already:
            nothing changes) or ``"refused"``, and the budget as it was before (None: there is
            no such budget, and nothing is held).
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no budgets")

    async def release(self, reservation_id: str) -> None:
        """Drop a reservation (nothing was charged, or its charge is recorded elsewhere)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no budgets")

    def reservations(self) -> AsyncIterator[Reservation]:
        """Every reservation held."""
        raise NotImplementedError(f"{type(self).__name__} keeps no budgets")

    def charges(self, since: datetime | None = None) -> AsyncIterator[Charge]:
        """Every charge (accepted at or after ``since``), oldest first."""
        raise NotImplementedError(f"{type(self).__name__} keeps no charges")

    async def pause_paid(self, until: datetime) -> None:
        """Pause new paid POSTs of every process sharing the ledger until ``until`` (a 402)."""
        raise NotImplementedError(f"{type(self).__name__} shares no pauses")

    async def clear_paid_pause(self) -> None:
        """End the 402 pause (a paid POST went through)."""
        raise NotImplementedError(f"{type(self).__name__} shares no pauses")

    async def admit_paid(self, now: datetime, probe_lease: float) -> tuple[str, datetime | None]:
        """Whether a paid POST may leave now: ``("open", None)`` (no pause), ``("paused",
        until)``, or ``("probe", None)``: the pause is over and this caller is the one probe
        (the others are told ``("paused", ...)`` for ``probe_lease`` seconds, or until the
        probe's answer clears or renews the pause)."""
        raise NotImplementedError(f"{type(self).__name__} shares no pauses")

    # -- built on them --------------------------------------------------------------------------

    async def set_budget(
        self, name: str, max_credits: float, *, per: str | None = None
    ) -> Budget:
        """Create a budget, or change an existing one's cap and ``per`` (its spending is kept).

        Args:
            name: the budget's name (``PrismClient(budget=name)`` spends from it).
            max_credits: the cap, a positive number of credits.
            per: None for a lifetime cap, ``"day"`` or ``"hour"`` for a rolling window.

        Raises:
            InvalidRequestError: a bad name, cap or ``per``.
        """
        name, cap, period = check_budget(name, max_credits, per)
        await self.put_budget(name, cap, period)
        budget = await self.budget(name)
        assert budget is not None  # just written
        return budget

    async def settle_reservations(self) -> int:
        """Settle the reservations of keys that are settled (charged, or released when nothing
        was queued) and drop lapsed ones and those of processes that died before their key's
        row was written. Budget refusals and the tracker run it; returns how many went."""
        from ._spending import settle_reservations  # (the rules build on this class)

        return await settle_reservations(self)  # type: ignore[arg-type]

    async def spend(
        self, by: str = "run", since: datetime | date | None = None
    ) -> list[SpendRow]:
        """What was charged, grouped ``by`` run (a key's prefix before its last ``/``), label
        (``key=value``: a submission with two labels counts in both), model (or template id),
        UTC day or budget; groups without one are ``(none)``. Largest first.

        Raises:
            InvalidRequestError: an unknown ``by``, or a ``since`` that is not a date.
        """
        if by not in SPEND_GROUPS:
            raise InvalidRequestError("by", f"must be one of {', '.join(SPEND_GROUPS)}")
        credits: dict[str, float] = defaultdict(float)
        videos: dict[str, int] = defaultdict(int)
        submissions: dict[str, int] = defaultdict(int)
        async for charge in self.charges(_since(since)):
            for group in _groups(charge, by):
                credits[group] += charge.credits
                videos[group] += charge.count
                submissions[group] += 1
        rows = [SpendRow(g, credits[g], videos[g], submissions[g]) for g in credits]
        return sorted(rows, key=lambda row: (-row.credits, row.group))


def _groups(charge: Charge, by: str) -> list[str]:
    if by == "run":
        return [charge.run or NONE]
    if by == "label":
        return [f"{k}={v}" for k, v in sorted(charge.labels.items())] or [NONE]
    if by == "model":
        return [charge.model]
    if by == "day":
        return [charge.at.astimezone(UTC).date().isoformat()]
    return [charge.budget or NONE]
