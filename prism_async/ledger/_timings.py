"""What a ledger keeps of time: the learnt durations of generations (seconds from
``created_at`` to ``completed_at``), by key (e.g. a generation's shape), shared by every
process using the ledger. The poll scheduler learns from them when to poll.
:class:`~prism_async.ledger.Ledger` inherits it.

Each key keeps the :data:`DURATION_WINDOW` samples of the most recently *created* generations
(not the latest to finish: after a burst, those are its slowest), and the ledger at most
:data:`DURATION_KEYS` keys (those written least recently are dropped beyond it). A backend
provides the two primitives, :meth:`Timings.add_durations` being atomic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._errors import InvalidRequestError

__all__ = ["DURATION_KEYS", "DURATION_WINDOW", "Sample", "Timings", "check_samples"]

DURATION_WINDOW = 64
"""Samples kept per key (of the most recently created generations)."""
DURATION_KEYS = 1000
"""Keys kept; beyond it, those written least recently are dropped (with their samples)."""


Sample = tuple[str, float, float]
"""``(key, seconds, created)``: how long a generation took, and when it was created (Unix
seconds)."""


def _finite(value: object) -> bool:
    return (
        not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    )


def check_samples(samples: Sequence[Sample]) -> list[Sample]:
    """``samples`` as ``(key, seconds, created)``: a string and two finite floats.

    Raises:
        InvalidRequestError: a key that is not a string, a number that is not finite.
    """
    checked: list[Sample] = []
    for key, seconds, created in samples:
        if not isinstance(key, str):
            raise InvalidRequestError("samples", f"a key must be a string; got {key!r}")
        if not _finite(seconds) or not _finite(created):
            raise InvalidRequestError(
                "samples", f"seconds and created must be finite; got {seconds!r}, {created!r}"
            )
        checked.append((key, float(seconds), float(created)))
    return checked


class Timings:
    """Learnt generation durations (see the module docstring)."""

    DURATION_WINDOW: int = DURATION_WINDOW
    """Samples kept per key (a backend reads it from the ledger object, at each write)."""
    DURATION_KEYS: int = DURATION_KEYS
    """Keys kept (a backend reads it from the ledger object, at each write)."""

    async def add_durations(self, samples: Sequence[Sample]) -> None:
        """Add samples ``(key, seconds, created)`` in one step; each key keeps the
        :attr:`DURATION_WINDOW` most recently created; at most :attr:`DURATION_KEYS` keys (the
        least recently written dropped)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no durations")

    async def durations(self, key: str) -> list[float]:
        """The seconds kept for ``key``, the most recently created first (``[]`` when none)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no durations")
