"""The bodies of the SDK's tasks: plain coroutines on a :class:`PrismClient` with a ledger.

Each is safe to run again, in parallel or after a crash, which is what a queue does with a job:

* :func:`submit` sends a request under a ledger key: a redelivered job replays the recorded
  batch (no POST); a job whose first run died mid-POST finds the key ambiguous and waits for
  it to be reconciled from the account's history (or sends it again once the history proves
  nothing was queued).
* :func:`download` downloads one generation at most once: the ledger says whether some process
  already did, and a lease (see :mod:`._leases`) keeps two processes from doing it together.
* :func:`create_wait_download` is the simple pattern, both of them around a wait.

They return plain JSON-able dicts (a taskiq result): ``state`` says how each ended.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from ..._client import PrismClient
from ..._errors import (
    AmbiguousSubmissionError,
    APIConnectionError,
    APIStatusError,
    GenerationFailedError,
    InvalidRequestError,
    LedgerUnavailableError,
    ResponseValidationError,
    SubmissionInFlightError,
    WaitTimeoutError,
)
from ...ledger import GenerationRecord, Ledger, SubmissionState
from ...models.generations import Generation, GenerationBatch, GenerationStatus
from ...models.templates import TemplateGenerationBatch
from ...runs import GenerationRequest, TemplateRequest, _already_downloaded
from ._leases import DownloadLeases

logger = logging.getLogger("prism_async.taskiq")

__all__ = ["as_request", "create_wait_download", "download", "submit"]

Request = GenerationRequest | TemplateRequest


def as_request(fields: Mapping[str, Any]) -> Request:
    """The request a task's ``request`` argument describes: the keyword arguments of
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
        raise InvalidRequestError("ledger", "the SDK's tasks need PrismClient(ledger=...)")
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


async def submit(prism: PrismClient, key: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """Send ``request`` under the ledger ``key``, once across every run of the job.

    An ambiguous key (a worker killed mid-POST, an answer lost) is a waiting state, not an
    end: the job keeps it, reconciling every ``reconcile_interval`` seconds (logged at
    WARNING with the key and its age) until the history shows its generations, or until the
    ledger's ``reconcile_window`` has closed with nothing found: then it is sent again. A key a
    live process is sending is waited for the same way. The job's message stays unacknowledged
    meanwhile, so a worker killed while it waits hands it to another.

    Returns:
        ``{"key", "state", "generation_ids", "error"}``; ``state`` is ``accepted`` or
        ``reconciled`` (the ids are known), ``rejected`` (a definitive refusal: nothing was
        queued) or, rarely, ``ambiguous`` (no rule can settle it: a template without a webhook,
        or a partial find once the window closed; a person must ``ledger resolve`` it).

    Raises:
        InvalidRequestError: a bad request, before anything is sent.
        SubmissionConflictError: the key was used for another request.
        ClientClosedError: the worker is stopping.
    """
    built = as_request(request)
    ledger = _ledger(prism)
    while True:
        try:
            batch = await _send(prism, key, built)
        except (AmbiguousSubmissionError, SubmissionInFlightError):
            pass
        except (APIConnectionError, APIStatusError, ResponseValidationError) as exc:
            if not exc.maybe_sent:
                return _outcome(key, "rejected", error=exc)
        else:
            row = await ledger.get(key)
            return _outcome(key, row.state if row is not None else "accepted", batch.ids)
        settled = await prism.reconcile(key, wait=True)
        if settled.done:
            return _outcome(key, settled.state, settled.generation_ids)
        if settled.state == SubmissionState.AMBIGUOUS:
            return _outcome(key, "ambiguous", error=settled.error)
        # rejected: its window closed with nothing in the history; sent again


async def download(
    prism: PrismClient,
    leases: DownloadLeases,
    generation_id: str,
    folder: str | os.PathLike[str],
    *,
    patience: float | None = None,
) -> dict[str, Any]:
    """Download a completed generation into ``folder`` unless some process already did.

    While another live process holds the generation's lease, this waits (up to ``patience``
    seconds, default twice the lease's life) for it to finish or die, then looks again: a job
    redelivered after its worker died mid-download must not give up on a dead holder's lease.

    Returns:
        ``{"generation_id", "state", "path", "error"}``; ``state`` is ``downloaded`` (by this
        call), ``already_downloaded`` (the ledger records its file), ``failed`` (the generation
        failed) or ``busy`` (a live process is still downloading it: its own job finishes).
    """
    ledger = _ledger(prism)
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
            return _file(generation_id, "busy", error="another process is downloading it")
        await asyncio.sleep(min(1.0, leases.ttl_ms / 6000))
    try:
        return await lease.run(_download(prism, ledger, generation_id, Path(folder)))
    finally:
        await lease.release()


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
    found = await asyncio.to_thread(_already_downloaded, None, folder, generation_id)
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
    leases: DownloadLeases,
    key: str,
    request: Mapping[str, Any],
    folder: str | os.PathLike[str] | None,
    *,
    timeout: float | None = None,
    patience: float | None = None,
) -> dict[str, Any]:
    """The simple pattern: :func:`submit`, wait for the generations, :func:`download` each.

    Run again (a redelivered job), it sends nothing, waits on the same ids and skips the videos
    already downloaded.

    Returns:
        What :func:`submit` returns, plus ``paths``; ``state`` is then ``downloaded`` (or
        ``completed`` without a ``folder``), ``failed`` or ``timed_out`` when the ids are
        known, else the submission's state.
    """
    submitted = await submit(prism, key, request)
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
    if state == "completed" and folder is not None:
        state = "downloaded"
    return {**_outcome(key, state, ids, error), "paths": paths}
