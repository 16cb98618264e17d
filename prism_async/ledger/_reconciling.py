"""Reconciliation: settling keys that may have been queued without their ids being known.

The rules of :class:`~prism_async.ledger._durable.Durable` for ``ambiguous`` keys (and ``sending``
ones whose process died): look for their generations in the account's history (the sharing of
candidates among interchangeable keys is :func:`prism_async.ledger._reconcile.assign`), reject
a key whose window closed with nothing found, settle a template key from its webhook, and wait
until a key is settled (``prism.reconcile(key, wait=True)``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .._errors import InvalidRequestError, SubmissionInFlightError
from .._rules import QUERY_MIN_LENGTH
from ..models.assets import Asset
from ._base import Ledger
from ._model import Submission, SubmissionState, lease_is_alive
from ._reconcile import assign, count_of, sent_at, window

if TYPE_CHECKING:
    from ..webhooks import WebhookEvent

__all__ = ["DEAD_LEASE", "Reconciling"]

logger = logging.getLogger("prism_async.ledger")

S = SubmissionState


def _now() -> datetime:
    return datetime.now(UTC)


DEAD_LEASE = (
    "the process sending it stopped before its outcome was recorded: it may have been queued"
)


class Reconciling(abc.ABC):
    """The reconciliation rules, on a ledger, for :class:`~prism_async.ledger._durable.Durable`."""

    ledger: Ledger
    timeout: float

    @abc.abstractmethod
    async def _change(self, current: Submission, **changes: Any) -> Submission | None:
        """Swap ``current`` for a changed copy; the new row, or None if it changed meanwhile."""

    async def webhook_arrived(self, key: str, event: WebhookEvent) -> None:
        """A verified webhook named ``key``: it settles the key if its answer was lost."""
        current = await self.ledger.get(key)
        if current is None or current.kind != "template" or current.done:
            return
        if current.state == S.SENDING and lease_is_alive(current, _now()):
            return  # the answer is still on its way
        if current.state in (S.SENDING, S.AMBIGUOUS):
            ids = tuple(dict.fromkeys((*current.generation_ids, event.generation_id)))
            await self._change(
                current, state=S.RECONCILED, generation_ids=ids, error="settled by its webhook"
            )

    async def reconcile(
        self, key: str, search: Callable[[str], AsyncIterator[Asset]]
    ) -> Submission:
        """Look for an ambiguous prompt submission's generations in the account's history.

        Ambiguous keys of the same fingerprint share the candidates (first sent first), and
        every one of them that gets its whole ``count`` is settled in the same pass. A key
        whose window (:attr:`Ledger.reconcile_window`) has closed with nothing found for it
        becomes ``rejected``: nothing was queued, and it may be sent again.
        """
        current = await self.ledger.get(key)
        if current is None:
            raise InvalidRequestError("key", f"no submission has the key {key!r}")
        if current.state == S.SENDING:
            if lease_is_alive(current, _now()):
                raise SubmissionInFlightError(key)
            current = await self._change(current, state=S.AMBIGUOUS, error=DEAD_LEASE)
            if current is None:
                return await self.reconcile(key, search)
        if current.state != S.AMBIGUOUS:
            return current
        if current.kind != "generation":
            why = "a template submission is resolved by its webhook or by hand"
            return await self._change(current, error=why) or current
        prompt, model = current.request.get("prompt"), current.request.get("model_name")
        if len(str(prompt).strip()) < QUERY_MIN_LENGTH:  # the history search would refuse it
            why = "its prompt is too short to search the history for: resolve it by hand"
            return await self._change(current, error=why) or current
        group = [current]
        async for row in self.ledger.list(state=S.AMBIGUOUS):
            same = row.kind == "generation" and row.fingerprint == current.fingerprint
            if same and row.key != key:
                group.append(row)
        held = {i for row in group for i in row.generation_ids}
        taken = await self.ledger.claimed_ids() - held
        windows = [window(row, self.timeout) for row in group]
        low, high = min(w[0] for w in windows), max(w[1] for w in windows)
        found: list[Asset] = []
        async for asset in search(str(prompt)):
            if (
                asset.prompt == prompt
                and asset.model_name == model
                and asset.created_at is not None
                and low <= asset.created_at <= high
                and asset.id not in taken
            ):
                found.append(asset)
        plan = assign(group, found, self.timeout)
        settled: Submission | None = None
        for row in group:
            ids = plan[row.key].ids
            if ids:
                done = await self._change(row, state=S.RECONCILED, generation_ids=ids, error=None)
                if row.key == key:
                    settled = done or await self.reconcile(key, search)
        if settled is not None:
            return settled
        return await self._unsettled(current, plan[key].available, len(group))

    async def _unsettled(self, current: Submission, available: int, peers: int) -> Submission:
        """An ambiguous key reconciliation could not settle: rejected once its window has
        closed with nothing found for it, else still ambiguous, saying what happens next."""
        count = count_of(current)
        closes = sent_at(current) + timedelta(seconds=self.ledger.reconcile_window)
        closed = _now() >= closes  # read once: the outcome and its message agree
        shared = f" ({peers} ambiguous keys share this request)" if peers > 1 else ""
        if not available and not current.generation_ids and closed:
            why = (
                "the history showed none of its generations within the reconciliation window "
                f"({self.ledger.reconcile_window:g} s){shared}: nothing was queued, so it may "
                "be sent again"
            )
            return await self._change(current, state=S.REJECTED, error=why) or current
        if closed:
            why = (
                f"reconciliation found {available} of {count} generations it asked for"
                f"{shared}, and its window closed at {closes:%H:%M:%S} UTC: it needs a person "
                "(prism-async ledger resolve KEY --ids ... or --not-sent)"
            )
        else:
            why = (
                f"reconciliation found {available} of {count} unclaimed generations it "
                f"asked for{shared}; the API may list a generation only once it has finished. "
                f"It is tried again every {self.ledger.reconcile_interval:g} s; if the history "
                f"still shows nothing for it at {closes:%H:%M:%S} UTC it becomes rejected and "
                "is sent again"
            )
        return await self._change(current, error=why) or current

    async def settle(self, key: str, search: Callable[[str], AsyncIterator[Asset]]) -> Submission:
        """Reconcile an ambiguous (or dead ``sending``) key until it is settled: ``reconciled``,
        or ``rejected`` once its window closed with nothing found. Waits
        :attr:`Ledger.reconcile_interval` between tries, logging the key and its age at
        WARNING each time. Returns the row still ambiguous only when no automated rule can
        settle it (a template without a webhook, a short prompt, a partial find after the
        window): a person must resolve it.
        """
        while True:
            checked = _now()  # the window's close is judged by a reconcile begun after it
            try:
                row = await self.reconcile(key, search)
            except SubmissionInFlightError:
                row = None  # a live process is sending it: its answer settles it
            if row is not None and row.state != S.AMBIGUOUS:
                return row
            current = row or await self.ledger.get(key)
            if current is None:
                raise InvalidRequestError("key", f"no submission has the key {key!r}")
            if current.state not in (S.AMBIGUOUS, S.SENDING):
                return current
            window = self.ledger.reconcile_window
            if row is not None and (checked - sent_at(current)).total_seconds() >= window:
                return row  # the window had closed and no rule settled it: a person must
            age = (_now() - sent_at(current)).total_seconds()
            logger.warning(
                "ledger key=%r ambiguous for %.0f s, reconciling again in %g s: %s",
                key,
                age,
                self.ledger.reconcile_interval,
                current.error,
                extra={"prism_key": key, "prism_state": current.state},
            )
            pause, left = self.ledger.reconcile_interval, window - age
            await asyncio.sleep(min(pause, left) if left > 0.05 else pause)
