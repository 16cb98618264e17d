"""The money primitives of :class:`~prism_async.ledger.SQLiteLedger`: charges, prices, budgets,
reservations and the 402 pause, each one statement or one transaction (so atomic across every
process sharing the file)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ._codec import charge_from_json, charge_to_json, reservation_from_json, reservation_to_json
from ._model import Budget, Charge, Reservation
from ._money import window_start
from ._prices import base_of

__all__ = ["MONEY_SCHEMA", "SQLiteMoney"]

T = TypeVar("T")

MONEY_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY, at REAL NOT NULL, budget TEXT, credits REAL NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_at ON charges (at);
CREATE INDEX IF NOT EXISTS charges_budget ON charges (budget, at, credits);
CREATE TABLE IF NOT EXISTS prices (
    shape TEXT PRIMARY KEY, credits REAL NOT NULL, samples INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS budgets (
    name TEXT PRIMARY KEY, max_credits REAL NOT NULL, per TEXT, spent REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY, budget TEXT NOT NULL, credits REAL NOT NULL, probe_shape TEXT,
    probe_until REAL, expires REAL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pauses (name TEXT PRIMARY KEY, until REAL NOT NULL, probe_until REAL);
"""
_LEARN = (
    "INSERT INTO prices (shape, credits, samples) VALUES (?, ?, 1) ON CONFLICT (shape) "
    "DO UPDATE SET credits = excluded.credits, samples = samples + 1"
)
_PAGE = 500


def _budget(db: sqlite3.Connection, name: str, now: float) -> Budget | None:
    sql = "SELECT max_credits, per, spent FROM budgets WHERE name = ?"
    row = db.execute(sql, (name,)).fetchone()
    if row is None:
        return None
    start = window_start(row["per"], datetime.fromtimestamp(now, tz=UTC))
    spent = row["spent"]  # a lifetime cap: its running total
    if start is not None:  # a rolling window: the covering index sums it
        spent = db.execute(
            "SELECT coalesce(sum(credits), 0) FROM charges WHERE budget = ? AND at >= ?",
            (name, start.timestamp()),
        ).fetchone()[0]
    reserved = db.execute(  # a probe counts at its shape's price once that is learnt
        "SELECT coalesce(sum(CASE WHEN r.probe_shape IS NULL THEN r.credits "
        "ELSE coalesce(p.credits, 0) END), 0) FROM reservations r "
        "LEFT JOIN prices p ON p.shape = r.probe_shape "
        "WHERE r.budget = ? AND (r.expires IS NULL OR r.expires > ?)",
        (name, now),
    ).fetchone()[0]
    return Budget(name, row["max_credits"], row["per"], float(spent), float(reserved))


def _reserve(
    db: sqlite3.Connection, reservation: Reservation, now: float
) -> tuple[str, Budget | None]:
    r = reservation
    budget = _budget(db, r.budget, now)
    if budget is None:
        return "refused", None
    held = db.execute("SELECT 1 FROM reservations WHERE id = ?", (r.id,)).fetchone()
    if held is not None:
        return "held", budget  # this submission holds its credits already
    used = budget.spent + budget.reserved
    if r.probe:
        shape = r.charge.shape
        priced = db.execute("SELECT 1 FROM prices WHERE shape = ?", (shape,)).fetchone()
        other = db.execute(
            "SELECT 1 FROM reservations WHERE probe_shape = ? AND probe_until > ? AND "
            "(expires IS NULL OR expires > ?)",
            (shape, now, now),
        ).fetchone()
        # (priced since it was quoted: the caller quotes again)
        fits = priced is None and other is None and used < budget.max_credits
    else:
        fits = used + r.credits <= budget.max_credits + 1e-9
    if fits:
        db.execute(
            "INSERT INTO reservations "
            "(id, budget, credits, probe_shape, probe_until, expires, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                r.id,
                r.budget,
                r.credits,
                r.charge.shape if r.probe else None,
                None if r.probe_until is None else r.probe_until.timestamp(),
                None if r.expires is None else r.expires.timestamp(),
                reservation_to_json(r),
            ),
        )
    return ("reserved" if fits else "refused"), budget


def _add_charge(db: sqlite3.Connection, charge: Charge, base: tuple[str, float] | None) -> bool:
    added = db.execute(
        "INSERT OR IGNORE INTO charges (id, at, budget, credits, data) VALUES (?, ?, ?, ?, ?)",
        (charge.id, charge.at.timestamp(), charge.budget, charge.credits, charge_to_json(charge)),
    ).rowcount
    db.execute("DELETE FROM reservations WHERE id = ?", (charge.id,))
    if added:
        if charge.budget is not None:
            sql = "UPDATE budgets SET spent = spent + ? WHERE name = ?"
            db.execute(sql, (charge.credits, charge.budget))
        db.execute(_LEARN, (charge.shape, charge.credits))
        if base is not None:
            db.execute(_LEARN, base)
    return bool(added)


