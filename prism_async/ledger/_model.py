"""What a ledger keeps: one :class:`Submission` per key, one :class:`GenerationRecord` per id.

Plain frozen attrs classes; no storage code (the backends turn them into rows).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any

from attrs import field, frozen

__all__ = [
    "Budget",
    "Charge",
    "GenerationRecord",
    "Owner",
    "Reservation",
    "SpendRow",
    "Submission",
    "SubmissionState",
]


class SubmissionState:
    """The states of a submission (see the README's "Durable runs")."""

    SENDING = "sending"
    """Committed before the POST left; its outcome is not recorded yet."""
    ACCEPTED = "accepted"
    """The API answered 2xx; the generation ids are recorded."""
    REJECTED = "rejected"
    """A definitive refusal: nothing was queued. The same key may be sent again."""
    AMBIGUOUS = "ambiguous"
    """It may have been queued (and charged): reconcile or resolve it before anything else."""
    RECONCILED = "reconciled"
    """Was ambiguous; its generation ids were found (or given by hand)."""
    ALL = (SENDING, ACCEPTED, REJECTED, AMBIGUOUS, RECONCILED)
    DONE = frozenset({ACCEPTED, RECONCILED})
    """States whose generation ids are known: a later call returns them, sends nothing."""


@frozen
class Submission:
    """One business intent (a key) and what became of it. Never holds the API key or a URL."""

    key: str
    """The caller's key, e.g. ``campaign-42/clip-7``."""
    kind: str
    """``generation`` (``generations.create``) or ``template`` (``templates.generate``)."""
    state: str
    """One of :class:`SubmissionState`."""
    attempt: int
    """How many times it was (or is being) sent: a rejected key may be sent again."""
    fingerprint: str
    """A hash of the request body as sent: the same key with another request is a conflict."""
    created_at: datetime
    """When the key was first seen."""
    updated_at: datetime
    """When the row last changed."""
    generation_ids: tuple[str, ...] = ()
    """The generations it queued, once known."""
    credits_charged: float | None = None
    """What the API said it charged."""
    sent_at: datetime | None = None
    """When the current attempt's POST left (the row was committed just before)."""
    error: str | None = None
    """Why it was rejected or is ambiguous (and what reconciliation found)."""
    request: dict[str, Any] = field(factory=dict)
    """What reconciliation needs: ``prompt``, ``model_name``, ``count`` (or ``template_id``)."""
    lease_owner: str | None = None
    """The process sending it (``host:pid:start``), while ``sending``."""
    lease_expires: datetime | None = None
    """When that lease ends unless renewed."""
    version: int = 0
    """Bumped by every change: the compare-and-set token."""

    @property
    def done(self) -> bool:
        """Whether its generation ids are known (``accepted`` or ``reconciled``)."""
        return self.state in SubmissionState.DONE

    @property
    def labels(self) -> dict[str, str]:
        """The labels it was submitted with (kept in ``request``)."""
        labels = self.request.get("labels")
        return dict(labels) if isinstance(labels, dict) else {}


@frozen
class GenerationRecord:
    """What the ledger knows of one generation: its last known status and its download."""

    id: str
    """The generation id."""
    key: str | None = None
    """The submission that queued it."""
    status: str | None = None
    """Last known status (terminal ones are recorded by waits)."""
    error: str | None = None
    """Why it failed."""
    completed_at: datetime | None = None
    """When it completed."""
    path: str | None = None
    """Where its video was downloaded (after the file was renamed into place)."""
    size: int | None = None
    """The downloaded file's size in bytes."""


def _stat(pid: int) -> tuple[str, str] | None:
    """A process's state letter and start time (clock ticks since boot), on Linux; else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (fields[0].decode(), fields[19].decode()) if len(fields) > 19 else None


@frozen
class Owner:
    """A process that may hold a lease: host, pid and start time (a reused pid is another)."""

    host: str
    pid: int
    start: str

    @classmethod
    def me(cls) -> Owner:
        """This process."""
        pid = os.getpid()
        stat = _stat(pid)
        return cls(socket.gethostname(), pid, stat[1] if stat else "?")

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner a lease names, or None when it is not one of ours."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2])

    def is_gone(self) -> bool:
        """Whether this owner is a process on this host that no longer runs (or whose pid now
        belongs to another process). Owners on other hosts are never known to be gone."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # it exists, under another user
        stat = _stat(self.pid)
        if stat is None:
            return False  # no /proc: the pid exists, so take it as alive
        state, start = stat
        return state in ("Z", "X") or (self.start != "?" and start != self.start)


def lease_is_alive(submission: Submission, now: datetime) -> bool:
    """Whether a ``sending`` submission's lease still holds: not expired, and its owner not a
    process of this host that has died (a resumed script need not wait for the expiry)."""
    if submission.lease_expires is None or submission.lease_expires <= now:
        return False
    owner = Owner.parse(submission.lease_owner or "")
    return owner is not None and not owner.is_gone()


@frozen
class Charge:
    """One accepted paid submission as spend reports and budgets count it (one per ``id``)."""

    id: str
    """Its ledger key, or ``~<random>`` for a submission made without a key."""
    at: datetime
    """When the API accepted it (a budget's rolling window counts from here)."""
    credits: float
    """What it was charged (the API's figure; the price seen for its shape when unknown)."""
    kind: str
    """``generation`` or ``template``."""
    model: str
    """The model name, or the template id of a template submission."""
    shape: str
    """The priced shape: the request fields that set the price (see ``prism.quote``)."""
    count: int = 1
    """Videos it queued (asked for)."""
    labels: dict[str, str] = field(factory=dict)
    """The submission's labels."""
    budget: str | None = None
    """The budget it was made under, if any."""

    @property
    def run(self) -> str | None:
        """The run a key belongs to: what precedes its last ``/`` (None without one)."""
        if self.id.startswith("~") or "/" not in self.id:
            return None
        return self.id.rsplit("/", 1)[0]


@frozen
class Reservation:
    """Credits held against a budget while a paid POST is in flight (or its key unsettled)."""

    id: str
    """The ledger key of the submission, or ``~<random>`` without a key."""
    budget: str
    """The budget it holds credits of."""
    credits: float
    """The credits held: the quoted price (0 for a probe of an unknown price)."""
    at: datetime
    """When it was made."""
    charge: Charge
    """What it becomes once accepted (``credits`` then the real charge)."""
    probe: bool = False
    """A probe of a shape whose price is unknown: one at a time per shape (until
    ``probe_until``); it counts at its shape's price once that is learnt."""
    probe_until: datetime | None = None
    """Until when a probe keeps the other probes of its shape waiting (its sender's request
    timeout: a probe whose process died stops blocking then)."""
    expires: datetime | None = None
    """When an unkeyed reservation lapses (a keyed one holds until its key is settled)."""
    owner: str | None = None
    """The process that made it (``host:pid:start``): if it died before its key's row was
    written, nothing was sent, and the reservation is released."""


@frozen
class Budget:
    """A cap on the credits the submissions made under it are charged."""

    name: str
    max_credits: float
    per: str | None
    """None for a lifetime cap; ``"day"`` or ``"hour"`` for a rolling 24 h / 60 min window."""
    spent: float = 0.0
    """Credits charged to it (within the window, for a rolling budget)."""
    reserved: float = 0.0
    """Credits held by submissions in flight or not settled yet."""

    @property
    def available(self) -> float:
        """What may still be reserved: ``max_credits - spent - reserved`` (never below 0)."""
        return max(0.0, self.max_credits - self.spent - self.reserved)


@frozen
class SpendRow:
    """One group of ``ledger.spend(by=...)``."""

    group: str
    """The run, ``key=value`` label, model (or template id), UTC day or budget; ``(none)``."""
    credits: float
    generations: int
    """Videos the group's submissions queued."""
    submissions: int
