"""The money primitives of :class:`~prism_async.ledger.RedisLedger`: charges, prices, budgets,
reservations and the 402 pause. Each write of more than one key is one Lua script (EVALSHA),
so it is atomic across every process sharing the server; each call is retried while Redis
cannot be reached, like the ledger's other primitives.

Keys, all under the ledger's prefix ``P`` (a prefix with a ``{hash tag}`` keeps them in one
Cluster slot, as for the other keys):

- ``P money:charges``: hash, charge id -> the charge as JSON (once per id);
- ``P money:charges:at``: sorted set, charge id scored by ``at`` (the report's order);
- ``P money:spent:<budget>``: sorted set, ``<credits>:<id>`` scored by ``at`` (rolling windows);
- ``P money:totals``: hash, budget -> credits charged to it ever (lifetime caps);
- ``P money:prices``: hash, shape -> ``<credits> <samples>``;
- ``P money:budget:<name>``: hash, ``max`` and ``per`` (``""``: a lifetime cap);
- ``P money:reservations``: hash, reservation id -> the reservation as JSON;
- ``P money:held:<budget>``: hash, reservation id -> ``<credits> <expires|-> <nonce> <what>``,
  ``what`` being ``=`` or, for a probe, ``?<shape>`` (it counts at the shape's price once learnt);
- ``P money:probes:<shape>``: hash, id of a probe reservation -> ``<probe_until|-> <expires|->``;
- ``P money:pause``: hash, ``until`` and ``probe`` (the probe's lease end, ``""``: none).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from redis import asyncio as redis
from redis.typing import EncodableT, FieldT

from . import _redis_scripts as scripts
from ._codec import charge_from_json, charge_to_json, reservation_from_json, reservation_to_json
from ._model import Budget, Charge, Reservation
from ._money import window_start
from ._prices import base_of

__all__ = ["RedisMoney"]

T = TypeVar("T")

_PAGE = 500


def _number(value: float) -> str:
    """A float as text Redis and Lua read back exactly (``repr`` is the shortest round trip)."""
    return repr(float(value))


def _seconds(moment: datetime) -> str:
    return _number(moment.timestamp())


def _moment(text: str) -> datetime:
    return datetime.fromtimestamp(float(text), tz=UTC)


def _clock(now: datetime) -> list[str]:
    """``now`` and where the day and hour windows start at ``now`` (as ``window_start`` says)."""
    day, hour = window_start("day", now), window_start("hour", now)
    assert day is not None
    assert hour is not None
    return [_seconds(now), _seconds(day), _seconds(hour)]


def _budget(name: str, reply: Sequence[str]) -> Budget:
    cap, per, spent, reserved = reply
    return Budget(name, float(cap), per or None, float(spent), float(reserved))


class RedisMoney:
    """Mixed into :class:`~prism_async.ledger.RedisLedger` (which provides ``prefix``,
    ``_redis`` and ``_retry``)."""

    prefix: str

    def _redis(self) -> contextlib.AbstractAsyncContextManager[redis.Redis]:
        raise NotImplementedError  # pragma: no cover - RedisLedger's

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError  # pragma: no cover - RedisLedger's

    def _money(self, name: str) -> str:
        return f"{self.prefix}money:{name}"

    def _budget_keys(self, name: str) -> list[str]:
        """What ``budget_of`` reads: the budget, its spent zset, the totals, its held hash and
        the prices (a probe counts at its shape's)."""
        return [
            self._money(f"budget:{name}"),
            self._money(f"spent:{name}"),
            self._money("totals"),
            self._money(f"held:{name}"),
            self._money("prices"),
        ]

    async def _eval(self, script: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run a script (EVALSHA; loaded on a server that lacks it), retried while Redis cannot
        be reached (then :class:`~prism_async.LedgerUnavailableError`)."""

        async def once() -> Any:
            async with self._redis() as client:
                return await client.register_script(script)(keys, args, client=client)

        return await self._retry(once)

    async def _call(self, command: Callable[[redis.Redis], Awaitable[T]]) -> T:
        """One command on the pool, retried while Redis cannot be reached."""

        async def once() -> T:
            async with self._redis() as client:
                return await command(client)

        return await self._retry(once)

    async def add_charge(self, charge: Charge) -> bool:
        """Record a charge once per id; drop its reservation; learn its prices (one script)."""
        base = base_of(charge.shape) if charge.count > 0 else None
        keys = [
            self._money("charges"),
            self._money("charges:at"),
            self._money("reservations"),
            self._money("prices"),
            self._money("totals"),
            self._money(f"spent:{charge.budget or ''}"),
        ]
        args = [
            self.prefix,
            charge.id,
            _seconds(charge.at),
            charge_to_json(charge),
            _number(charge.credits),
            charge.shape,
            charge.budget or "",
            base or "",
            _number(charge.credits / charge.count) if base else "",
        ]
        return bool(await self._eval(scripts.ADD_CHARGE, keys, args))

    async def price(self, shape: str) -> tuple[float, int] | None:
        """The latest price learnt for a shape and how many charges taught it."""
        found = await self._call(lambda c: c.hget(self._money("prices"), shape))
        if found is None:
            return None
        credits, samples = cast(str, found).split(" ")
        return float(credits), int(samples)

    async def put_budget(self, name: str, max_credits: float, per: str | None) -> None:
        """Create or change a budget (its charges are kept)."""
        fields: dict[FieldT, EncodableT] = {"max": _number(max_credits), "per": per or ""}
        await self._call(lambda c: c.hset(self._money(f"budget:{name}"), mapping=fields))

    async def budget(self, name: str) -> Budget | None:
        """A budget with its spent (within its window) and reserved credits now."""
        args = [name, *_clock(datetime.now(UTC))]
        reply = await self._eval(scripts.BUDGET, self._budget_keys(name), args)
        return None if reply is None else _budget(name, reply)

    async def reserve(self, reservation: Reservation, now: datetime) -> tuple[str, Budget | None]:
        """Hold a reservation's credits if they fit (one script; see ``Money.reserve``)."""
        r = reservation
        keys = [
            *self._budget_keys(r.budget),
            self._money("reservations"),
            self._money(f"probes:{r.charge.shape}"),
        ]
        args = [
            r.budget,
            *_clock(now),
            r.id,
            _number(r.credits),
            "1" if r.probe else "0",
            "-" if r.expires is None else _seconds(r.expires),
            reservation_to_json(r),
            uuid.uuid4().hex,  # the same for each retry of this call
            r.charge.shape,
            "-" if r.probe_until is None else _seconds(r.probe_until),
        ]
        reply = await self._eval(scripts.RESERVE, keys, args)
        return str(reply[0]), (_budget(r.budget, reply[1:]) if len(reply) > 1 else None)

    async def release(self, reservation_id: str) -> None:
        """Drop a reservation (one script: its budget's and its shape's indexes too)."""
        keys = [self._money("reservations")]
        await self._eval(scripts.RELEASE, keys, [self.prefix, reservation_id])

    async def reservations(self) -> AsyncIterator[Reservation]:
        """Every reservation held."""
        docs = await self._call(lambda c: c.hvals(self._money("reservations")))
        for doc in cast(list[str], docs):
            yield reservation_from_json(doc)

    async def charges(self, since: datetime | None = None) -> AsyncIterator[Charge]:
        """Every charge accepted at or after ``since``, oldest first (pages of 500)."""
        keys = [self._money("charges"), self._money("charges:at")]
        start = "-inf" if since is None else _seconds(since)
        after = ""
        while True:
            page = [start, after, str(_PAGE)]
            reply = await self._eval(scripts.CHARGES, keys, page)
            ids, docs = cast(tuple[list[str], list[str | None]], reply)
            for doc in docs:
                if doc is not None:
                    yield charge_from_json(doc)
            if len(ids) < _PAGE:
                return
            after = ids[-1]

    async def pause_paid(self, until: datetime) -> None:
        """Pause paid POSTs fleet-wide until ``until`` (and forget any probe's lease)."""
        fields: dict[FieldT, EncodableT] = {"until": _seconds(until), "probe": ""}
        await self._call(lambda c: c.hset(self._money("pause"), mapping=fields))

    async def clear_paid_pause(self) -> None:
        """End the 402 pause."""
        await self._call(lambda c: c.delete(self._money("pause")))

    async def admit_paid(self, now: datetime, probe_lease: float) -> tuple[str, datetime | None]:
        """Open, paused (until when) or the one probe: one script, which writes only to claim
        the probe."""
        args = [_seconds(now), _number(now.timestamp() + probe_lease)]
        reply = await self._eval(scripts.ADMIT, [self._money("pause")], args)
        return str(reply[0]), (_moment(reply[1]) if len(reply) > 1 else None)
