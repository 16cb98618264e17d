"""Prices learnt from what the API charged: the priced shape of a request, and its quote.

A request's *shape* is the fields that set its price: model, duration, resolution, count and
audio for a prompt (an omitted ``count`` is one video, an omitted ``has_audio`` no audio), the
template id for a template. Every accepted submission of a client with a ledger teaches the
ledger the price of its shape, and the per-video price of the same shape without its count.
"""

from __future__ import annotations

import json

from attrs import frozen

from ..models.requests import GenerationRequest, TemplateRequest

__all__ = ["Quote", "Shape", "base_of", "shape_of"]


@frozen
class Shape:
    """A request's priced shape (``key``), the same without its count (``base``), its count."""

    key: str
    base: str
    count: int
    kind: str
    model: str
    """The model name, or the template id."""


def shape_of(request: GenerationRequest | TemplateRequest) -> Shape:
    """The priced shape of a request."""
    if isinstance(request, TemplateRequest):
        key = json.dumps(["template", request.template_id])
        return Shape(key, key, 1, "template", request.template_id)
    fields = {
        "model": request.model_name,
        "duration": request.duration,
        "resolution": request.resolution,
        "has_audio": bool(request.has_audio),
        "template_id": request.template_id,
    }
    count = request.count or 1
    base = json.dumps(["generation", fields], sort_keys=True)
    key = json.dumps(["generation", {**fields, "count": count}], sort_keys=True)
    return Shape(key, base, count, "generation", request.model_name)


@frozen
class Quote:
    """What a submission would cost, from the prices the ledger has seen.

    ``basis`` is ``"seen"`` (this exact shape was charged before: ``credits`` is its latest
    charge), ``"estimated"`` (the per-video price of the same model and settings, times
    ``count``) or ``"unknown"`` (``credits`` is None). ``samples`` is how many charges it is
    learnt from.
    """

    credits: float | None
    basis: str
    samples: int = 0


def base_of(shape: str) -> str | None:
    """A generation shape without its count (the per-video price's key); None for another
    shape (a template's, or a row from before prices were kept)."""
    try:
        kind, fields = json.loads(shape)
    except (ValueError, TypeError):
        return None
    if kind != "generation" or not isinstance(fields, dict):
        return None
    fields.pop("count", None)
    return json.dumps([kind, fields], sort_keys=True)
