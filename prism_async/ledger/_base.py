"""The :class:`Ledger` interface: a few atomic primitives every backend provides.

The rules (who may send, what a later call with the same key does) are the SDK's, the same for
every backend (:mod:`prism_async.ledger._durable`); a backend only stores rows and offers one atomic
compare-and-set (:meth:`Ledger.swap`).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from types import TracebackType

import attrs

from .._errors import InvalidRequestError
from ._model import GenerationRecord, Submission, SubmissionState, lease_is_alive
from ._money import Money
from ._spending import settle_money
from ._timings import Timings

__all__ = ["Ledger", "check_reconciliation"]


def check_reconciliation(
    window: float | None, interval: float | None
) -> tuple[float | None, float | None]:
    """``reconcile_window`` and ``reconcile_interval`` checked (None stays None).

    Raises:
        InvalidRequestError: a window that is not positive, an interval outside (0, 60].
    """
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int | float) or not window > 0
    ):
        raise InvalidRequestError("reconcile_window", "must be positive seconds")
    if interval is not None and (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not 0 < interval <= 60
    ):
        raise InvalidRequestError("reconcile_interval", "must be seconds in (0, 60]")
    return (
        None if window is None else float(window),
        None if interval is None else float(interval),
    )


class Ledger(Money, Timings, abc.ABC):
    """Where durable submissions are kept (:class:`SQLiteLedger`, or your own backend).

    Pass one to ``PrismClient(ledger=...)``; then ``key=`` on ``generations.create`` and
    ``templates.generate`` makes a submission durable: its row is committed as ``sending``
    before the POST leaves, and a later call with the same key (after a crash, in a retried
    job, on another machine sharing the ledger) never sends it again.
    """

    reconcile_window: float = 1800.0
    """Seconds after an ambiguous key was sent during which its generations may still show up
    in the history (the API may list one only once it has finished). Until then the key waits;
    once it has closed with nothing found for the key, the key is ``rejected`` and may be sent
    again."""
    reconcile_interval: float = 30.0
    """Seconds between two reconciliations of a waiting ambiguous key (at most 60)."""

    def configure_reconciliation(
        self, *, window: float | None = None, interval: float | None = None
    ) -> None:
        """Set :attr:`reconcile_window` and :attr:`reconcile_interval` (None keeps one).

        Raises:
            InvalidRequestError: a window that is not positive, an interval outside (0, 60].
        """
        window, interval = check_reconciliation(window, interval)
        if window is not None:
            self.reconcile_window = window
        if interval is not None:
            self.reconcile_interval = interval

    # -- the primitives a backend provides ---------------------------------------------------

    @abc.abstractmethod
    async def get(self, key: str) -> Submission | None:
        """The submission recorded for ``key``, or None."""

    @abc.abstractmethod
    def list(self, state: str | None = None) -> AsyncIterator[Submission]:
        """Every submission (in the order keys were first seen), or those in ``state``."""

    @abc.abstractmethod
    async def insert(self, submission: Submission) -> bool:
        """Add a submission for a new key; False (and no change) when the key exists."""

    @abc.abstractmethod
    async def swap(self, expected: Submission, new: Submission) -> bool:
        """Atomically replace ``expected`` by ``new`` if the stored row is still ``expected``
        (same ``version``); False (and no change) otherwise."""

    @abc.abstractmethod
    async def record(self, record: GenerationRecord) -> None:
        """Add or update what is known of one generation (None fields keep their value)."""

    @abc.abstractmethod
    async def generation(self, generation_id: str) -> GenerationRecord | None:
        """What is known of one generation, or None."""

    @abc.abstractmethod
    async def claimed_ids(self) -> set[str]:
        """Every generation id some submission holds (reconciliation never claims them)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the backend's resources."""

    async def changes(
        self, after: int = 0, *, limit: int = 500
    ) -> tuple[Sequence[Submission], int]:
        """The submissions written (inserted or swapped) since the change cursor ``after``.

        A feed for processes that follow the ledger (``prism-async track``): each write gives
        the row a new change number, larger than any before it, so a row comes back once per
        read, with its latest content, in the order of its latest change. Pass the returned
        cursor to the next call; it is ``after`` itself when nothing changed. ``0`` reads from
        the beginning. Generation records (:meth:`record`) are not submissions: they do not
        appear.

        Args:
            after: the cursor a previous call returned, or 0.
            limit: the most rows returned (the next call returns the rest).

        Returns:
            The rows, oldest change first, and the cursor of the last one.
        """
        raise NotImplementedError(f"{type(self).__name__} has no change feed")

    # -- built on them (a backend may do them in fewer round trips) --------------------------

    async def get_many(self, keys: Sequence[str]) -> dict[str, Submission]:
        """The submissions recorded for ``keys`` (unknown keys are left out)."""
        found = {key: await self.get(key) for key in dict.fromkeys(keys)}
        return {key: row for key, row in found.items() if row is not None}

    async def record_many(self, records: Sequence[GenerationRecord]) -> None:
        """:meth:`record` each of ``records``, in order."""
        for record in records:
            await self.record(record)

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def resolve(
        self,
        key: str,
        *,
        generation_ids: Sequence[str] | None = None,
        not_sent: bool = False,
    ) -> Submission:
        """Settle an ambiguous (or dead ``sending``) submission by hand.

        ``generation_ids=[...]`` says what it queued (it becomes ``reconciled``);
        ``not_sent=True`` says nothing was queued (it becomes ``rejected``, so the key may be
        sent again). Exactly one of the two.

        Raises:
            InvalidRequestError: neither or both given, an unknown key, or a key that is not
                ambiguous (or ``sending``).
        """
        if (generation_ids is None) == (not not_sent):
            raise InvalidRequestError("generation_ids", "give generation_ids or not_sent=True")
        ids = tuple(generation_ids or ())
        if generation_ids is not None and (
            not ids or not all(isinstance(i, str) and i.strip() for i in ids)
        ):
            raise InvalidRequestError("generation_ids", "must be non-empty generation ids")
        while True:
            current = await self.get(key)
            if current is None:
                raise InvalidRequestError("key", f"no submission has the key {key!r}")
            if current.state == SubmissionState.SENDING and lease_is_alive(
                current, datetime.now(UTC)
            ):
                raise InvalidRequestError("key", f"{key!r} is being sent by a live process")
            if current.state not in (SubmissionState.AMBIGUOUS, SubmissionState.SENDING):
                raise InvalidRequestError(
                    "key", f"{key!r} is {current.state}, not ambiguous: nothing to resolve"
                )
            if not_sent and current.generation_ids:
                raise InvalidRequestError(
                    "not_sent",
                    f"{key!r} is known to have queued {', '.join(current.generation_ids)}: "
                    "resolve it with generation_ids",
                )
            if generation_ids is not None:
                new = attrs.evolve(
                    current,
                    state=SubmissionState.RECONCILED,
                    generation_ids=ids,
                    error="resolved by hand",
                )
            else:
                new = attrs.evolve(
                    current, state=SubmissionState.REJECTED, error="resolved by hand: not sent"
                )
            new = attrs.evolve(
                new,
                lease_owner=None,
                lease_expires=None,
                updated_at=datetime.now(UTC),
                version=current.version + 1,
            )
            if await self.swap(current, new):
                for generation_id in new.generation_ids if not not_sent else ():
                    await self.record(GenerationRecord(generation_id, key=key))
                await settle_money(self, new)  # its charge at the price seen, or its release
                return new
