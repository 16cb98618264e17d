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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .._errors import (
    AmbiguousSubmissionError,
    InvalidRequestError,
    LedgerUnavailableError,
    PrismError,
    SubmissionConflictError,
    SubmissionInFlightError,
)
from ..models.generations import Generation
from ._base import Ledger
from ._model import GenerationRecord, Owner, Submission, SubmissionState, lease_is_alive
from ._reconciling import DEAD_LEASE, Reconciling
from ._spending import settle_money
from ._writer import GroupWriter

if TYPE_CHECKING:
    pass

__all__ = ["Durable", "fingerprint"]

logger = logging.getLogger("prism_async.ledger")

T = TypeVar("T")
S = SubmissionState
_SETTLED = frozenset({S.ACCEPTED, S.RECONCILED, S.REJECTED})


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


class Durable(Reconciling):
    """The ledger rules for one client (reconciliation: :class:`Reconciling`)."""

    def __init__(self, ledger: Ledger, *, timeout: float, lease_seconds: float = 60.0) -> None:
        self.ledger = ledger
        self.timeout = timeout
        self.lease = timedelta(seconds=max(lease_seconds, timeout + 10.0))
        self._records = GroupWriter(ledger)
        self._later: set[asyncio.Task[None]] = set()  # outcomes waiting for the ledger
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
            changes = {"state": state, "generation_ids": ids, "error": _describe(exc)}
            with contextlib.suppress(Exception):  # the request's own error is what matters
                await asyncio.shield(asyncio.ensure_future(self._record_outcome(claimed, changes)))
            raise
        renewing.cancel()
        ids = tuple(ids_of(result))
        outcome = {
            "state": S.ACCEPTED,
            "generation_ids": ids,
            "credits_charged": credits_of(result),
            "error": None,
        }
        await self._record_outcome(claimed, outcome)
        # Then the ids' records name their key, in the next group of records (not waited for),
        # so that a process waiting on an id finds when and with what request it was sent.
        self._records.add([GenerationRecord(i, key=key) for i in ids])
        return result

    async def _record_outcome(self, claimed: Submission, changes: dict[str, Any]) -> None:
        """Record what the API answered; while the ledger cannot be reached, keep it in
        memory (logged at WARNING with its ids) and commit it once the ledger is back."""
        try:
            await self._settle(claimed, **changes)
        except LedgerUnavailableError as exc:
            logger.warning(
                "ledger key=%r attempt=%d: the API answered %s (ids %s) but the ledger cannot "
                "be reached (%s): kept in memory, committed when it is back",
                claimed.key,
                claimed.attempt,
                changes["state"],
                ",".join(changes["generation_ids"]) or "-",
                exc,
                extra={"prism_key": claimed.key, "prism_generation_ids": changes["generation_ids"]},
            )
            later = asyncio.create_task(self._record_later(claimed, changes))
            self._later.add(later)
            later.add_done_callback(self._later.discard)

    async def _record_later(self, claimed: Submission, changes: dict[str, Any]) -> None:
        pause = 1.0
        while True:
            await asyncio.sleep(pause)
            try:
                await self._settle(claimed, **changes)
            except LedgerUnavailableError:
                pause = min(pause * 2, 30.0)
                continue
            logger.warning(
                "ledger key=%r attempt=%d: %s (ids %s) committed now that the ledger is back",
                claimed.key,
                claimed.attempt,
                changes["state"],
                ",".join(changes["generation_ids"]) or "-",
            )
            return

    async def aclose(self, timeout: float = 10.0) -> None:
        """Commit the outcomes kept in memory during a ledger outage (waiting up to
        ``timeout`` seconds); any still unwritten then is logged at ERROR with its ids."""
        with contextlib.suppress(TimeoutError):  # the ids' names: a help, briefly
            async with asyncio.timeout(min(timeout, 2.0)):
                await self._records.drain()
        if not self._later:
            return
        _, left = await asyncio.wait(set(self._later), timeout=timeout)
        for task in left:
            task.cancel()
        if left:
            logger.error(
                "ledger: %d outcomes the API answered could not be committed before the client "
                "closed (their keys and ids are in the WARNING lines above)",
                len(left),
            )

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
            if current == new:  # our insert landed; its answer was lost (and it was retried)
                return new
            if current.fingerprint != print_:
                raise SubmissionConflictError(key)
            if current.done:
                return current
            if current.state == S.AMBIGUOUS:
                raise AmbiguousSubmissionError(key, current)
            if current.state == S.SENDING:
                if lease_is_alive(current, now):
                    raise SubmissionInFlightError(key)
                dead = await self._change(current, state=S.AMBIGUOUS, error=DEAD_LEASE)
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
        if not await self.ledger.swap(current, new):
            return None
        if new.state != current.state and new.state in _SETTLED:
            await settle_money(self.ledger, new)  # its charge, or its reservation released
        return new

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
        await self._write(record)

    async def downloaded(self, generation_id: str, path: str, size: int) -> None:
        """Record a file renamed into place."""
        await self._write(GenerationRecord(generation_id, path=path, size=size))

    async def _write(self, record: GenerationRecord) -> None:
        """What a wait or a download learnt: a help for later runs, never worth failing them
        (a later run polls again, and trusts a file renamed into place)."""
        try:
            await self._records.write(record)
        except LedgerUnavailableError as exc:
            logger.warning("ledger: could not record %s (%s)", record.id, exc)
