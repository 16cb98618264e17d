"""When to poll: durations learnt from completed generations, and the schedule built on them.

A generation's *timing key* is what sets how long it takes: its request's priced shape less
the count (model, duration, resolution, audio, template: ``Shape.base``), known for the ids
this client created (:class:`Births`, which also remembers when) and, with a ledger, for the
ids its rows name (:func:`births_in`: the row's shape and when it was sent); any other id is
polled at once, and its status gives its creation and its key: the template it names, or
none. :class:`Durations` keeps the last :data:`WINDOW` durations
(``completed_at - created_at``) of each key, those of the latest *created* generations (not
the latest to finish: after a burst those are its slowest): recent data only (a drift
replaces the window),
and the schedule reads a low quantile of it (one freak short run moves it by one sample), so
outliers cost at most a poll or two, never a late detection. With a ledger the samples are
shared by every process using it (read when a key is first needed and every
:data:`REFRESH` seconds, written in the background, best effort: a ledger failure never
touches a wait).

:func:`next_delay` is the schedule. With enough history, completion becomes *plausible* at a
low quantile of the key's durations (90% of the shortest in the window); the first poll comes
one gap after that (counted from the generation's creation, so an old id is polled at once)
and the next ones one gap apart. A gap is the fixed backoff's at that age (:func:`fixed_gap`),
spread by the jitter as the backoff spreads it, but never over ``max_interval`` (once the
backoff has grown to it, the gap is spread below it): a generation that finishes after the
plausible point is noticed about as soon as the fixed backoff would notice it, never more than
``max_interval`` late, and the polls saved are those before it can be done (a typical one
costs about three requests instead of seven). Without history, or with ``learn=False``, it is
the policy's fixed backoff from the start of the wait; so it is for a *canary*, one wait per
key every :data:`CANARY_EVERY` ``max_interval``, which sees a drift to faster generations that
the others, polling late, would not (its duration then lowers the plausible point of the waits
that start after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..ledger import Ledger, Submission
    from ..ledger._timings import Sample
    from ..models.generations import Generation
    from ..polling import PollPolicy

__all__ = ["Births", "Durations", "births_in", "key_of_status", "next_delay"]

logger = logging.getLogger("prism_async")

WINDOW = 64
"""Durations kept per timing key (of the latest created generations)."""
MIN_SAMPLES = 5
"""Fewer than this and the key has no history yet (the fixed backoff is used)."""
MAX_KEYS = 1000
"""Timing keys kept in memory (the least recently used dropped beyond it)."""
REFRESH = 60.0
"""Seconds before a key's samples are read from the ledger again."""
MAX_BIRTHS = 50_000
"""Ids this client created whose birth it remembers (the oldest forgotten beyond it: a wait
on one then polls at once, which tells its age). About 150 bytes each."""
CANARY_EVERY = 10
"""One wait per timing key every this many ``max_interval`` ignores the history (a canary):
if generations became much faster, it finishes early and its duration lowers the plausible
point of every later wait (nothing else would poll early enough to see it)."""
LOOKUPS = 1000
"""Ids of one call looked up in the ledger at most."""
_LEDGER_TIMEOUT = 2.0


async def births_in(
    ledger: Ledger, ids: list[str], closed: Callable[[], bool]
) -> dict[str, tuple[str, float]]:
    """The timing key and creation (when it was sent) of the ids a ledger names (an id sent
    by another process: a resumed run, the tracker). Best effort, briefly; nothing for more
    than :data:`LOOKUPS` ids (they are polled at once instead); it stops once ``closed()``
    (no ledger call after the client closed it)."""
    from ..ledger._prices import base_of

    found: dict[str, tuple[str, float]] = {}
    if len(ids) > LOOKUPS:
        return found
    rows: dict[str, Submission | None] = {}
    try:
        async with asyncio.timeout(_LEDGER_TIMEOUT):
            for generation_id in ids:
                if closed():
                    break
                record = await ledger.generation(generation_id)
                if record is None or record.key is None:
                    continue
                if record.key not in rows:
                    rows[record.key] = await ledger.get(record.key)
                row = rows[record.key]
                shape = row.request.get("shape") if row is not None else None
                if row is not None and isinstance(shape, str):
                    born = (row.sent_at or row.created_at).timestamp()
                    found[generation_id] = (base_of(shape) or shape, born)
    except Exception as exc:  # best effort: the first poll then says how old it is
        logger.debug("could not look up when %d generations were sent: %s", len(ids), exc)
    return found


