"""Models for ``/api/templates``."""

from __future__ import annotations

from attrs import field, frozen

__all__ = [
    "LatencyEstimate",
    "Template",
    "TemplateGeneration",
    "TemplateGenerationBatch",
    "TemplateVariable",
]


@frozen
class TemplateGeneration:
    """One video queued by ``templates.generate``."""

    generation_id: str
    """Generation id to poll."""
    status: str | None = None
    """Initial status, ``generating`` on success."""

    @property
    def id(self) -> str:
        """Alias of ``generation_id``, for symmetry with :class:`QueuedGeneration`."""
        return self.generation_id


@frozen
class LatencyEstimate:
    """How long the template's videos usually take, in seconds."""

    typical: float | None = None
    """Typical time to completion."""
    busy: float | None = None
    """Time to completion when the service is busy."""


@frozen
class TemplateGenerationBatch:
    """The response of ``templates.generate``."""

    generations: list[TemplateGeneration]
    """One entry per queued video."""
    template_id: str | None = None
    """The template used."""
    credits_charged: float | None = None
    """Total credits deducted."""
    latency_estimate: LatencyEstimate | None = None
    """Server estimate of the time to completion (``latency_estimate_sec``), if sent."""

    @property
    def ids(self) -> list[str]:
        """The generation ids, in order."""
        return [generation.generation_id for generation in self.generations]


@frozen
class TemplateVariable:
    """One input variable of a template (older template shape)."""

    key: str
    """The key to use in ``variables``."""
    label: str | None = None
    """Human label."""
    type: str | None = None
    """``text``, ``image``, ``video`` or ``audio``."""
    required: bool = False
    """Whether a value (or a default) is needed."""
    placeholder: str | None = None
    """Example value."""
    description: str | None = None
    """What the variable is for."""
    default_value: str | None = None
    """Value used when the variable is omitted."""
    max_length: int | None = None
    """Longest accepted text."""
    min_length: int | None = None
    """Shortest accepted text."""
    slot: str | None = None
    """Where the value is used in the template."""


@frozen
class Template:
    """A template. Both documented shapes fit: every field but ``id`` is optional."""

    id: str
    """Template id (``abc123`` or ``featured-ugc-pitch``)."""
    title: str | None = None
    """Display title."""
    description: str | None = None
    """What the template makes."""
    category: str | None = None
    """Category (older shape)."""
    duration_sec: float | None = None
    """Video duration in seconds (older shape)."""
    input_variables: list[TemplateVariable] = field(factory=list)
    """Variables accepted by ``templates.generate`` (older shape)."""
    prompt_template: str | None = None
    """The prompt with variable slots (older shape)."""
    kind: str | None = None
    """``image`` or ``video`` (newer shape)."""
    model_name: str | None = None
    """The model the template uses (newer shape)."""
