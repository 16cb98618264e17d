"""Models for ``/api/generations``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from attrs import field, frozen

__all__ = [
    "Generation",
    "GenerationBatch",
    "GenerationMetadata",
    "GenerationStatus",
    "QueuedGeneration",
]


class GenerationStatus:
    """The status strings the API documents. Others may appear: they mean "still running"."""

    QUEUED = "queued"
    GENERATING = "generating"
    COMPLETED = "completed"
    FAILED = "failed"
    TERMINAL = frozenset({COMPLETED, FAILED})


@frozen
class QueuedGeneration:
    """One video queued by ``generations.create``."""

    id: str
    """Generation id (``gen_...``): pass it to ``generations.get`` or the waits."""
    asset_id: str | None = None
    """Asset record reserved for the generated video, if any."""
    request_id: str | None = None
    """The provider's request id, when available."""
    status: str | None = None
    """Initial status, usually ``queued``."""


@frozen
class GenerationMetadata:
    """Model and billing metadata of a submission. ``raw`` keeps every key the API sent."""

    model_name: str | None = None
    """The model that was asked for."""
    selected_model_name: str | None = None
    """The model that was actually used."""
    credits_charged: float | None = None
    """Credits deducted for the whole submission."""
    num_generations: int | None = None
    """How many videos were queued."""
    raw: dict[str, Any] = field(factory=dict)
    """The metadata object exactly as received, unknown keys included."""


@frozen
class GenerationBatch:
    """The response of ``generations.create``: the queued videos and what they cost."""

    generations: list[QueuedGeneration]
    """One entry per queued video."""
    endpoint_id: str | None = None
    """Provider endpoint used for the generation."""
    variant: str | None = None
    """Resolved generation variant, e.g. ``text-to-video``."""
    metadata: GenerationMetadata = field(factory=GenerationMetadata)
    """Model and billing metadata."""

    @property
    def ids(self) -> list[str]:
        """The generation ids, in order."""
        return [generation.id for generation in self.generations]


@frozen
class Generation:
    """The status of one generation, from ``GET /api/generations/:id``."""

    id: str
    """Generation id."""
    status: str
    """``queued``, ``generating``, ``completed`` or ``failed``; unknown values are kept as is."""
    template_id: str | None = None
    """The template it was made from, if any."""
    video_url: str | None = None
    """Presigned download URL (completed only). Expires after an hour."""
    share_url: str | None = None
    """Public share page (completed only)."""
    created_at: datetime | None = None
    """When it was submitted (timezone-aware)."""
    completed_at: datetime | None = None
    """When it completed (timezone-aware)."""
    error: str | None = None
    """Why it failed (failed only)."""

    @property
    def is_done(self) -> bool:
        """True when the status is terminal (``completed`` or ``failed``)."""
        return self.status in GenerationStatus.TERMINAL

    @property
    def is_completed(self) -> bool:
        """True when the video is ready."""
        return self.status == GenerationStatus.COMPLETED

    @property
    def is_failed(self) -> bool:
        """True when the generation failed."""
        return self.status == GenerationStatus.FAILED
