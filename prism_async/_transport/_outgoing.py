"""One request as it leaves: everything an attempt needs, in one typed object."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import ExitStack
from typing import Any, Generic, TypeVar

import aiohttp
from yarl import URL

__all__ = ["IDEMPOTENT", "Outgoing", "Reader"]

T = TypeVar("T")

Reader = Callable[[aiohttp.ClientResponse], Awaitable[T]]
"""Reads a 2xx response's body into the call's result."""

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class Outgoing(Generic[T]):
    """An API call or a storage transfer, built once and sent by every attempt.

    A plain slotted class (not attrs): one is built per request, on the hottest path.

    Attributes:
        method: the HTTP method.
        url: the full URL (API URLs are built from quoted path segments).
        headers: every header it carries (storage requests never carry the API key).
        timeout: aiohttp's timeouts for one attempt.
        read: turns a 2xx answer into the result.
        data: a body sent as it is (JSON bytes), or None.
        body: builds the body anew for every attempt, opening files in the attempt's
            ``ExitStack`` (a multipart form of files, a streamed PUT); takes precedence over
            ``data``.
        retries: False for exactly one attempt (a wait's status request).
        idempotent: whether sending it twice is harmless (a paid POST is not).
    """

    __slots__ = (
        "body",
        "data",
        "headers",
        "idempotent",
        "method",
        "read",
        "retries",
        "timeout",
        "url",
    )

    def __init__(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,
        read: Reader[T],
        data: bytes | None = None,
        body: Callable[[ExitStack], Any] | None = None,
        retries: bool = True,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.timeout = timeout
        self.read = read
        self.data = data
        self.body = body
        self.retries = retries
        self.idempotent = method in IDEMPOTENT

    def reading(self, read: Reader[T]) -> Outgoing[T]:
        """The same request with another reader (a download's writer, made per attempt)."""
        return Outgoing(
            self.method,
            self.url,
            self.headers,
            self.timeout,
            read,
            self.data,
            self.body,
            self.retries,
        )

    def __repr__(self) -> str:
        return f"<Outgoing {self.method} {self.url.raw_path}>"  # never the headers (the key)
