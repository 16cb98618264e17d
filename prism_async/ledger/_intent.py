"""What the ledger fingerprints for a paid request: its kind and its body as sent."""

from __future__ import annotations

from typing import Any

from .._converters import unstructure
from ..models.requests import GenerationRequest, TemplateRequest

__all__ = ["intent_of"]


def intent_of(request: GenerationRequest | TemplateRequest) -> tuple[str, dict[str, Any]]:
    """``("generation", body)`` with an omitted ``count`` being one video (the same request),
    or ``("template", {"template_id": ..., **body})`` less ``webhook_url`` (where to report,
    not what to make)."""
    body: dict[str, Any] = unstructure(request)
    if isinstance(request, GenerationRequest):
        return "generation", {"count": 1, **body}
    intent = {name: value for name, value in body.items() if name != "webhook_url"}
    return "template", {"template_id": request.template_id, **intent}
