"""Charges and reservations as JSON text, the same for every backend."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ._model import Charge, Reservation

__all__ = ["charge_from_json", "charge_to_json", "reservation_from_json", "reservation_to_json"]


def _charge_dict(charge: Charge) -> dict[str, Any]:
    return {
        "id": charge.id,
        "at": charge.at.timestamp(),
        "credits": charge.credits,
        "kind": charge.kind,
        "model": charge.model,
        "shape": charge.shape,
        "count": charge.count,
        "labels": charge.labels,
        "budget": charge.budget,
    }


def _charge(data: dict[str, Any]) -> Charge:
    return Charge(
        id=data["id"],
        at=datetime.fromtimestamp(data["at"], tz=UTC),
        credits=float(data["credits"]),
        kind=data["kind"],
        model=data["model"],
        shape=data["shape"],
        count=int(data.get("count", 1)),
        labels=dict(data.get("labels") or {}),
        budget=data.get("budget"),
    )


def _moment(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def charge_to_json(charge: Charge) -> str:
    """A charge as JSON text."""
    return json.dumps(_charge_dict(charge), sort_keys=True, separators=(",", ":"))


def charge_from_json(text: str | bytes) -> Charge:
    """A charge from :func:`charge_to_json`'s text."""
    return _charge(json.loads(text))


def reservation_to_json(reservation: Reservation) -> str:
    """A reservation as JSON text."""
    r = reservation
    data = {
        "id": r.id,
        "budget": r.budget,
        "credits": r.credits,
        "at": r.at.timestamp(),
        "probe": r.probe,
        "expires": None if r.expires is None else r.expires.timestamp(),
        "charge": _charge_dict(r.charge),
        "owner": r.owner,
        "probe_until": None if r.probe_until is None else r.probe_until.timestamp(),
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def reservation_from_json(text: str | bytes) -> Reservation:
    """A reservation from :func:`reservation_to_json`'s text."""
    data = json.loads(text)
    expires = data.get("expires")
    return Reservation(
        id=data["id"],
        budget=data["budget"],
        credits=float(data["credits"]),
        at=datetime.fromtimestamp(data["at"], tz=UTC),
        charge=_charge(data["charge"]),
        probe=bool(data.get("probe")),
        expires=None if expires is None else datetime.fromtimestamp(expires, tz=UTC),
        owner=data.get("owner"),
        probe_until=_moment(data.get("probe_until")),
    )
