"""The exception tree of prism_async, and the pure mapping from an HTTP response to an error.

Every exception the SDK raises derives from :class:`PrismError`::

    PrismError                        every one has .maybe_sent and .generation_ids
    ├── APIConnectionError            no HTTP response at all
    │   └── APITimeoutError           the request ran out of time (also a TimeoutError)
    ├── APIStatusError                any non-2xx (.status_code .code .message .body .headers
    │   │                                          .retry_after)
    │   ├── BadRequestError           400
    │   │   └── PricingError          400 pricing_error
    │   ├── AuthenticationError       401
    │   ├── InsufficientCreditsError  402
    │   ├── PermissionDeniedError     403
    │   ├── NotFoundError             404
    │   ├── InvalidTemplateError      422
    │   ├── RateLimitError            429
    │   └── InternalServerError       5xx
    │       └── FreeTierPausedError   503 free_tier_paused
    ├── ResponseValidationError       a 2xx body that is not the documented shape (.body)
    ├── InvalidRequestError           bad input caught before sending (also a ValueError; .field)
    ├── ClientClosedError             the client was closed (also a RuntimeError)
    ├── GenerationFailedError         a generation ended "failed" (.generation)
    ├── WaitTimeoutError              a wait ran past its timeout (also a TimeoutError;
    │                                 .generation_id, .last)
    ├── AmbiguousSubmissionError      a ledger key that may have been queued (.key .submission)
    ├── SubmissionConflictError       a ledger key reused for another request (.key)
    ├── SubmissionInFlightError       a ledger key a live process is sending (.key)
    ├── BudgetExceededError           a budget cannot hold a paid request's price (.budget
    │                                 .max_credits .spent .reserved .needed); nothing sent
    └── LedgerUnavailableError        the ledger (Redis, a database) cannot be reached (.ledger)

``asyncio.CancelledError`` is never caught, wrapped or replaced.

``maybe_sent`` answers the question a paid POST raises: may money have been spent? It is True
for a 5xx (but ``free_tier_paused``), a timeout or a dropped connection after sending, and a 2xx
whose body could not be read; False when nothing left the process, the connection could not be
made, or the server refused the request (3xx, 4xx). ``generation_ids`` names the generations the
failed call is known to have queued, read from whatever part of the answer arrived.

:func:`error_from_response` and :func:`generation_ids_in` are pure: they never do I/O, so they
are tested with recorded samples alone.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from ._transport._salvage import generation_ids_in

if TYPE_CHECKING:
    from .ledger._model import Submission
    from .models.generations import Generation

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousSubmissionError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ClientClosedError",
    "FreeTierPausedError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidRequestError",
    "InvalidTemplateError",
    "LedgerUnavailableError",
    "NotFoundError",
    "PermissionDeniedError",
    "PricingError",
    "PrismError",
    "RateLimitError",
    "ResponseValidationError",
    "SubmissionConflictError",
    "SubmissionInFlightError",
    "WaitTimeoutError",
    "error_from_response",
    "generation_ids_in",
    "parse_retry_after",
]

_MAX_TEXT = 500


class PrismError(Exception):
    """Root of every exception raised by prism_async.

    Attributes:
        maybe_sent: whether the request behind this error may have reached the server and been
            acted on. For a paid POST (``generations.create``, ``templates.generate``) True means
            videos may have been queued and charged: find out before sending it again. False
            when it provably was not: nothing was sent, the connection could not be made, or
            the server refused the request (3xx, 4xx, ``free_tier_paused``).
        generation_ids: generations the failed call is known to have queued (read from an
            answer that arrived only in part, or, from ``create_and_wait``, the batch it was
            waiting on); empty when none are known.
    """

    maybe_sent: bool = False
    generation_ids: tuple[str, ...] = ()


class APIConnectionError(PrismError):
    """No HTTP response was received: refused, reset, DNS or TLS failure, or a dropped connection.

    ``maybe_sent`` is False only when the connection could not be made (or nothing was sent),
    so the request provably never reached the server.
    """

    def __init__(
        self, message: str, *, maybe_sent: bool, generation_ids: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.maybe_sent = maybe_sent
        self.generation_ids = generation_ids


class APITimeoutError(APIConnectionError, TimeoutError):
    """The request ran out of time. A timeout while still connecting has ``maybe_sent=False``."""


class APIStatusError(PrismError):
    """The API (or the storage host) answered with a non-2xx status.

    Attributes:
        status_code: the HTTP status.
        code: the API's ``error`` string (e.g. ``insufficient_credits``), or None.
        message: the API's human-readable ``message``, or the raw text of a non-JSON body.
        body: the parsed JSON body, or the raw text when the body was not JSON.
        headers: the response headers (case-insensitive when they came from aiohttp).
        retry_after: seconds the server asked to wait (its ``Retry-After``), or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        self.body = body
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.retry_after = retry_after
        self.maybe_sent = status_code >= 500 and code != "free_tier_paused"
        label = f"{status_code} {code}" if code else str(status_code)
        super().__init__(f"{label}: {message}" if message else label)


