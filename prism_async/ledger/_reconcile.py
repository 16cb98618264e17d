"""Reconciliation: which generations of the account's history belong to ambiguous keys.

Pure functions over rows and history items (no I/O): the rules in :mod:`prism_async.ledger._durable`
read the ledger and the history, call these, and write what they decide.

Requests with the same fingerprint are interchangeable: any one-to-one assignment of their
candidates is correct. So ambiguous keys sharing a fingerprint share that fingerprint's
unclaimed candidates, first sent first, each taking the earliest candidates created inside its
own window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from attrs import frozen

from ..models.assets import Asset
from ._model import Submission

__all__ = ["RECONCILE_SLACK", "Assignment", "assign", "sent_at", "window"]

RECONCILE_SLACK = timedelta(minutes=2)
"""Clock skew allowed on either side of the reconciliation window."""


def sent_at(row: Submission) -> datetime:
    """When the row's current attempt was sent (or first seen)."""
    return row.sent_at or row.created_at


def window(row: Submission, timeout: float) -> tuple[datetime, datetime]:
    """When the generations of ``row``'s POST can have been created: from 2 minutes before it
    was sent to 2 minutes after its timeout."""
    sent = sent_at(row)
    return sent - RECONCILE_SLACK, sent + timedelta(seconds=timeout) + RECONCILE_SLACK


def count_of(row: Submission) -> int:
    """How many videos ``row`` asked for (an omitted count is one)."""
    return int(row.request.get("count") or 1)


@frozen
class Assignment:
    """What reconciliation found for one key."""

    ids: tuple[str, ...]
    """The generations assigned to it: all it asked for, or none."""
    available: int
    """Unassigned candidates inside its window (after earlier keys took theirs)."""


def assign(
    rows: Sequence[Submission], candidates: Sequence[Asset], timeout: float
) -> dict[str, Assignment]:
    """Share ``candidates`` (history items of the same prompt and model, claimed by no other
    key) among ``rows`` (ambiguous keys of one fingerprint).

    First sent first: each key takes, in creation order, the ids it salvaged from its own
    answer plus the earliest free candidates inside its window, but only when they make up the
    whole ``count`` it asked for; a key that cannot be completed takes nothing, leaving its
    candidates to the keys after it.
    """
    pool = sorted((c.created_at, c.id) for c in candidates if c.created_at is not None)
    rank = {generation_id: n for n, (_, generation_id) in enumerate(pool)}
    free = set(rank)
    result: dict[str, Assignment] = {}
    for row in sorted(rows, key=lambda r: (sent_at(r), r.key)):
        low, high = window(row, timeout)
        fits = [i for created, i in pool if i in free and low <= created <= high]
        own = [i for i in row.generation_ids if i in free]
        chosen = own + [i for i in fits if i not in own][: count_of(row) - len(own)]
        if len(own) == len(row.generation_ids) and len(chosen) == count_of(row):
            free.difference_update(chosen)
            result[row.key] = Assignment(tuple(sorted(chosen, key=rank.__getitem__)), len(fits))
        else:  # short, or an id salvaged from its answer is not in the history (yet)
            result[row.key] = Assignment((), len(fits))
    return result
