"""``prism.generations``: create generations, read their status, download their videos."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._callbacks import call_maybe_async
from .._converters import structure, structure_data, unstructure
from .._errors import GenerationFailedError, InvalidRequestError, PermissionDeniedError, PrismError
from .._transport._http import HTTPClient, ProgressCallback
from .._validation import check_text
from .._waiting._engine import Waiter
from .._waiting._scheduler import Fetch
from ..models.generations import Generation, GenerationBatch, GenerationMetadata, QueuedGeneration
from ..polling import OnUpdate
from ._base import Resource

if TYPE_CHECKING:
    from ..ledger._durable import Durable
    from ..ledger._model import Submission
    from ..ledger._spending import Spending

__all__ = ["Generations", "OnQueued", "status_fetch"]

logger = logging.getLogger("prism_async")

OnQueued = Callable[[GenerationBatch], object] | Callable[[GenerationBatch], Awaitable[object]]
"""``on_queued``: a plain or async callable receiving the batch as soon as it is queued."""


def _prepare_destination(
    destination: str | os.PathLike[str], generation_id: str
) -> tuple[Path, Path]:
    """The final path (``<id>.mp4`` inside a directory) and a unique temporary path beside it."""
    target = Path(destination).expanduser()
    if target.is_dir() or str(destination).endswith(("/", os.sep)):
        from ..ledger._downloads import safe_name  # (the ledger's modules: loaded on first use)

        target = target / f"{safe_name(generation_id)}.mp4"
    target.parent.mkdir(parents=True, exist_ok=True)
    return target, target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")


def _recorded_batch(submission: Submission) -> GenerationBatch:
    """The batch a ledger recorded for a key (ids and charge: what the API said that matters)."""
    ids = submission.generation_ids
    metadata = GenerationMetadata(
        model_name=submission.request.get("model_name"),
        credits_charged=submission.credits_charged,
        num_generations=len(ids),
    )
    return GenerationBatch([QueuedGeneration(id=i) for i in ids], metadata=metadata)


def status_fetch(http: HTTPClient) -> Fetch:
    """One status request, no retries: a wait's backoff spaces its requests."""

    async def fetch(generation_id: str) -> Generation:
        payload = await http.request("GET", ("generations", generation_id), retries=False)
        return structure(payload, Generation)

    return fetch