class BadRequestError(APIStatusError):
    """400: invalid JSON, missing or invalid parameters (``validation_error``)."""


class PricingError(BadRequestError):
    """400 ``pricing_error``: no pricing exists for this model configuration."""


class AuthenticationError(APIStatusError):
    """401 ``unauthorized``: the API key is missing, invalid, expired or revoked."""


class InsufficientCreditsError(APIStatusError):
    """402 ``insufficient_credits``: the account does not have enough credits.

    Raised without sending, too, while paid requests are paused after a 402 seen by any
    process sharing the ledger: then ``paused_until`` says until when.
    """

    paused_until: datetime | None = None


class PermissionDeniedError(APIStatusError):
    """403: the key lacks a scope (``forbidden``), or a storage URL refused access (expired)."""


class NotFoundError(APIStatusError):
    """404 ``not_found``: no such template or generation."""


class InvalidTemplateError(APIStatusError):
    """422 ``invalid_template``: the template's own configuration is invalid."""


class RateLimitError(APIStatusError):
    """429: too many requests; ``retry_after`` is the server's ``Retry-After`` in seconds."""


class InternalServerError(APIStatusError):
    """5xx: an unexpected server error (``server_error``, ``generation_error``, gateway errors)."""


class FreeTierPausedError(InternalServerError):
    """503 ``free_tier_paused``: free-tier generation is temporarily paused. Never retried."""


class ResponseValidationError(PrismError):
    """A 2xx response whose body is not the documented shape.

    The server answered success, so ``maybe_sent`` is True; ``generation_ids`` holds every id
    that could still be read from the body.

    Attributes:
        body: the raw body text (or the parsed JSON when it parsed but did not fit).
    """

    maybe_sent = True

    def __init__(self, message: str, *, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.body = body
        self.generation_ids = generation_ids_in(body)


class InvalidRequestError(PrismError, ValueError):
    """Bad input, caught before anything was sent.

    Attributes:
        field: the name of the offending argument or field.
        reason: why it was refused.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ClientClosedError(PrismError, RuntimeError):
    """The client was closed: it sends nothing more, and waits still running end with this."""


class GenerationFailedError(PrismError):
    """A generation ended with status ``failed``.

    Attributes:
        generation: the failed :class:`~prism_async.Generation`; its ``error`` holds the reason.
    """

    def __init__(self, generation: Generation) -> None:
        reason = generation.error or "no reason given"
        super().__init__(f"generation {generation.id} failed: {reason}")
        self.generation = generation


class WaitTimeoutError(PrismError, TimeoutError):
    """A wait for a generation ran past its timeout. The generation itself may still finish.

    Attributes:
        generation_id: the id that was awaited.
        last: the last :class:`~prism_async.Generation` seen, or None if none was seen.
    """

    def __init__(self, generation_id: str, timeout: float, last: Generation | None) -> None:
        status = last.status if last is not None else "unknown"
        super().__init__(
            f"generation {generation_id} was not done after {timeout:g}s (last status: {status})"
        )
        self.generation_id = generation_id
        self.timeout = timeout
        self.last = last


class AmbiguousSubmissionError(PrismError):
    """A ledger key whose submission may have been queued (and charged), so it is not sent
    again: reconcile it (``prism.reconcile(key)``) or resolve it (``ledger.resolve``).

    Attributes:
        key: the key.
        submission: its :class:`~prism_async.ledger.Submission` (``error`` says why).
    """

    maybe_sent = True

    def __init__(self, key: str, submission: Submission) -> None:
        why = f": {submission.error}" if submission.error else ""
        super().__init__(f"the submission {key!r} may have been queued{why}")
        self.key = key
        self.submission = submission
        self.generation_ids = submission.generation_ids


class SubmissionConflictError(PrismError):
    """A ledger key was used for another request than the one recorded for it."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} was recorded for another request; use a new key")
        self.key = key