def key_of_status(generation: Generation) -> str:
    """The timing key of an id known only by its status: its template, or none."""
    if generation.template_id:
        return json.dumps(["template", generation.template_id])
    return json.dumps(["any"])


class Births:
    """When, and with which timing key, this client created its ids (bounded)."""

    def __init__(self, limit: int = MAX_BIRTHS) -> None:
        self._limit = limit
        self._births: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._keys: dict[str, str] = {}  # one copy of each key's text

    def note(self, ids: Iterable[str], key: str, born: float | None = None) -> None:
        """Remember that ``ids`` were created now (or at ``born``, wall-clock seconds)."""
        moment = time.time() if born is None else born
        key = self._keys.setdefault(key, key)
        if len(self._keys) > MAX_KEYS:
            self._keys = {key: key}
        for generation_id in ids:
            self._births[generation_id] = (key, moment)
        while len(self._births) > self._limit:
            self._births.popitem(last=False)

    def get(self, generation_id: str) -> tuple[str, float] | None:
        """The timing key and wall-clock birth of an id this client created, or None."""
        return self._births.get(generation_id)

    def forget(self, generation_id: str) -> None:
        """Its wait is over."""
        self._births.pop(generation_id, None)


class Durations:
    """How long generations take, per timing key (see the module docstring).

    Args:
        ledger: where the samples are shared, or None (this client's memory only).
    """

    def __init__(self, ledger: Ledger | None = None) -> None:
        self._ledger = ledger
        self._samples: OrderedDict[str, list[tuple[float, float]]] = OrderedDict()
        self._plausible: dict[str, float | None] = {}
        self._read: dict[str, float] = {}  # key -> when it was read from the ledger
        self._unsaved: list[Sample] = []
        self._wanted: set[str] = set()
        self._canaries: dict[str, float] = {}  # key -> when its last canary started
        self._sync: asyncio.Task[None] | None = None

    def plausible(self, key: str) -> float | None:
        """Seconds after creation from which a generation of ``key`` may be done; None while
        the key has too little history."""
        if key not in self._plausible:
            samples = self._samples.get(key)
            value = None
            if samples is not None and len(samples) >= MIN_SAMPLES:
                ordered = sorted(seconds for _, seconds in samples)
                value = ordered[int(0.01 * (len(ordered) - 1))] * 0.9
            self._plausible[key] = value
        if self._ledger is not None and key not in self._read:
            self._wanted.add(key)  # read it in the background; the next wait benefits
            self._start()
        return self._plausible[key]

    def canary(self, key: str, every: float) -> bool:
        """Whether a wait of ``key`` starting now is a canary (none for ``every`` seconds)."""
        now = time.monotonic()
        if now - self._canaries.get(key, -every) < every:
            return False
        self._canaries[key] = now
        if len(self._canaries) > MAX_KEYS:
            self._canaries = {key: now}
        return True

    def learn(self, key: str, seconds: float, created: float) -> bool:
        """One more generation of ``key``, created at ``created`` (Unix seconds), took
        ``seconds``. True when it halved the key's plausible point (generations became much
        faster: the waits planned on the old one should plan again)."""
        if not 0 < seconds < 86_400:
            return False
        before = self._plausible.get(key)
        self._add(key, [(created, seconds)])
        dropped = False
        if before is not None and seconds < before:  # (else the point cannot have dropped)
            after = self.plausible(key)
            dropped = after is not None and after < before / 2
        if self._ledger is not None:
            self._unsaved.append((key, seconds, created))
            del self._unsaved[: -10 * WINDOW]  # bounded while the ledger is away
            self._start()
        return dropped

    async def load(self, keys: Iterable[str]) -> None:
        """Read the ledger's samples of ``keys`` not read for :data:`REFRESH` seconds."""
        if self._ledger is None:
            return
        now = time.monotonic()
        for key in {key for key in keys if now - self._read.get(key, -REFRESH) >= REFRESH}:
            await self._read_key(key)

    async def aclose(self) -> None:
        """Write what is not written yet (best effort, briefly) and stop."""
        self._wanted.clear()
        sync = self._sync
        if sync is not None and not sync.done():
            await asyncio.wait({sync}, timeout=_LEDGER_TIMEOUT)
            sync.cancel()
            await asyncio.wait({sync}, timeout=_LEDGER_TIMEOUT)

    # -- inside ------------------------------------------------------------------------------

    def _add(self, key: str, values: Iterable[tuple[float, float]]) -> None:
        """Keep the :data:`WINDOW` latest created ``(created, seconds)`` of ``key`` (a heap:
        the earliest created goes first; after a burst, the last to finish are its slowest)."""
        samples = self._samples.pop(key, None) or []
        for value in values:
            heapq.heappush(samples, value)
            if len(samples) > WINDOW:
                heapq.heappop(samples)
        self._samples[key] = samples
        self._plausible.pop(key, None)
        while len(self._samples) > MAX_KEYS:
            dropped, _ = self._samples.popitem(last=False)
            self._plausible.pop(dropped, None)
            self._read.pop(dropped, None)

    async def _read_key(self, key: str) -> None:
        assert self._ledger is not None
        self._read[key] = time.monotonic()
        try:
            async with asyncio.timeout(_LEDGER_TIMEOUT):
                stored = await self._ledger.durations(key)
        except Exception as exc:  # best effort: memory is enough to wait well
            logger.debug("could not read the learnt durations of %s: %s", key, exc)
            return
        mine = [(created, value) for k, value, created in self._unsaved if k == key]
        self._samples.pop(key, None)  # the ledger's (the latest created first), then mine
        self._add(key, [(-float(rank), value) for rank, value in enumerate(stored)] + mine)

    def _start(self) -> None:
        if self._sync is None or self._sync.done():
            with contextlib.suppress(RuntimeError):  # no loop: nothing to share with yet
                self._sync = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self._ledger is not None
        while self._unsaved or self._wanted:
            if self._unsaved:
                batch, self._unsaved = self._unsaved, []
                try:
                    async with asyncio.timeout(_LEDGER_TIMEOUT):
                        await self._ledger.add_durations(batch)
                except Exception as exc:
                    logger.debug("could not share %d learnt durations: %s", len(batch), exc)
            if self._wanted:
                await self._read_key(self._wanted.pop())


