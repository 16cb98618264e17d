"""The pure error mapping: (status, headers, body) -> typed exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from prism_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    FreeTierPausedError,
    Generation,
    GenerationFailedError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidRequestError,
    InvalidTemplateError,
    NotFoundError,
    PermissionDeniedError,
    PricingError,
    PrismError,
    RateLimitError,
    ResponseValidationError,
    WaitTimeoutError,
)
from prism_async._errors import error_from_response, parse_retry_after

DOCUMENTED = [
    (400, "validation_error", BadRequestError),
    (400, "pricing_error", PricingError),
    (401, "unauthorized", AuthenticationError),
    (402, "insufficient_credits", InsufficientCreditsError),
    (403, "forbidden", PermissionDeniedError),
    (404, "not_found", NotFoundError),
    (422, "invalid_template", InvalidTemplateError),
    (500, "server_error", InternalServerError),
    (500, "generation_error", InternalServerError),
    (503, "free_tier_paused", FreeTierPausedError),
]


def body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


@pytest.mark.parametrize(("status", "code", "cls"), DOCUMENTED)
def test_every_documented_code_maps_to_its_class(
    status: int, code: str, cls: type[APIStatusError]
) -> None:
    """Each documented (status, code) pair gives its exact class with status, code and message."""
    error = error_from_response(status, {}, body(code, "Something specific"))
    assert type(error) is cls
    assert error.status_code == status
    assert error.code == code
    assert error.message == "Something specific"
    assert error.body == {"error": code, "message": "Something specific"}
    assert str(error) == f"{status} {code}: Something specific"


def test_shared_statuses_are_told_apart_by_code() -> None:
    """400 validation_error and 400 pricing_error, 503 free_tier_paused and a bare 503 differ."""
    assert type(error_from_response(400, {}, body("validation_error", "x"))) is BadRequestError
    assert isinstance(error_from_response(400, {}, body("pricing_error", "x")), BadRequestError)
    assert type(error_from_response(503, {}, body("unavailable", "x"))) is InternalServerError
    assert type(error_from_response(503, {}, body("free_tier_paused", "x"))) is FreeTierPausedError


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (429, RateLimitError),
        (502, InternalServerError),
        (504, InternalServerError),
        (409, APIStatusError),
    ],
)
def test_html_proxy_page_still_gives_class_by_status(status: int, cls: type) -> None:
    """A non-JSON body (a proxy's HTML page) gives the class for its status and keeps the text."""
    html = b"<html><body><h1>502 Bad Gateway</h1>\n<p>nginx</p></body></html>"
    error = error_from_response(status, {"Content-Type": "text/html"}, html)
    assert type(error) is cls
    assert error.status_code == status
    assert error.code is None
    assert error.body == html.decode()
    assert "502 Bad Gateway" in error.message


def test_empty_body_uses_the_http_reason() -> None:
    """An empty error body still gives a readable message."""
    error = error_from_response(500, {}, b"")
    assert type(error) is InternalServerError
    assert error.message == "Internal Server Error"
    assert error.body is None


def test_s3_xml_error_body_gives_code_and_message() -> None:
    """A storage host's XML error keeps its Code and Message."""
    xml = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        b"<Message>Request has expired</Message></Error>"
    )
    error = error_from_response(403, {}, xml)
    assert type(error) is PermissionDeniedError
    assert error.code == "AccessDenied"
    assert error.message == "Request has expired"


def test_long_text_bodies_are_shortened_in_the_message_but_kept_whole() -> None:
    """The message stays readable; the raw body is kept in full."""
    text = b"x" * 5000
    error = error_from_response(500, {}, text)
    assert len(error.message) < 600
    assert error.body == text.decode()


def test_json_without_message_uses_code() -> None:
    """A JSON body with only an error code still yields a message."""
    error = error_from_response(404, {}, b'{"error": "not_found"}')
    assert error.code == "not_found"
    assert error.message == "not_found"


def test_rate_limit_reads_retry_after_seconds_and_dates() -> None:
    """RateLimitError.retry_after comes from Retry-After, in seconds or as an HTTP date."""
    now = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
    error = error_from_response(429, {"Retry-After": "7"}, b"", now=now)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 7.0
    dated = error_from_response(429, {"Retry-After": "Sat, 21 Nov 2026 12:00:30 GMT"}, b"", now=now)
    assert isinstance(dated, RateLimitError)
    assert dated.retry_after == 30.0
    missing = error_from_response(429, {}, b"")
    assert isinstance(missing, RateLimitError)
    assert missing.retry_after is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("1.5", 1.5),
        (" 2 ", 2.0),
        ("-4", 0.0),
        ("Sat, 21 Nov 2026 11:59:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After parsing accepts seconds and dates, clamps the past to 0, rejects junk."""
    now = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == expected


def test_tree_and_builtin_bases() -> None:
    """Everything derives from PrismError; timeouts are TimeoutError, bad input is ValueError."""
    for cls in (
        APIConnectionError,
        APIStatusError,
        ResponseValidationError,
        InvalidRequestError,
        GenerationFailedError,
        WaitTimeoutError,
    ):
        assert issubclass(cls, PrismError)
    assert issubclass(APITimeoutError, TimeoutError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(WaitTimeoutError, TimeoutError)
    assert issubclass(InvalidRequestError, ValueError)
    assert issubclass(FreeTierPausedError, InternalServerError)


def test_domain_errors_carry_their_context() -> None:
    """GenerationFailedError, WaitTimeoutError and InvalidRequestError keep what callers need."""
    failed = Generation(id="gen_1", status="failed", error="Generation timed out")
    error = GenerationFailedError(failed)
    assert error.generation is failed
    assert "Generation timed out" in str(error)
    timeout = WaitTimeoutError("gen_2", 30.0, None)
    assert timeout.generation_id == "gen_2"
    assert timeout.last is None
    bad = InvalidRequestError("count", "must be from 1 to 4, got 9")
    assert (bad.field, bad.reason) == ("count", "must be from 1 to 4, got 9")
    assert str(bad) == "count: must be from 1 to 4, got 9"