class SubmissionInFlightError(PrismError):
    """Another live process (or task) is sending this ledger key right now."""

    maybe_sent = True

    def __init__(self, key: str) -> None:
        super().__init__(f"the submission {key!r} is being sent by a live process")
        self.key = key


class BudgetExceededError(PrismError):
    """A paid request whose quoted price the client's budget cannot hold: nothing was sent.

    Attributes:
        budget: the budget's name.
        max_credits: its cap.
        spent: what it was charged (within its window).
        reserved: what paid requests in flight (or not settled yet) hold.
        needed: what this request would have reserved (its quote), or None (unknown price).
    """

    def __init__(
        self,
        budget: str,
        *,
        max_credits: float,
        spent: float,
        reserved: float,
        needed: float | None,
    ) -> None:
        wanted = "an unknown price" if needed is None else f"{needed:g} credits"
        super().__init__(
            f"budget {budget!r} cannot hold {wanted}: {spent:g} spent and {reserved:g} reserved "
            f"of {max_credits:g}; nothing was sent"
        )
        self.budget = budget
        self.max_credits = max_credits
        self.spent = spent
        self.reserved = reserved
        self.needed = needed


class LedgerUnavailableError(PrismError):
    """The ledger could not be reached (Redis down, a database that cannot be written) after
    retrying with backoff. Never an API error: the API may be fine. A paid request is never
    sent while its ledger row cannot be committed.

    Attributes:
        ledger: the ledger's repr (never a URL with a password).
    """

    def __init__(self, message: str, *, ledger: str = "") -> None:
        super().__init__(message)
        self.ledger = ledger


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: InvalidTemplateError,
    429: RateLimitError,
}
_BY_CODE: dict[tuple[int, str], type[APIStatusError]] = {
    (400, "pricing_error"): PricingError,
    (503, "free_tier_paused"): FreeTierPausedError,
}
_XML_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]{1,1000})</Message>")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Read a ``Retry-After`` header: seconds (fractions accepted) or an HTTP date.

    Returns:
        The delay in seconds (never negative), or None when absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or infinite
        return None
    return max(0.0, seconds)


def _describe_body(body: bytes) -> tuple[Any, str | None, str]:
    """Return ``(parsed body, code, message)`` from an error body of any shape."""
    text = body.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        message = parsed.get("message")
        if isinstance(error, dict):  # defensive: {"error": {"code": ..., "message": ...}}
            message = message or error.get("message")
            error = error.get("code")
        code = error if isinstance(error, str) else None
        if not isinstance(message, str):
            message = code or ""
        return parsed, code, message
    # Not the documented JSON shape: an S3-style XML error, a proxy's HTML page, or nothing.
    xml_code = _XML_CODE.search(body)
    if xml_code:
        xml_message = _XML_MESSAGE.search(body)
        message = xml_message.group(1).decode("utf-8", "replace") if xml_message else ""
        return text, xml_code.group(1).decode("utf-8", "replace"), message
    snippet = " ".join(text.split())
    if len(snippet) > _MAX_TEXT:
        snippet = snippet[:_MAX_TEXT] + "..."
    return (text if text else None), None, snippet


def error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
) -> APIStatusError:
    """Map a non-2xx response to its typed exception. Pure: no I/O.

    The class is chosen by status and, where two codes share a status, by the ``error``
    string. A body that is not JSON (an HTML proxy page, an empty body) still gives the class
    for its status, with the raw text kept in ``.body`` and ``.message``.
    """
    parsed, code, message = _describe_body(body)
    if not message:
        message = _default_reason(status)
    cls = _BY_CODE.get((status, code or "")) or _BY_STATUS.get(status)
    if cls is None:
        cls = InternalServerError if status >= 500 else APIStatusError
    retry_after = parse_retry_after(headers.get("Retry-After"), now=now)
    return cls(
        message,
        status_code=status,
        code=code,
        body=parsed,
        headers=headers,
        retry_after=retry_after,
    )


def _default_reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"