def fixed_gap(policy: PollPolicy, age: float) -> float:
    """The fixed backoff's gap between polls (without jitter) ``age`` seconds after it began:
    the lag the policy accepts at that age, and so the learnt schedule's gap there."""
    gap, growth = min(policy.interval, policy.max_interval), policy.multiplier
    if growth <= 1.0 or gap >= policy.max_interval or age <= policy.initial_delay:
        return gap
    # the polls come at initial_delay + interval * (growth**k - 1) / (growth - 1): the k-th
    # one before ``age`` starts a gap of interval * growth**k (in closed form: a wait asks
    # this at every poll)
    steps = math.log1p((age - policy.initial_delay) * (growth - 1.0) / policy.interval)
    gap = policy.interval * growth ** math.floor(steps / math.log(growth))
    return min(gap, policy.max_interval)


def next_delay(
    policy: PollPolicy,
    *,
    polls: int,
    age: float | None,
    plausible: float | None,
) -> float:
    """Seconds until the next status request of a wait that made ``polls`` of them.

    Args:
        policy: the wait's policy.
        polls: status requests made so far.
        age: seconds since the generation was created, or None when unknown yet.
        plausible: :meth:`Durations.plausible` of its timing key, or None.
    """
    if policy.learn:
        if age is not None and plausible is not None:
            base = fixed_gap(policy, max(age, plausible))
            if base < policy.max_interval:  # spread as the fixed backoff spreads it
                gap = min(policy.jittered(base), policy.max_interval)
            else:  # spread below the bound
                gap = base * (1.0 - policy.jitter * random.random())
            return max(gap if polls else 0.0, plausible + gap - age)
        if polls == 0 and age is None:
            return 0.0  # its status says how old it is (an old id: done at once)
    if polls == 0:
        return policy.jittered(policy.initial_delay)
    return policy.delay(polls)
