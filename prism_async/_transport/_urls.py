"""API URLs from quoted path segments, and URLs made fit for logs and messages. Pure."""

from __future__ import annotations

import functools
import re
from urllib.parse import quote

from yarl import URL

__all__ = ["api_url", "quote_segment", "redact"]

_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_~-]+")


def quote_segment(segment: str) -> str:
    """Quote one path segment so it can never climb to another endpoint (``..``, ``/``, ``?``)."""
    if _PLAIN_SEGMENT.fullmatch(segment):  # the usual id: nothing to quote
        return segment
    quoted = quote(segment, safe="")
    if quoted in (".", ".."):
        quoted = quoted.replace(".", "%2E")
    return quoted


@functools.lru_cache(maxsize=128)  # like yarl's own cache: under 1 KB a URL
def api_url(base: str, path: tuple[str, ...]) -> URL:
    """The URL of ``path`` below ``base``; cached, as a wait polls the same URL again and again."""
    return URL(base + "/" + "/".join(map(quote_segment, path)), encoded=True)


def redact(url: URL) -> str:
    """A URL fit for logs and messages: no query (presigned credentials), no user info."""
    return str(url.with_query(None).with_fragment(None).with_user(None))
