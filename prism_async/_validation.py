"""Checks on user input, run before anything is sent. Each failure names the field and why."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ._errors import InvalidRequestError

__all__ = [
    "ASPECT_RATIOS",
    "check_choice",
    "check_count",
    "check_http_url",
    "check_int_range",
    "check_query",
    "check_str_list",
    "check_str_map",
    "check_text",
    "normalize_duration",
    "optional_text",
]

ASPECT_RATIOS = ("auto", "21:9", "16:9", "4:3", "1:1", "3:4", "9:16")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*s?\s*$")


def check_text(field: str, value: Any, *, max_length: int | None = None) -> str:
    """A required, non-blank string."""
    if not isinstance(value, str):
        raise InvalidRequestError(field, f"must be a string, not {type(value).__name__}")
    if not value or value.isspace():
        raise InvalidRequestError(field, "must not be empty")
    if max_length is not None and len(value) > max_length:
        raise InvalidRequestError(field, f"must be at most {max_length} characters")
    return value


def optional_text(field: str, value: Any, *, max_length: int | None = None) -> str | None:
    """None, or a non-blank string."""
    return None if value is None else check_text(field, value, max_length=max_length)


def check_count(value: Any) -> int | None:
    """``count``: an integer from 1 to 4."""
    if value is None:
        return None
    return check_int_range("count", value, 1, 4)


def check_int_range(field: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(field, f"must be an integer, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise InvalidRequestError(field, f"must be {bounds}, got {value}")
    return value


def check_choice(field: str, value: Any, choices: Sequence[str]) -> str | None:
    """None, or one of ``choices``."""
    if value is None:
        return None
    if value not in choices:
        raise InvalidRequestError(field, f"must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def normalize_duration(value: Any) -> str | None:
    """``duration``: ``"8s"``, ``"8"`` or ``8`` become ``"8s"``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequestError("duration", "must be a number of seconds such as 8 or '8s'")
    match = _DURATION.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise InvalidRequestError(
            "duration", f"must be a positive number of seconds such as '8s'; got {value!r}"
        )
    number = float(match.group(1))
    return f"{int(number) if number.is_integer() else number}s"


def check_http_url(field: str, value: Any) -> str | None:
    """None, or an absolute http(s) URL."""
    if value is None:
        return None
    check_text(field, value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequestError(field, f"must be an http(s) URL; got {value!r}")
    return str(value)


def check_str_list(field: str, value: Any) -> list[str] | None:
    """None, or a list of non-empty strings (a lone string is refused: it is a common slip)."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidRequestError(field, "must be a list of strings")
    return [check_text(f"{field}[{index}]", item) for index, item in enumerate(value)]


def check_str_map(field: str, value: Any, *, allow_empty_values: bool = True) -> dict[str, str]:
    """A mapping of non-empty string keys to string values."""
    if not isinstance(value, Mapping):
        raise InvalidRequestError(field, f"must be a dict of strings, not {type(value).__name__}")
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidRequestError(field, f"keys must be non-empty strings; got {key!r}")
        if not isinstance(item, str):
            raise InvalidRequestError(
                f"{field}[{key!r}]", f"must be a string, not {type(item).__name__}"
            )
        if not allow_empty_values and not item.strip():
            raise InvalidRequestError(f"{field}[{key!r}]", "must not be empty")
        result[key] = item
    return result


def check_query(field: str, value: Any, *, required: bool = False) -> str | None:
    """A search query: at least 2 characters."""
    if value is None and not required:
        return None
    text = check_text(field, value)
    if len(text.strip()) < 2:
        raise InvalidRequestError(field, "must be at least 2 characters")
    return text