def _admit(db: sqlite3.Connection, now: float, lease: float) -> tuple[str, datetime | None]:
    row = db.execute("SELECT until, probe_until FROM pauses WHERE name = 'paid'").fetchone()
    if row is None:
        return "open", None
    if row["until"] > now:
        return "paused", datetime.fromtimestamp(row["until"], tz=UTC)
    if row["probe_until"] is not None and row["probe_until"] > now:
        return "paused", datetime.fromtimestamp(row["probe_until"], tz=UTC)
    db.execute("UPDATE pauses SET probe_until = ? WHERE name = 'paid'", (now + lease,))
    return "probe", None


class SQLiteMoney:
    """Mixed into :class:`~prism_async.ledger.SQLiteLedger` (which provides ``_run``/``_write``)."""

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # pragma: no cover - SQLiteLedger's

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # pragma: no cover - SQLiteLedger's

    async def add_charge(self, charge: Charge) -> bool:
        base = None
        base_shape = base_of(charge.shape)
        if base_shape is not None and charge.count > 0:
            base = (base_shape, charge.credits / charge.count)
        return await self._write(lambda db: _add_charge(db, charge, base))

    async def price(self, shape: str) -> tuple[float, int] | None:
        def read(db: sqlite3.Connection) -> tuple[float, int] | None:
            sql = "SELECT credits, samples FROM prices WHERE shape = ?"
            row = db.execute(sql, (shape,)).fetchone()
            return None if row is None else (float(row["credits"]), int(row["samples"]))

        return await self._run(read)

    async def put_budget(self, name: str, max_credits: float, per: str | None) -> None:
        sql = (  # a new budget's running total starts from the charges made under its name
            "INSERT INTO budgets (name, max_credits, per, spent) VALUES (?, ?, ?, "
            "(SELECT coalesce(sum(credits), 0) FROM charges WHERE budget = ?)) "
            "ON CONFLICT (name) DO UPDATE SET max_credits = excluded.max_credits, "
            "per = excluded.per"
        )
        await self._write(lambda db: db.execute(sql, (name, max_credits, per, name)))

    async def budget(self, name: str) -> Budget | None:
        now = datetime.now(UTC).timestamp()
        return await self._run(lambda db: _budget(db, name, now))

    async def reserve(self, reservation: Reservation, now: datetime) -> tuple[str, Budget | None]:
        return await self._write(lambda db: _reserve(db, reservation, now.timestamp()))

    async def release(self, reservation_id: str) -> None:
        sql = "DELETE FROM reservations WHERE id = ?"
        await self._write(lambda db: db.execute(sql, (reservation_id,)))

    async def reservations(self) -> AsyncIterator[Reservation]:
        rows = await self._run(lambda db: db.execute("SELECT data FROM reservations").fetchall())
        for (data,) in rows:
            yield reservation_from_json(data)

    async def charges(self, since: datetime | None = None) -> AsyncIterator[Charge]:
        start = float("-inf") if since is None else since.timestamp()
        after: tuple[float, str] = (start, "")  # (at, id) of the last row read; "" < any id
        while True:

            def page(db: sqlite3.Connection, after: tuple[float, str] = after) -> list[Any]:
                sql = (
                    "SELECT at, id, data FROM charges WHERE at >= ? AND "
                    f"(at > ? OR (at = ? AND id > ?)) ORDER BY at, id LIMIT {_PAGE}"
                )
                return db.execute(sql, (start, after[0], *after)).fetchall()

            rows = await self._run(page)
            for row in rows:
                yield charge_from_json(row["data"])
            if len(rows) < _PAGE:
                return
            after = (rows[-1]["at"], rows[-1]["id"])

    async def pause_paid(self, until: datetime) -> None:
        sql = (
            "INSERT INTO pauses (name, until, probe_until) VALUES ('paid', ?, NULL) "
            "ON CONFLICT (name) DO UPDATE SET until = excluded.until, probe_until = NULL"
        )
        await self._write(lambda db: db.execute(sql, (until.timestamp(),)))

    async def clear_paid_pause(self) -> None:
        await self._write(lambda db: db.execute("DELETE FROM pauses WHERE name = 'paid'"))

    async def admit_paid(self, now: datetime, probe_lease: float) -> tuple[str, datetime | None]:
        def paused(db: sqlite3.Connection) -> bool:
            return db.execute("SELECT 1 FROM pauses WHERE name = 'paid'").fetchone() is not None

        if not await self._run(paused):  # the common case: one read, no write
            return "open", None
        return await self._write(lambda db: _admit(db, now.timestamp(), probe_lease))
