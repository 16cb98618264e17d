"""Resumable bulk runs: ``prism.run(requests, run_id=...)`` on a client with a ledger.

Each request becomes a durable submission (key: its own ``key``, or one derived from the
request itself: see :mod:`prism_async.ledger._run_plan`), is waited for and downloaded, and
comes back as one :class:`RunResult` as soon as it is finished. Running the same code again
resumes, even after lines were inserted, deleted or reordered: accepted keys are not sent
again, ambiguous ones are reconciled first, and videos already downloaded are not downloaded
again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from attrs import frozen

from ._errors import (
    AmbiguousSubmissionError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    PrismError,
    SubmissionConflictError,
    SubmissionInFlightError,
    WaitTimeoutError,
)
from .ledger._base import Ledger
from .ledger._downloads import already_downloaded
from .ledger._intent import intent_of
from .ledger._model import Submission, SubmissionState
from .ledger._run_plan import Budget, Credits, Plan, plan_run
from .models.generations import Generation, GenerationBatch
from .models.requests import GenerationRequest, TemplateRequest
from .models.templates import TemplateGenerationBatch
from .polling import PollPolicy

if TYPE_CHECKING:
    from ._client import PrismClient
    from .ledger._durable import Durable

__all__ = ["GenerationRequest", "RunResult", "TemplateRequest", "run", "run_credits", "run_keys"]


@frozen
class RunResult:
    """What became of one request of a run.

    ``state`` is ``downloaded``, ``completed`` (no ``download_to``, or its download failed:
    see ``error``), ``failed`` (a generation failed, or its wait did: see ``error``),
    ``ambiguous``, ``rejected``, ``timed_out``, ``skipped`` (not submitted: credits exhausted
    or ``max_credits`` reached) or ``conflict`` (its explicit ``key`` is recorded for another
    request: nothing was sent).
    """

    key: str
    """Its ledger key."""
    index: int
    """Its position in the run's input."""
    request: GenerationRequest | TemplateRequest
    """The request it answers."""
    state: str
    generations: tuple[Generation, ...] = ()
    """The finished generations (completed and failed)."""
    paths: tuple[Path, ...] = ()
    """The downloaded videos."""
    error: BaseException | None = None
    """Why it did not end ``downloaded``/``completed``, if it did not."""


Request = GenerationRequest | TemplateRequest


def _checked(requests: Iterable[Request], run_id: str) -> list[Request]:
    if not isinstance(run_id, str) or not run_id.strip():
        raise InvalidRequestError("run_id", "must be a non-empty string")
    items = list(requests)
    for index, request in enumerate(items):
        if not isinstance(request, GenerationRequest | TemplateRequest):
            raise InvalidRequestError(
                f"requests[{index}]", "must be a GenerationRequest or a TemplateRequest"
            )
    return items


async def _plan(
    ledger: Ledger, requests: Sequence[Request], run_id: str
) -> tuple[list[Plan], dict[str, Submission]]:
    return await plan_run(ledger, requests, [intent_of(r) for r in requests], run_id)


async def run_keys(ledger: Ledger, requests: Iterable[Request], run_id: str) -> list[str]:
    """The ledger key of each request in ``prism.run(requests, run_id=run_id)`` on ``ledger``:
    its ``key``, else ``f"{run_id}/{digest}"`` (``.{n}`` for the n-th identical request), or
    the positional key an earlier version recorded for the same request.

    Raises:
        InvalidRequestError: a bad ``run_id`` or request, or two requests with one key.
    """
    plans, _ = await _plan(ledger, _checked(requests, run_id), run_id)
    return [plan.key for plan in plans]


async def run_credits(
    ledger: Ledger, requests: Iterable[Request], run_id: str
) -> tuple[float, float]:
    """What the keys of ``prism.run(requests, run_id=run_id)`` were charged, as ``max_credits``
    counts it (reconciled and resolved keys at the price seen for the same request shape),
    and what its ambiguous keys would add if they were queued."""
    plans, known = await _plan(ledger, _checked(requests, run_id), run_id)
    credits = Credits()
    for plan in plans:
        credits.count(plan, known.get(plan.key))
    return credits.charged, credits.held