class Generations(Resource):
    """Endpoints under ``/api/generations``.

    Args:
        http: sends the requests.
        durable: the client's ledger rules, or None.
        waits: the client's wait engine (``create_and_wait``).
    """

    def __init__(
        self,
        http: HTTPClient,
        durable: Durable | None,
        spending: Spending | None,
        waits: Waiter,
    ) -> None:
        super().__init__(http, durable, spending, waits.births)
        self._waits = waits

    async def create(
        self,
        *,
        prompt: str,
        model_name: str,
        aspect_ratio: str | None = None,
        duration: str | int | None = None,
        resolution: str | None = None,
        count: int | None = None,
        has_audio: bool | None = None,
        start_frame_key: str | None = None,
        end_frame_key: str | None = None,
        ingredient_image_keys: list[str] | None = None,
        character_reference_image_keys: list[str] | None = None,
        source_video_key: str | None = None,
        reference_video_keys: list[str] | None = None,
        audio_key: str | None = None,
        template_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> GenerationBatch:
        """Queue ``count`` videos from a prompt. This costs credits.

        A paid POST is never sent twice: it is retried only when the connection could not be
        made or the server answered 429. With ``key=`` (on a client with a ledger) that holds
        across processes too: see the README's "Durable runs".

        Args:
            prompt: what the video shows.
            model_name: exact model id, e.g. ``veo-3.1``.
            aspect_ratio: one of ``auto 21:9 16:9 4:3 1:1 3:4 9:16``.
            duration: ``"8s"`` or ``8`` (sent as ``"8s"``).
            resolution: e.g. ``720p`` or ``1080p``.
            count: videos to queue, 1 to 4.
            has_audio: request generated audio (supported models).
            start_frame_key: storage key of a start frame image (see ``uploads.upload``).
            end_frame_key: storage key of an end frame image.
            ingredient_image_keys: image keys used as visual references.
            character_reference_image_keys: image keys used as character references.
            source_video_key: video key to edit (edit-capable models).
            reference_video_keys: video keys used as references.
            audio_key: audio key (audio-driven models).
            template_id: a template to associate with the generation.
            labels: ``{"campaign": "spring"}`` (str -> str): kept on the ledger row and its
                charge, for ``ledger.spend(by="label")``; never sent to the API.
            key: names this business intent in the client's ledger: a key already accepted
                returns its recorded batch and sends nothing.

        Returns:
            The queued generations; ``batch.ids`` are their ids.

        Raises:
            InvalidRequestError: bad input (or ``key=`` without a ledger), before anything is
                sent.
            AmbiguousSubmissionError, SubmissionConflictError, SubmissionInFlightError: the
                ledger refuses to send ``key`` (see the README's "Durable runs").
            APIStatusError: e.g. ``InsufficientCreditsError``, ``PricingError``.
            APIConnectionError: no answer.
            PrismError: any of them: ``maybe_sent`` says whether videos may have been queued
                (and charged), ``generation_ids`` names them when the answer showed them.
        """
        self._check_key(key)
        arguments = {name: value for name, value in locals().items() if name != "self"}
        from ..models.requests import GenerationRequest  # (after ``arguments``: not a local)

        request = GenerationRequest(**arguments)  # checked: nothing is sent if it is bad
        json_body = unstructure(request)

        async def send() -> GenerationBatch:
            payload = await self._http.request("POST", ("generations",), json_body=json_body)
            return structure_data(payload, GenerationBatch)

        return await self._paid(
            request,
            send,
            ids_of=lambda batch: batch.ids,
            credits_of=lambda batch: batch.metadata.credits_charged,
            replay=_recorded_batch,
        )

    async def create_and_wait(
        self,
        *,
        timeout: float | None = None,
        on_update: OnUpdate | None = None,
        on_queued: OnQueued | None = None,
        **create_args: Any,
    ) -> list[Generation]:
        """Queue generations like :meth:`create`, then wait for all of them.

        Once the POST has succeeded, no ending loses the ids: whatever ends the call (a failed
        generation, a timeout, ``asyncio.wait_for`` or any other cancellation) is logged at
        WARNING with the ids, and the exception's notes list them. A :class:`PrismError` also
        gets ``maybe_sent=True`` and ``generation_ids``.

        Args:
            timeout: seconds each wait may take; defaults to the client's poll policy.
            on_update: called with each Generation whenever its status changes; may be async.
            on_queued: called with the :class:`GenerationBatch` as soon as it is queued, before
                waiting starts (to record the ids); may be async.
            **create_args: the keyword arguments of :meth:`create`.

        Returns:
            The completed generations, in the order they were queued.

        Raises:
            GenerationFailedError, WaitTimeoutError: as :func:`wait_for_generations`.
        """
        batch = await self.create(**create_args)
        ids = ", ".join(batch.ids)
        logger.info("queued generations %s", ids)
        try:
            await call_maybe_async(on_queued, batch)
            generations: list[Generation] = await self._waits.many(
                batch.ids, timeout=timeout, poll=None, on_update=on_update, return_exceptions=False
            )
            return generations
        except BaseException as exc:
            logger.warning(
                "create_and_wait ended by %s; generations queued by this call: %s",
                type(exc).__name__,
                ids,
            )
            exc.add_note(f"generations queued by this call: {ids}")
            if isinstance(exc, PrismError):
                exc.maybe_sent = True
                exc.generation_ids = tuple(batch.ids)
            raise

    async def get(self, generation_id: str) -> Generation:
        """Fetch a generation's current status (works for API, template and dashboard ones).

        Raises:
            NotFoundError: no such generation.
        """
        check_text("generation_id", generation_id)
        payload = await self._http.request("GET", ("generations", generation_id))
        return structure(payload, Generation)

    async def download(
        self,
        generation_or_id: Generation | str,
        destination: str | os.PathLike[str],
        *,
        on_progress: ProgressCallback | None = None,
    ) -> Path:
        """Download a completed generation's video to ``destination``.

        The video streams to a temporary file beside the destination, which is renamed into
        place only once complete: a failure never leaves a partial file at ``destination``.
        No API key is sent to the storage host. An expired ``video_url`` (403 from storage) is
        refreshed by fetching the generation again, once.

        Args:
            generation_or_id: a :class:`Generation` or its id.
            destination: a file path, or an existing directory (then ``<id>.mp4`` inside it).
            on_progress: called with ``(bytes_written, total_bytes_or_None)``; may be async.

        Returns:
            The path of the written file.

        Raises:
            GenerationFailedError: the generation failed.
            InvalidRequestError: the generation is not completed yet.
        """
        if isinstance(generation_or_id, Generation):
            generation = generation_or_id
            if not generation.is_completed or not generation.video_url:
                generation = await self.get(generation.id)
        else:
            generation = await self.get(check_text("generation_or_id", generation_or_id))
        if generation.is_failed:
            raise GenerationFailedError(generation)
        if not generation.is_completed or not generation.video_url:
            raise InvalidRequestError(
                "generation_or_id",
                f"generation {generation.id} is not completed (status {generation.status!r}); "
                "wait for it before downloading",
            )

        target, partial = _prepare_destination(destination, generation.id)
        try:
            try:
                await self._http.download(generation.video_url, partial, on_progress=on_progress)
            except PermissionDeniedError:
                # Presigned URLs expire after an hour: fetch a fresh one, once.
                fresh = await self.get(generation.id)
                if not fresh.is_completed or not fresh.video_url:
                    raise
                await self._http.download(fresh.video_url, partial, on_progress=on_progress)
            # Replacing an existing large file frees its blocks: keep that off the event loop.
            await asyncio.to_thread(os.replace, partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if self._durable is not None:
            await self._durable.downloaded(generation.id, str(target), target.stat().st_size)
        return target
