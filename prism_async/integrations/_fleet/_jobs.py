"""The SDK's jobs: plain coroutines on a :class:`PrismClient` with a ledger, for any job queue.

Each is safe to run again, in parallel or after a crash, which is what a queue does with a job:

* :func:`submit` sends a request under a ledger key: a redelivered job replays the recorded
  batch (no POST); a job whose first run died mid-POST finds the key ambiguous and waits for
  it to be reconciled from the account's history (or sends it again once the history proves
  nothing was queued).
* :func:`download` downloads one generation at most once: the ledger says whether some process
  already did, and a lease (see :mod:`._leases`) keeps two processes from doing it together.
* :func:`create_wait_download` is the simple pattern, both of them around a wait.

A key not settled yet is waited for inside the job (taskiq's tasks), or, with ``defer=True``,
the job raises :class:`RetryLater` at once: the queue runs it again after ``delay`` seconds
(arq's ``Retry(defer=...)``), so no job holds a worker for a reconciliation window.

They return plain JSON-able dicts (a job's result): ``state`` says how each ended.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from prism_async import (
    AmbiguousSubmissionError,
    APIConnectionError,
    APIStatusError,
    BudgetExceededError,
    Generation,
    GenerationBatch,
    GenerationFailedError,
    GenerationRequest,
    GenerationStatus,
    InvalidRequestError,
    LedgerUnavailableError,
    PrismClient,
    ResponseValidationError,
    SubmissionInFlightError,
    TemplateGenerationBatch,
    TemplateRequest,
    WaitTimeoutError,
)
from prism_async.ledger import GenerationRecord, Ledger, Submission, SubmissionState
from prism_async.ledger._downloads import already_downloaded
from prism_async.ledger._reconcile import sent_at

from ._leases import DownloadLeases

logger = logging.getLogger("prism_async.fleet")

__all__ = ["RetryLater", "as_request", "create_wait_download", "download", "submit"]

Request = GenerationRequest | TemplateRequest


class RetryLater(Exception):
    """Not settled yet: run the job again in :attr:`delay` seconds (the jobs' ``defer=True``).

    ``except RetryLater as later: raise arq.Retry(defer=later.delay)``. Nothing was lost: the
    key (or the download) is in the ledger, and the next run takes it from where it is.

    Attributes:
        delay: seconds to wait before running the job again.
        key: the ledger key (or, for a download, the generation id) not settled yet.
        reason: what it waits for.
    """

    def __init__(self, delay: float, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}; run the job again in {delay:g} s")
        self.delay = delay
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[type[RetryLater], tuple[float, str, str]]:
        return type(self), (self.delay, self.key, self.reason)


def as_request(fields: Mapping[str, Any]) -> Request:
    """The request a job's ``request`` argument describes: the keyword arguments of
    ``generations.create``, or of ``templates.generate`` when it has ``template_id`` and no
    ``prompt`` (checked now, before anything is sent).

    Raises:
        InvalidRequestError: a bad or unknown field.
    """
    if not isinstance(fields, Mapping):
        raise InvalidRequestError("request", "must be a dict of create's keyword arguments")
    if "key" in fields:
        raise InvalidRequestError("request", "the ledger key is the task's own argument")
    kind: type[Request] = (
        TemplateRequest if "template_id" in fields and "prompt" not in fields else GenerationRequest
    )
    try:
        return kind(**fields)
    except TypeError as exc:
        raise InvalidRequestError("request", str(exc)) from None


def _ledger(prism: PrismClient) -> Ledger:
    if prism.ledger is None:
        raise InvalidRequestError("ledger", "the SDK's jobs need PrismClient(ledger=...)")
    return prism.ledger


async def _send(
    prism: PrismClient, key: str, request: Request
) -> GenerationBatch | TemplateGenerationBatch:
    if isinstance(request, GenerationRequest):
        return await prism.generations.create(key=key, **request.arguments())
    return await prism.templates.generate(
        request.template_id,
        variables=request.variables,
        character_variables=request.character_variables,
        webhook_url=request.webhook_url,
        key=key,
    )


def _outcome(
    key: str, state: str, ids: list[str] | tuple[str, ...] = (), error: object = None
) -> dict[str, Any]:
    return {
        "key": key,
        "state": state,
        "generation_ids": list(ids),
        "error": None if error is None else str(error) or type(error).__name__,
    }


async def _reconcile_once(prism: PrismClient, ledger: Ledger, key: str) -> Submission:
    """One reconciliation of ``key``; :class:`RetryLater` while it may still settle by itself
    (a live process is sending it, or its window is open), as ``reconcile(wait=True)`` would
    have waited."""
    try:
        row = await prism.reconcile(key)
    except SubmissionInFlightError:
        raise RetryLater(ledger.reconcile_interval, key, "a live process is sending it") from None
    if row.state != SubmissionState.AMBIGUOUS:
        return row
    left = ledger.reconcile_window - (datetime.now(UTC) - sent_at(row)).total_seconds()
    if left <= 0:
        return row  # the window closed and no rule settled it: a person must
    pause = ledger.reconcile_interval
    raise RetryLater(min(pause, left) if left > 0.05 else pause, key, row.error or "ambiguous")


async def submit(
    prism: PrismClient, key: str, request: Mapping[str, Any], *, defer: bool = False
) -> dict[str, Any]:
    """Send ``request`` under the ledger ``key``, once across every run of the job.

    An ambiguous key (a worker killed mid-POST, an answer lost) is a waiting state, not an
    end: the job keeps it, reconciling every ``reconcile_interval`` seconds (logged at
    WARNING with the key and its age) until the history shows its generations, or until the
    ledger's ``reconcile_window`` has closed with nothing found: then it is sent again. A key a
    live process is sending is waited for the same way. The job's message stays unacknowledged
    meanwhile, so a worker killed while it waits hands it to another.

    Args:
        prism: a client with a ledger.
        key: the ledger key (a business key: one intent, paid for once).
        request: the keyword arguments of ``generations.create`` (or of ``templates.generate``,
            with ``template_id`` and no ``prompt``).
        defer: reconcile once instead of waiting: raise :class:`RetryLater` while the key may
            still settle (its window is open, or a live process is sending it).

    Returns:
        ``{"key", "state", "generation_ids", "error"}``; ``state`` is ``accepted`` or
        ``reconciled`` (the ids are known), ``rejected`` (a definitive refusal: nothing was
        queued; a 402 pause too), ``refused`` (the client's budget cannot hold its price:
        nothing was sent) or, rarely, ``ambiguous`` (no rule can settle it: a template without
        a webhook, or a partial find once the window closed; a person must ``ledger resolve``
        it).

    Raises:
        InvalidRequestError: a bad request, before anything is sent.
        SubmissionConflictError: the key was used for another request.
        ClientClosedError: the worker is stopping.
        RetryLater: with ``defer``, the key is not settled yet.
    """
    built = as_request(request)
    ledger = _ledger(prism)
    while True:
        try:
            batch = await _send(prism, key, built)
        except (AmbiguousSubmissionError, SubmissionInFlightError):
            pass
        except BudgetExceededError as exc:  # the client's budget: nothing was sent
            return _outcome(key, "refused", error=exc)
        except (APIConnectionError, APIStatusError, ResponseValidationError) as exc:
            if not exc.maybe_sent:
                return _outcome(key, "rejected", error=exc)
        else:
            row = await ledger.get(key)
            return _outcome(key, row.state if row is not None else "accepted", batch.ids)
        if defer:
            settled = await _reconcile_once(prism, ledger, key)
        else:
            settled = await prism.reconcile(key, wait=True)
        if settled.done:
            return _outcome(key, settled.state, settled.generation_ids)
        if settled.state == SubmissionState.AMBIGUOUS:
            return _outcome(key, "ambiguous", error=settled.error)
        # rejected: its window closed with nothing in the history; sent again


async def download(
    prism: PrismClient,
    leases: DownloadLeases | None,
    generation_id: str,
    folder: str | os.PathLike[str],
    *,
    patience: float | None = None,
    defer: bool = False,
) -> dict[str, Any]:
    """Download a completed generation into ``folder`` unless some process already did.

    While another live process holds the generation's lease, this waits (up to ``patience``
    seconds, default twice the lease's life) for it to finish or die, then looks again: a job
    redelivered after its worker died mid-download must not give up on a dead holder's lease.

    Args:
        prism: a client with a ledger (it records each file downloaded).
        leases: the fleet's download leases; None: no lease (the ledger and the files in
            ``folder`` alone keep runs one after another from downloading a video twice).
        generation_id: a completed generation.
        folder: where ``<id>.mp4`` goes.
        patience: seconds to wait for another process's lease.
        defer: raise :class:`RetryLater` rather than end ``busy``.

    Returns:
        ``{"generation_id", "state", "path", "error"}``; ``state`` is ``downloaded`` (by this
        call), ``already_downloaded`` (the ledger records its file), ``failed`` (the generation
        failed) or ``busy`` (a live process is still downloading it: its own job finishes).
    """
    ledger = _ledger(prism)
    if leases is None:
        return await _download(prism, ledger, generation_id, Path(folder))
    wait = patience if patience is not None else 2 * leases.ttl_ms / 1000
    deadline = time.monotonic() + wait
    outage = 0.0  # seconds of Redis outage so far: the job rides it out, never gives up
    while True:
        try:
            record = await ledger.generation(generation_id)
            if record is not None and record.path is not None:
                return _file(generation_id, "already_downloaded", record.path)
            lease = await leases.acquire(generation_id)
        except (LedgerUnavailableError, RedisError, OSError) as exc:
            if not outage:
                logger.warning(
                    "download %s: Redis cannot be reached (%s); waiting", generation_id, exc
                )
            pause = min(2.0, 0.2 + outage / 4)
            outage += pause
            deadline += pause
            await asyncio.sleep(pause)
            continue
        outage = 0.0
        if lease is not None:
            break
        if time.monotonic() >= deadline:
            if defer:
                raise RetryLater(leases.ttl_ms / 1000, generation_id, _BUSY)
            return _file(generation_id, "busy", error=_BUSY)
        await asyncio.sleep(min(1.0, leases.ttl_ms / 6000))
    try:
        return await lease.run(_download(prism, ledger, generation_id, Path(folder)))
    finally:
        await lease.release()


_BUSY = "another process is downloading it"


def _file(
    generation_id: str, state: str, path: str | None = None, error: object = None
) -> dict[str, Any]:
    return {
        "generation_id": generation_id,
        "state": state,
        "path": path,
        "error": None if error is None else str(error),
    }


async def _download(
    prism: PrismClient, ledger: Ledger, generation_id: str, folder: Path
) -> dict[str, Any]:
    """The download itself, under the lease."""
    record = await ledger.generation(generation_id)  # it may have finished before we leased
    if record is not None and record.path is not None:
        return _file(generation_id, "already_downloaded", record.path)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    # Removes the .part files of a process killed mid-download; finds a file renamed into
    # place by a process killed before it recorded it.
    found = await asyncio.to_thread(already_downloaded, None, folder, generation_id)
    if found is not None:
        size = await asyncio.to_thread(lambda: found.stat().st_size)
        await ledger.record(GenerationRecord(generation_id, path=str(found), size=size))
        return _file(generation_id, "already_downloaded", str(found))
    try:
        path = await prism.generations.download(generation_id, folder)
    except GenerationFailedError as exc:
        failed = GenerationRecord(
            generation_id, status=GenerationStatus.FAILED, error=exc.generation.error
        )
        await ledger.record(failed)
        return _file(generation_id, "failed", error=exc)
    return _file(generation_id, "downloaded", str(path))


async def create_wait_download(
    prism: PrismClient,
    leases: DownloadLeases | None,
    key: str,
    request: Mapping[str, Any],
    folder: str | os.PathLike[str] | None,
    *,
    timeout: float | None = None,
    patience: float | None = None,
    defer: bool = False,
) -> dict[str, Any]:
    """The simple pattern: :func:`submit`, wait for the generations, :func:`download` each.

    Run again (a redelivered job), it sends nothing, waits on the same ids and skips the videos
    already downloaded.

    Args:
        prism: a client with a ledger.
        leases: the fleet's download leases (None: none, see :func:`download`).
        key: the ledger key.
        request: the keyword arguments of ``generations.create`` (see :func:`submit`).
        folder: where the videos go (None: wait, download nothing).
        timeout: seconds the wait may take (default: the client's poll policy's).
        patience: seconds a download waits for another process's lease.
        defer: raise :class:`RetryLater` instead of waiting inside the job for an unsettled
            key (see :func:`submit`), or instead of ending ``busy`` (after downloading the
            other videos).

    Returns:
        What :func:`submit` returns, plus ``paths``; ``state`` is then ``downloaded`` (or
        ``completed`` without a ``folder``), ``failed`` or ``timed_out`` when the ids are
        known, else the submission's state.
    """
    submitted = await submit(prism, key, request, defer=defer)
    ids: list[str] = submitted["generation_ids"]
    if submitted["state"] not in ("accepted", "reconciled"):
        return {**submitted, "paths": []}
    outcomes = await prism.wait_for_generations(ids, timeout=timeout, return_exceptions=True)
    state, error, paths = "completed", None, []
    for outcome in outcomes:
        if isinstance(outcome, Generation):
            if folder is not None:
                got = await download(prism, leases, outcome.id, folder, patience=patience)
                if got["path"] is not None:
                    paths.append(got["path"])
                if got["state"] == "busy":
                    state, error = "busy", got["error"]
        elif isinstance(outcome, GenerationFailedError):
            state, error = "failed", outcome
        elif isinstance(outcome, WaitTimeoutError):
            state, error = ("timed_out" if state == "completed" else state), outcome
        else:
            raise outcome
    if state == "busy" and defer and leases is not None:
        raise RetryLater(leases.ttl_ms / 1000, key, f"a video of it: {error}")
    if state == "completed" and folder is not None:
        state = "downloaded"
    return {**_outcome(key, state, ids, error), "paths": paths}
