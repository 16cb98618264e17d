"""Durable submissions: the rules of ``key=`` on a client with a ledger (any backend).

One rule makes them safe: the row is committed as ``sending`` **before** the POST leaves the
process. Whatever happens next (an answer, an error, a crash), a later call with the same key
finds the row and never sends blindly: ``accepted``/``reconciled`` return the recorded batch,
``rejected`` sends again, ``sending`` with a dead lease and ``ambiguous`` raise
:class:`AmbiguousSubmissionError` until reconciled or resolved.

Every state change is logged (logger ``prism_async.ledger``) with key, attempt, state and ids;
ids are logged before they are committed, so even a failing ledger leaves a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._errors import (
    AmbiguousSubmissionError,
    InvalidRequestError,
    PrismError,
    SubmissionConflictError,
    SubmissionInFlightError,
)
from ._rules import QUERY_MIN_LENGTH
from .ledger._base import Ledger
from .ledger._model import GenerationRecord, Owner, Submission, SubmissionState, lease_is_alive
from .ledger._reconcile import assign, count_of, sent_at, window
from .models.assets import Asset
from .models.generations import Generation

if TYPE_CHECKING:
    from .webhooks import WebhookEvent

__all__ = ["Durable", "fingerprint"]

logger = logging.getLogger("prism_async.ledger")

T = TypeVar("T")
S = SubmissionState


def fingerprint(kind: str, body: dict[str, Any]) -> str:
    """A hash of the request body exactly as it is sent (after normalisation)."""
    text = json.dumps([kind, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _log(submission: Submission, level: int = logging.INFO, note: str = "") -> None:
    ids = ",".join(submission.generation_ids) or "-"
    logger.log(
        level,
        "ledger key=%r attempt=%d state=%s ids=%s%s",
        submission.key,
        submission.attempt,
        submission.state,
        ids,
        f" ({note})" if note else "",
        extra={
            "prism_key": submission.key,
            "prism_attempt": submission.attempt,
            "prism_state": submission.state,
            "prism_generation_ids": list(submission.generation_ids),
        },
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled while the request was in flight"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


class Durable:
    """The ledger rules for one client."""

    def __init__(self, ledger: Ledger, *, timeout: float, lease_seconds: float = 60.0) -> None:
        self.ledger = ledger
        self.timeout = timeout
        self.lease = timedelta(seconds=max(lease_seconds, timeout + 10.0))
        self._records = _GroupWriter(ledger)
        self._owner = (os.getpid(), str(Owner.me()))

    @property
    def owner(self) -> str:
        """This process as a lease owner (computed again in a forked child)."""
        if self._owner[0] != os.getpid():
            self._owner = (os.getpid(), str(Owner.me()))
        return self._owner[1]

    # -- submitting --------------------------------------------------------------------------

    async def submit(
        self,
        key: str,
        *,
        kind: str,
        body: dict[str, Any],
        request: dict[str, Any],
        send: Callable[[], Awaitable[T]],
        ids_of: Callable[[T], list[str]],
        credits_of: Callable[[T], float | None],
        replay: Callable[[Submission], T],
    ) -> T:
        """Send ``body`` once for ``key`` across processes; see the module docstring."""
        if not isinstance(key, str) or not key.strip():
            raise InvalidRequestError("key", "must be a non-empty string")
        claimed = await self._claim(key, kind, fingerprint(kind, body), request)
        if claimed.done:
            _log(claimed, logging.DEBUG, "recorded: not sent again")
            return replay(claimed)
        _log(claimed)
        renewing = asyncio.create_task(self._renew(claimed))
        try:
            result = await send()
        except BaseException as exc:
            renewing.cancel()
            maybe = exc.maybe_sent if isinstance(exc, PrismError) else True
            ids = exc.generation_ids if isinstance(exc, PrismError) else ()
            state = S.AMBIGUOUS if maybe else S.REJECTED
            settle = self._settle(claimed, state=state, generation_ids=ids, error=_describe(exc))
            with contextlib.suppress(Exception):  # the request's own error is what matters
                await asyncio.shield(asyncio.ensure_future(settle))
            raise
        renewing.cancel()
        await self._settle(
            claimed,
            state=S.ACCEPTED,
            generation_ids=tuple(ids_of(result)),
            credits_charged=credits_of(result),
            error=None,
        )
        return result

    async def _claim(self, key: str, kind: str, print_: str, request: dict[str, Any]) -> Submission:
        """The row to send under (``sending``, leased to us) or a ``done`` one to replay."""
        while True:
            now = _now()
            expires = now + self.lease
            new = Submission(
                key=key,
                kind=kind,
                state=S.SENDING,
                attempt=1,
                fingerprint=print_,
                created_at=now,
                updated_at=now,
                sent_at=now,
                request=request,
                lease_owner=self.owner,
                lease_expires=expires,
            )
            # Insert first: a new key (the usual case) costs one write instead of a read and a
            # write; an existing key refuses the insert, changing nothing, and is read below.
            if await self._commit(self.ledger.insert(new), new):
                return new
            current = await self.ledger.get(key)
            if current is None:
                continue
            if current.fingerprint != print_:
                raise SubmissionConflictError(key)
            if current.done:
                return current
            if current.state == S.AMBIGUOUS:
                raise AmbiguousSubmissionError(key, current)
            if current.state == S.SENDING:
                if lease_is_alive(current, now):
                    raise SubmissionInFlightError(key)
                dead = await self._change(current, state=S.AMBIGUOUS, error=_DEAD_LEASE)
                if dead is not None:
                    raise AmbiguousSubmissionError(key, dead)
                continue
            again = attrs.evolve(
                current,
                state=S.SENDING,
                attempt=current.attempt + 1,
                generation_ids=(),
                sent_at=now,
                updated_at=now,
                error=None,
                version=current.version + 1,
                lease_owner=self.owner,
                lease_expires=expires,
            )
            if await self._commit(self.ledger.swap(current, again), again):
                return again

    async def _commit(self, write: Awaitable[bool], row: Submission) -> bool:
        """Commit our ``sending`` row. Cancelled meanwhile (the write may still land), the POST
        never leaves: a row of ours is made ``rejected``, not left leased to a live process
        (SubmissionInFlightError, then ambiguous, for a request that was never sent)."""
        try:
            return await write
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.ensure_future(self._unclaim(row)))
            raise

    async def _unclaim(self, row: Submission) -> None:
        current = await self.ledger.get(row.key)
        mine = ("state", "attempt", "version", "lease_owner", "lease_expires", "sent_at")
        if current is not None and all(getattr(current, f) == getattr(row, f) for f in mine):
            await self._change(current, state=S.REJECTED, error="cancelled before it was sent")

    async def _change(self, current: Submission, **changes: Any) -> Submission | None:
        """Swap ``current`` for a changed copy; the new row, or None if it changed meanwhile."""
        if changes.get("state") not in (None, S.SENDING):
            changes.setdefault("lease_owner", None)
            changes.setdefault("lease_expires", None)
        new = attrs.evolve(current, updated_at=_now(), version=current.version + 1, **changes)
        if new.state != current.state:
            _log(new, logging.WARNING if new.state == S.AMBIGUOUS else logging.INFO)
        return new if await self.ledger.swap(current, new) else None

    async def _settle(self, claimed: Submission, **changes: Any) -> None:
        """Record the outcome of our attempt, even if the row moved on (a stale lease that
        another process marked ambiguous still gets the ids we learnt)."""
        current: Submission | None = claimed
        while current is not None:
            if current.attempt != claimed.attempt or current.state not in (S.SENDING, S.AMBIGUOUS):
                _log(current, logging.WARNING, f"outcome not recorded: {changes.get('state')}")
                return
            if await self._change(current, **changes) is not None:
                return
            current = await self.ledger.get(claimed.key)

    async def _renew(self, claimed: Submission) -> None:
        """Keep our lease alive while the POST is in flight."""
        current = claimed
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                renewed = await self._change(current, lease_expires=_now() + self.lease)
            except Exception as exc:  # the POST goes on; the lease may lapse, never the money
                logger.warning("ledger key=%r: could not renew the lease: %s", claimed.key, exc)
                return
            if renewed is None:
                return
            current = renewed

    # -- what waits and downloads learn ------------------------------------------------------

    async def finished(self, generation: Generation) -> None:
        """Record a terminal status."""
        record = GenerationRecord(
            generation.id,
            status=generation.status,
            error=generation.error,
            completed_at=generation.completed_at,
        )
        await self._records.write(record)

    async def downloaded(self, generation_id: str, path: str, size: int) -> None:
        """Record a file renamed into place."""
        await self._records.write(GenerationRecord(generation_id, path=path, size=size))

    # -- reconciliation ----------------------------------------------------------------------

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
            current = await self._change(current, state=S.AMBIGUOUS, error=_DEAD_LEASE)
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
        shared = f" ({peers} ambiguous keys share this request)" if peers > 1 else ""
        if not available and not current.generation_ids and _now() >= closes:
            why = (
                "the history showed none of its generations within the reconciliation window "
                f"({self.ledger.reconcile_window:g} s){shared}: nothing was queued, so it may "
                "be sent again"
            )
            return await self._change(current, state=S.REJECTED, error=why) or current
        if _now() >= closes:
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
            age = (_now() - sent_at(current)).total_seconds()
            if row is not None and age >= self.ledger.reconcile_window:
                return row  # the window closed and no rule settled it: a person must
            logger.warning(
                "ledger key=%r ambiguous for %.0f s, reconciling again in %g s: %s",
                key,
                age,
                self.ledger.reconcile_interval,
                current.error,
                extra={"prism_key": key, "prism_state": current.state},
            )
            pause, left = self.ledger.reconcile_interval, self.ledger.reconcile_window - age
            await asyncio.sleep(min(pause, left) if left > 0.05 else pause)


_DEAD_LEASE = (
    "the process sending it stopped before its outcome was recorded: it may have been queued"
)


class _GroupWriter:
    """Generation records written together: what arrives while one batch is being written
    goes in the next, in one transaction. Each caller still waits for its own record."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._pending: list[tuple[GenerationRecord, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def write(self, record: GenerationRecord) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
        self._pending.append((record, done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await asyncio.shield(done)  # cancelled or not, the record is written

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._ledger.record_many([record for record, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
