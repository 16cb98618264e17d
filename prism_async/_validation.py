"""Checks on user input, run before anything is sent. Each failure names the field and why.

The API's own rules (choices, ranges, formats) live in :mod:`._rules`, shared with the fake
server; this module turns their reasons into :class:`InvalidRequestError` and adds the SDK's
conveniences (``8`` for ``"8s"``, a lone string refused where a list is wanted).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import _rules
from ._errors import InvalidRequestError
from ._rules import ASPECT_RATIOS

__all__ = [
    "ASPECT_RATIOS",
    "check",
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

_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def check(field: str, problem: str | None) -> None:
    """Raise :class:`InvalidRequestError` for ``field`` when a rule found a ``problem``."""
    if problem is not None:
        raise InvalidRequestError(field, problem)


def check_text(field: str, value: Any, *, max_length: int | None = None) -> str:
    """A required, non-blank string."""
    check(field, _rules.text_problem(value, max_length=max_length))
    return str(value)


def optional_text(field: str, value: Any, *, max_length: int | None = None) -> str | None:
    """None, or a non-blank string."""
    return None if value is None else check_text(field, value, max_length=max_length)


def check_count(value: Any) -> int | None:
    """``count``: an integer from 1 to 4."""
    if value is None:
        return None
    check("count", _rules.count_problem(value))
    return int(value)


def check_int_range(field: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer within ``[low, high]``."""
    check(field, _rules.int_range_problem(value, low, high))
    return int(value)


def check_choice(field: str, value: Any, choices: Sequence[str]) -> str | None:
    """None, or one of ``choices``."""
    if value is None:
        return None
    check(field, _rules.choice_problem(value, choices))
    return str(value)


def normalize_duration(value: Any) -> str | None:
    """``duration``: ``8``, ``8.0``, ``"8"`` and ``"8s"`` become ``"8s"``.

    The result must then be whole, positive seconds of 1 to 3 digits: ``7.5`` or ``"0s"`` is
    refused, as the API refuses it.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequestError(
            "duration", f"must be a number of seconds such as 8 or '8s', not {type(value).__name__}"
        )
    if isinstance(value, str):
        text = value.strip()
        wire = f"{text}s" if _NUMBER.fullmatch(text) else text
    elif isinstance(value, float) and value.is_integer():
        wire = f"{int(value)}s"
    else:
        wire = f"{value}s"
    check("duration", _rules.duration_problem(wire))
    return wire


def check_http_url(field: str, value: Any) -> str | None:
    """None, or an absolute http(s) URL."""
    if value is None:
        return None
    check(field, _rules.http_url_problem(value))
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
    check(field, _rules.query_problem(value))
    return str(value)
