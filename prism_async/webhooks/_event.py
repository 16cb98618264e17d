"""Webhook payloads: the event a delivery carries, its parser, and the answer to send back.

Re-exported by :mod:`prism_async.webhooks` (the public place to import them from).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from attrs import frozen

from .._errors import PrismError
from ..models.generations import GenerationStatus

__all__ = ["InvalidWebhookError", "WebhookEvent", "WebhookReply", "parse_webhook"]


class InvalidWebhookError(PrismError):
    """A webhook body that is not the documented payload (answered with 400)."""


@frozen
class WebhookEvent:
    """One webhook delivery: a template generation completed or failed.

    It is unauthenticated input: use it as a hint and read the generation itself (a wait does).
    """

    generation_id: str
    """The generation the event is about."""
    status: str
    """``completed`` or ``failed`` (other values are kept as sent)."""
    template_id: str | None = None
    """The template it was made from."""
    video_url: str | None = None
    """The video URL *claimed* by the sender; never download from it without confirming."""
    error: str | None = None
    """Why it failed, as claimed by the sender."""

    @property
    def is_terminal(self) -> bool:
        """Whether the event claims the generation is done."""
        return self.status in GenerationStatus.TERMINAL


@frozen
class WebhookReply:
    """What to answer the sender: an HTTP status and a short text."""

    status: int
    """200, 400, 401 or 413."""
    message: str
    """A short plain-text reason."""


def _optional_text(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def parse_webhook(body: bytes | str) -> WebhookEvent:
    """Parse a webhook body: strict about ``generation_id`` and ``status``, lenient otherwise.

    Raises:
        InvalidWebhookError: not JSON, not an object, or without a ``generation_id`` string and
            a ``status`` string.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidWebhookError("webhook body is not JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidWebhookError("webhook body is not a JSON object")
    generation_id = payload.get("generation_id")
    if not isinstance(generation_id, str) or not generation_id.strip():
        raise InvalidWebhookError("webhook body has no generation_id string")
    status = payload.get("status")
    if not isinstance(status, str) or not status.strip():
        raise InvalidWebhookError("webhook body has no status string")
    return WebhookEvent(
        generation_id=generation_id,
        status=status,
        template_id=_optional_text(payload, "template_id"),
        video_url=_optional_text(payload, "video_url"),
        error=_optional_text(payload, "error"),
    )
