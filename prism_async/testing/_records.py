"""What the fake keeps (requests, objects, generations, webhook deliveries) and the errors its
rules raise. Plain attrs classes: no HTTP in here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import define, frozen

from .. import _rules
from .._rules import Paging
from . import _data

__all__ = [
    "FakeAPIError",
    "FakeGeneration",
    "RecordedRequest",
    "StorageError",
    "StoredObject",
    "WebhookDelivery",
]


class FakeAPIError(Exception):
    """A documented API error: the handlers answer it as ``{"error": code, "message": ...}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class StorageError(FakeAPIError):
    """An S3-style storage error: the handlers answer it as an XML ``<Error>`` document."""


def invalid(message: str) -> FakeAPIError:
    """``400 validation_error`` with ``message``."""
    return FakeAPIError(400, "validation_error", message)


def json_object(body: Any) -> dict[str, Any]:
    """A request's JSON body, which must be an object (None stands for a body that was not JSON)."""
    if not isinstance(body, dict):
        raise invalid("Invalid JSON request body")
    return body


def check(problems: Mapping[str, str | None]) -> None:
    """Raise ``400 validation_error`` for the first field a shared rule found a problem with."""
    for name, problem in problems.items():
        if problem is not None:
            raise invalid(f"{name}: {problem}")


def page(
    items: list[dict[str, Any]], query: Mapping[str, str], paging: Paging, **checks: str | None
) -> dict[str, Any]:
    """One page of a listing, after checking ``limit``, ``offset`` and the other ``checks``."""
    try:
        limit = int(query.get("limit", paging.default_limit))
        offset = int(query.get("offset", 0))
    except ValueError:
        raise invalid("limit and offset must be integers") from None
    checks["limit"] = _rules.limit_problem(limit, paging)
    checks["offset"] = _rules.offset_problem(offset)
    check(checks)
    has_more = offset + limit < len(items)
    return _data.page(items[offset : offset + limit], limit=limit, offset=offset, has_more=has_more)


def matches(q: str | None, *texts: Any) -> bool:
    return q is None or q.lower() in " ".join(str(t or "") for t in texts).lower()


@frozen
class RecordedRequest:
    """One request the fake received."""

    method: str
    """HTTP method."""
    path: str
    """Decoded path, e.g. ``/api/generations``."""
    query: dict[str, str]
    """Query parameters."""
    headers: dict[str, str]
    """Request headers."""
    json: Any
    """The JSON body, or None when there was none (or it was not JSON)."""
    raw_path: str = ""
    """The path exactly as sent (still percent-encoded)."""


@frozen
class StoredObject:
    """A file uploaded through a presigned URL."""

    content_type: str
    """The Content-Type it was stored with."""
    data: bytes
    """Its bytes."""


@frozen
class WebhookDelivery:
    """One webhook POST the fake made (or tried to make)."""

    url: str
    """Where it was sent."""
    payload: dict[str, Any]
    """The JSON body."""
    status: int | None
    """The receiver's status, or None when delivery failed."""
    error: str | None = None
    """Why delivery failed, if it did."""


@define
class FakeGeneration:
    """A generation inside the fake, and the clock times that decide its status."""

    id: str
    created: float
    duration: float
    prompt: str
    model_name: str | None = None
    template_id: str | None = None
    webhook_url: str | None = None
    fail_reason: str | None = None
    forced: str | None = None
    forced_at: float | None = None
    webhook_sent: bool = False

    def status_at(self, now: float) -> str:
        """The status at server-clock time ``now``."""
        if self.forced is not None:
            return self.forced
        elapsed = now - self.created
        if elapsed >= self.duration:
            return "failed" if self.fail_reason else "completed"
        if self.template_id is not None or elapsed >= self.duration * 0.1:
            return "generating"
        return "queued"

    def finished_at(self) -> float:
        """The server-clock time it finished (or will finish)."""
        return self.forced_at if self.forced_at is not None else self.created + self.duration
