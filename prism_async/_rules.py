"""The API's documented input rules, defined once: the SDK checks them before sending and the
fake server enforces them.

Each rule is a constant and, where it takes more than a lookup, a small pure predicate that
returns why a value breaks it (``"must be from 1 to 4, got 5"``) or None when the value is
fine. A reason never names the field: the SDK raises ``InvalidRequestError(field, reason)``
with its snake_case argument name, and :class:`~prism_async.testing.FakePrismServer` answers
``400 {"error": "validation_error", "message": "<camelCaseField>: <reason>"}``. Predicates judge
the value as it travels (the JSON body or the query string), so whatever the SDK accepts and
sends, the fake accepts too. The source of every rule is ``prism-api.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from attrs import frozen

__all__ = [
    "ASPECT_RATIOS",
    "ASSET_PAGING",
    "ASSET_SOURCES",
    "ASSET_TYPES",
    "CHARACTER_DESCRIPTION_MAX",
    "CHARACTER_IMAGES_MAX",
    "CHARACTER_IMAGES_MIN",
    "CHARACTER_NAME_MAX",
    "CHARACTER_PAGING",
    "COUNT_MAX",
    "COUNT_MIN",
    "DURATION_PATTERN",
    "MB",
    "MEDIA_KINDS",
    "OFFSET_MIN",
    "QUERY_MIN_LENGTH",
    "TEMPLATE_PAGING",
    "UPLOAD_KINDS",
    "UPLOAD_LIMITS",
    "Paging",
    "character_description_problem",
    "character_images_problem",
    "choice_problem",
    "content_type_problem",
    "count_problem",
    "duration_problem",
    "http_url_problem",
    "human_size",
    "int_range_problem",
    "limit_problem",
    "media_kind",
    "offset_problem",
    "query_problem",
    "size_problem",
    "text_problem",
    "type_name",
]

# -- create generation ---------------------------------------------------------------------------

ASPECT_RATIOS = ("auto", "21:9", "16:9", "4:3", "1:1", "3:4", "9:16")
"""``aspectRatio`` values."""

DURATION_PATTERN = re.compile(r"[1-9][0-9]{0,2}s")
"""``duration`` on the wire (full match): whole, positive seconds such as ``8s``."""

_DURATION_RULE = (
    "a whole, positive number of seconds written like '8s' (1 to 3 digits, no leading zero)"
)

COUNT_MIN, COUNT_MAX = 1, 4
"""``count``: videos queued by one request."""

# -- uploads -------------------------------------------------------------------------------------

MB = 1024 * 1024

UPLOAD_LIMITS: dict[str, int] = {"image": 20 * MB, "video": 200 * MB, "audio": 50 * MB}
"""Largest file per media kind (also the presign's ``max_bytes``). Shared: do not mutate."""

MEDIA_KINDS = tuple(UPLOAD_LIMITS)
"""The top-level MIME types an upload may have: ``image/*``, ``video/*``, ``audio/*``."""

UPLOAD_KINDS = ("upload",)
"""The presign ``kind`` values: ``upload`` for image, video or audio references."""

# -- characters ----------------------------------------------------------------------------------

CHARACTER_NAME_MAX = 60
CHARACTER_DESCRIPTION_MAX = 300
CHARACTER_IMAGES_MIN, CHARACTER_IMAGES_MAX = 1, 10

# -- listings and search -------------------------------------------------------------------------

QUERY_MIN_LENGTH = 2
"""Search text ``q``: at least this many characters (surrounding blanks not counted)."""

ASSET_TYPES = ("all", "image", "video")
"""Asset search ``type`` values."""

ASSET_SOURCES = ("all", "community", "history")
"""Asset search ``source`` values."""

OFFSET_MIN = 0


@frozen
class Paging:
    """The page sizes of one listing endpoint."""

    default_limit: int
    """``limit`` when none is sent."""
    max_limit: int
    """The largest ``limit`` accepted (the smallest is 1)."""


TEMPLATE_PAGING = Paging(default_limit=50, max_limit=100)
CHARACTER_PAGING = Paging(default_limit=24, max_limit=60)
ASSET_PAGING = Paging(default_limit=24, max_limit=60)

_HTTP_SCHEMES = ("http", "https")

# -- predicates: a reason, or None when the value is fine ----------------------------------------


def type_name(value: object) -> str:
    """The name of ``value``'s type, for reasons (``null`` for None, as JSON says it)."""
    return "null" if value is None else type(value).__name__


def text_problem(value: object, *, max_length: int | None = None) -> str | None:
    """A required, non-blank string of at most ``max_length`` characters."""
    if value is None:
        return "is required"
    if not isinstance(value, str):
        return f"must be a string, not {type_name(value)}"
    if not value or value.isspace():
        return "must not be empty"
    if max_length is not None and len(value) > max_length:
        return f"must be at most {max_length} characters, got {len(value)}"
    return None


def choice_problem(value: object, choices: Sequence[str]) -> str | None:
    """One of ``choices``."""
    if isinstance(value, str) and value in choices:
        return None
    return f"must be one of {', '.join(choices)}; got {value!r}"


def int_range_problem(value: object, low: int, high: int | None = None) -> str | None:
    """An integer (not a bool) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, not {type_name(value)}"
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        return f"must be {bounds}, got {value}"
    return None


def count_problem(value: object) -> str | None:
    """``count``: an integer from 1 to 4."""
    return int_range_problem(value, COUNT_MIN, COUNT_MAX)


def duration_problem(value: object) -> str | None:
    """``duration`` as sent: a string of 1 to 3 digits, no leading zero, then ``s``."""
    if not isinstance(value, str):
        return f"must be {_DURATION_RULE}, not {type_name(value)}"
    if DURATION_PATTERN.fullmatch(value):
        return None
    try:
        seconds = float(value.removesuffix("s"))
    except ValueError:
        seconds = math.nan
    hint = ""
    if math.isfinite(seconds):
        if not seconds.is_integer():
            hint = " (not a whole number)"
        elif seconds <= 0:
            hint = " (not positive)"
        elif seconds > 999:
            hint = " (more than 3 digits)"
    return f"must be {_DURATION_RULE}; got {value!r}{hint}"


def media_kind(content_type: object) -> str | None:
    """``image``, ``video`` or ``audio`` for a MIME type of that kind, else None.

    The top-level type is matched without regard to case, as MIME types are; blanks around it
    are not part of a MIME type.
    """
    if not isinstance(content_type, str):
        return None
    kind, slash, _ = content_type.partition("/")
    kind = kind.lower()
    return kind if slash and kind in UPLOAD_LIMITS else None


def content_type_problem(value: object) -> str | None:
    """An upload's MIME type: ``image/*``, ``video/*`` or ``audio/*``."""
    if value is None:
        return "is required"
    if not isinstance(value, str):
        return f"must be a string, not {type_name(value)}"
    if media_kind(value) is None:
        return f"must be an image/*, video/* or audio/* type; got {value!r}"
    return None


def human_size(size: int) -> str:
    """``20.0 MB`` or ``512 bytes``."""
    return f"{size / MB:.1f} MB" if size >= MB else f"{size} bytes"


def size_problem(size: int, limit: int, what: str = "upload") -> str | None:
    """A file of ``size`` bytes: not empty, and at most ``limit`` bytes."""
    if size == 0:
        return "the file is empty"
    if size > limit:
        return f"{human_size(size)} is over the {what} limit of {human_size(limit)}"
    return None


def http_url_problem(value: object) -> str | None:
    """An absolute http(s) URL with a host (``webhook_url``, character image URLs)."""
    problem = text_problem(value)
    if problem is not None:
        return problem
    try:
        parts = urlsplit(str(value))
        valid = parts.scheme in _HTTP_SCHEMES and bool(parts.netloc)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        valid = False
    return None if valid else f"must be an http(s) URL; got {value!r}"


def character_description_problem(value: object) -> str | None:
    """A character's optional description: at most 300 characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        return f"must be a string, not {type_name(value)}"
    if len(value) > CHARACTER_DESCRIPTION_MAX:
        return f"must be at most {CHARACTER_DESCRIPTION_MAX} characters, got {len(value)}"
    return None


def character_images_problem(count: int) -> str | None:
    """How many images a character is made from: 1 to 10."""
    if CHARACTER_IMAGES_MIN <= count <= CHARACTER_IMAGES_MAX:
        return None
    return f"must hold {CHARACTER_IMAGES_MIN} to {CHARACTER_IMAGES_MAX} images, got {count}"


def query_problem(value: object) -> str | None:
    """Search text ``q``: at least 2 characters besides surrounding blanks."""
    if not isinstance(value, str):
        return "is required" if value is None else f"must be a string, not {type_name(value)}"
    if len(value.strip()) < QUERY_MIN_LENGTH:
        return f"must be at least {QUERY_MIN_LENGTH} characters"
    return None


def limit_problem(value: object, paging: Paging) -> str | None:
    """A page size: 1 to the endpoint's ``max_limit``."""
    return int_range_problem(value, 1, paging.max_limit)


def offset_problem(value: object) -> str | None:
    """The index of a page's first item: 0 or more."""
    return int_range_problem(value, OFFSET_MIN)