async def run(
    prism: PrismClient,
    durable: Durable | None,
    requests: Iterable[Request],
    *,
    run_id: str,
    download_to: str | os.PathLike[str] | None = None,
    concurrency: int = 8,
    max_credits: float | None = None,
    timeout: float | None = None,
    poll: PollPolicy | None = None,
) -> AsyncGenerator[RunResult, None]:
    """Submit, wait for and download every request; yield each :class:`RunResult` as it ends.

    See :meth:`PrismClient.run <prism_async.PrismClient.run>` (which passes its ledger rules,
    ``durable``).
    """
    if durable is None:
        raise InvalidRequestError("ledger", "prism.run needs PrismClient(ledger=...)")
    items = _checked(requests, run_id)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidRequestError("concurrency", "must be an integer of at least 1")
    if max_credits is not None and (isinstance(max_credits, bool) or max_credits < 0):
        raise InvalidRequestError("max_credits", "must be 0 or more")
    plans, known = await _plan(durable.ledger, items, run_id)  # one read for the whole run
    folder = None if download_to is None else await asyncio.to_thread(_make_folder, download_to)
    credits = Credits()
    for plan in plans:
        credits.count(plan, known.get(plan.key))
    budget = Budget(max_credits, credits)
    slots = asyncio.Semaphore(concurrency)
    job = _Job(prism, durable, budget, slots, folder, timeout, poll, known)
    results: asyncio.Queue[RunResult] = asyncio.Queue()

    async def one(plan: Plan) -> None:
        try:
            result = await job.run_one(plan)
        except Exception as exc:  # e.g. a 401/404 while waiting: reported, never a hang
            result = _result(plan, "failed", error=exc)
        results.put_nowait(result)

    tasks = [asyncio.create_task(one(plan)) for plan in plans]
    try:
        for _ in tasks:
            yield await results.get()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _result(plan: Plan, state: str, *args: Any, **kwargs: Any) -> RunResult:
    return RunResult(plan.key, plan.index, plan.request, state, *args, **kwargs)


