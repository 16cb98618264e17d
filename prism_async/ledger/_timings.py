"""What a ledger keeps of time: the learnt durations of generations (seconds from
``created_at`` to ``completed_at``), by key (e.g. a generation's shape), shared by every
process using the ledger. The poll scheduler learns from them when to poll.
:class:`~prism_async.ledger.Ledger` inherits it.

Each key keeps its :data:`DURATION_WINDOW` most recent samples, and the ledger at most
:data:`DURATION_KEYS` keys (those written least recently are dropped beyond it). A backend
provides the two primitives, :meth:`Timings.add_durations` being atomic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._errors import InvalidRequestError

__all__ = ["DURATION_KEYS", "DURATION_WINDOW", "Timings", "check_samples"]

DURATION_WINDOW = 64
"""Samples kept per key (the most recent)."""
DURATION_KEYS = 1000
"""Keys kept; beyond it, those written least recently are dropped (with their samples)."""


def check_samples(samples: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """``samples`` as ``(key, seconds)`` pairs of a string and a finite float.

    Raises:
        InvalidRequestError: a key that is not a string, seconds that are not a finite number.
    """
    checked: list[tuple[str, float]] = []
    for key, seconds in samples:
        if not isinstance(key, str):
            raise InvalidRequestError("samples", f"a key must be a string; got {key!r}")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
        ):
            raise InvalidRequestError("samples", f"seconds must be finite; got {seconds!r}")
        checked.append((key, float(seconds)))
    return checked


class Timings:
    """Learnt generation durations (see the module docstring)."""

    DURATION_WINDOW: int = DURATION_WINDOW
    """Samples kept per key (a backend reads it from the ledger object, at each write)."""
    DURATION_KEYS: int = DURATION_KEYS
    """Keys kept (a backend reads it from the ledger object, at each write)."""

    async def add_durations(self, samples: Sequence[tuple[str, float]]) -> None:
        """Append samples ``(key, seconds)`` in one step, in order (the last is the most
        recent); each key keeps its :attr:`DURATION_WINDOW` most recent; at most
        :attr:`DURATION_KEYS` keys (the least recently written dropped)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no durations")

    async def durations(self, key: str) -> list[float]:
        """The samples kept for ``key``, most recent first (``[]`` when none)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no durations")