@attrs.define
class _Job:
    prism: PrismClient
    durable: Durable
    budget: Budget
    slots: asyncio.Semaphore
    folder: Path | None
    timeout: float | None
    poll: PollPolicy | None
    known: dict[str, Submission]
    """The run's keys as the ledger had them when the run started."""
    fresh: set[str] = attrs.field(factory=set)
    """Generation ids this run queued: nothing can have downloaded them before."""

    async def run_one(self, plan: Plan) -> RunResult:
        try:
            ids = await self._submit(plan)
        except _Ended as ended:
            return ended.result
        return await self._finish(plan, ids)

    async def _submit(self, plan: Plan) -> list[str]:
        """The request's generation ids: recorded, found by reconciliation, or sent for.

        An ambiguous key is a waiting state, not an end: it is reconciled until settled (see
        ``prism.reconcile(wait=True)``); rejected then, it is sent again.
        """
        key, credits = plan.key, self.budget.credits
        recorded = self.known.get(key)
        if recorded is not None and recorded.fingerprint != plan.fingerprint:
            raise _Ended(_result(plan, "conflict", error=SubmissionConflictError(key)))
        while True:
            if recorded is not None and recorded.state in ("ambiguous", "sending"):
                try:
                    recorded = await self.prism.reconcile(key, wait=True)
                except PrismError as exc:
                    raise _Ended(_result(plan, "ambiguous", error=exc)) from None
                credits.count(plan, recorded)
                if recorded.state == SubmissionState.AMBIGUOUS:  # a person must resolve it
                    error = AmbiguousSubmissionError(key, recorded)
                    raise _Ended(_result(plan, "ambiguous", error=error))
            if recorded is not None and recorded.done:
                return list(recorded.generation_ids)
            ids = await self._send_once(plan)
            if ids is not None:
                return ids
            recorded = await self.durable.ledger.get(key)  # ambiguous: settle it

    async def _send_once(self, plan: Plan) -> list[str] | None:
        """Send under a slot and the budget: the ids, or None when the outcome is ambiguous."""
        credits = self.budget.credits
        async with self.slots:
            if not await self.budget.reserve():
                raise _Ended(_result(plan, "skipped"))
            stop = False
            try:
                batch = await self._send(plan)
                credits.charge(plan, _charged(batch))
                self.fresh.update(batch.ids)
                return batch.ids
            except SubmissionConflictError as exc:
                raise _Ended(_result(plan, "conflict", error=exc)) from None
            except (AmbiguousSubmissionError, SubmissionInFlightError):
                credits.hold(plan)  # it may have been queued (and charged)
                return None
            except PrismError as exc:
                stop = isinstance(exc, InsufficientCreditsError)
                if exc.maybe_sent:
                    credits.hold(plan)
                    return None
                raise _Ended(_result(plan, "rejected", error=exc)) from None
            finally:
                await self.budget.release(stop=stop)

    async def _send(self, plan: Plan) -> GenerationBatch | TemplateGenerationBatch:
        request = plan.request
        if isinstance(request, GenerationRequest):
            return await self.prism.generations.create(key=plan.key, **request.arguments())
        return await self.prism.templates.generate(
            request.template_id,
            variables=request.variables,
            character_variables=request.character_variables,
            webhook_url=request.webhook_url,
            key=plan.key,
        )

    async def _finish(self, plan: Plan, ids: list[str]) -> RunResult:
        outcomes = await self.prism.wait_for_generations(
            ids, timeout=self.timeout, poll=self.poll, return_exceptions=True
        )
        finished: list[Generation] = []
        error: BaseException | None = None
        state = "completed"
        for outcome in outcomes:
            if isinstance(outcome, Generation):
                finished.append(outcome)
            elif isinstance(outcome, GenerationFailedError):
                finished.append(outcome.generation)
                state, error = "failed", outcome
            elif isinstance(outcome, WaitTimeoutError):
                state, error = ("timed_out" if state == "completed" else state), outcome
            elif isinstance(outcome, Exception):  # the wait itself failed (401, 404, ...)
                state, error = "failed", outcome
            else:
                raise outcome
        if self.folder is None or state == "timed_out":
            return _result(plan, state, tuple(finished), error=error)
        paths: list[Path] = []
        try:
            for generation in finished:
                if generation.is_completed:
                    paths.append(await self._download(generation, self.folder))
        except PrismError as exc:
            return _result(plan, state, tuple(finished), tuple(paths), error or exc)
        state = "downloaded" if state == "completed" else state
        return _result(plan, state, tuple(finished), tuple(paths), error)

    async def _download(self, generation: Generation, folder: Path) -> Path:
        if generation.id in self.fresh:
            return await self.prism.generations.download(generation, folder)
        record = await self.durable.ledger.generation(generation.id)
        done = await asyncio.to_thread(already_downloaded, record, folder, generation.id)
        if done is None:
            return await self.prism.generations.download(generation, folder)
        if record is None or record.path is None:
            size = await asyncio.to_thread(lambda: done.stat().st_size)
            await self.durable.downloaded(generation.id, str(done), size)
        return done


def _make_folder(download_to: str | os.PathLike[str]) -> Path:
    folder = Path(download_to).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _charged(batch: GenerationBatch | TemplateGenerationBatch) -> float | None:
    if isinstance(batch, GenerationBatch):
        return batch.metadata.credits_charged
    return batch.credits_charged


class _Ended(Exception):
    """A request's run ended before waiting: carries its result."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(result.state)
        self.result = result
