"""The HTTP layer: the only module that imports aiohttp.

It owns (or borrows) the ``aiohttp.ClientSession``, builds API URLs from quoted path segments,
sends JSON, reads bodies, hands ``(status, headers, body)`` to the pure
:func:`~prism_async._errors.error_from_response`, translates every aiohttp failure into
:class:`APIConnectionError` / :class:`APITimeoutError` with a truthful ``maybe_sent``, and
retries under :mod:`prism_async._retry`. Storage transfers (presigned PUT and GET) go
through here too, without the Authorization header.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from ._errors import (
    APIConnectionError,
    APITimeoutError,
    PrismError,
    ResponseValidationError,
    error_from_response,
)
from ._retry import RetryPolicy, call_with_retries, retry_after_failure
from ._version import __version__

__all__ = [
    "CHUNK_SIZE",
    "USER_AGENT",
    "HTTPClient",
    "MultipartFile",
    "ProgressCallback",
    "notify_progress",
    "quote_segment",
]

logger = logging.getLogger("prism_async")

USER_AGENT = f"prism-async/{__version__}"
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
CHUNK_SIZE = 1 << 20
"""Bytes per read or write of a file transfer: memory stays flat whatever the file size."""

MultipartFile = tuple[str, Path, str]
"""``(form field, local path, content type)`` of one file in a multipart body."""

ProgressCallback = Callable[[int, int | None], object]


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
def _api_url(base: str, path: tuple[str, ...]) -> URL:
    """The URL of ``path`` below ``base``; cached, as a wait polls the same URL again and again."""
    return URL(base + "/" + "/".join(map(quote_segment, path)), encoded=True)


def _describe(method: str, url: URL) -> str:
    """``GET /api/generations/gen_1``: an API call in logs and messages (no host, no query)."""
    return f"{method} {url.raw_path}"


def _redact(url: URL) -> str:
    """A URL fit for logs and messages: no query (presigned credentials), no user info."""
    return str(url.with_query(None).with_fragment(None).with_user(None))


def _translate(exc: BaseException, what: str) -> APIConnectionError:
    """Map an aiohttp / asyncio failure to the SDK's connection errors."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"{what}: timed out while connecting", maybe_sent=False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError(f"{what}: could not connect: {exc}", maybe_sent=False)
    if isinstance(exc, aiohttp.InvalidURL):
        return APIConnectionError(f"{what}: invalid URL", maybe_sent=False)
    if isinstance(exc, TimeoutError):
        return APITimeoutError(
            f"{what}: timed out after the request was sent; the server may have received it",
            maybe_sent=True,
        )
    detail = str(exc) or type(exc).__name__
    return APIConnectionError(
        f"{what}: connection failed after the request was sent ({detail}); "
        "the server may have received it",
        maybe_sent=True,
    )


class _Slots:
    """A semaphore whose uncontended acquire is a plain call (this is on every API call).

    ``release`` hands a slot straight to the oldest waiter, so nobody can overtake the queue.
    """

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._queue: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is queued."""
        if self._free > 0 and not self._queue:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot (after ``try_acquire`` said no)."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            elif waiter in self._queue:  # (release may have dropped it already)
                self._queue.remove(waiter)
            raise

    def release(self) -> None:
        """Give the slot to the oldest waiter, or free it."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


# Network failures only: a local disk error (a plain OSError) is not a connection error.
_TRANSLATED = (aiohttp.ClientError, ConnectionError, TimeoutError)


class HTTPClient:
    """Sends API and storage requests. Created by :class:`~prism_async.PrismClient`."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: URL,
        timeout: float,
        retry: RetryPolicy,
        max_connections: int,
        session: aiohttp.ClientSession | None,
    ) -> None:
        self._base = str(base_url).rstrip("/")
        self._origin = base_url.origin()
        self._retry = retry
        self._max_connections = max_connections
        self._session = session
        self._owns_session = session is None
        # Bounds API calls in flight before anything is built for them: thousands of waits that
        # poll at once queue here as one small future each, not as prepared requests. A call
        # keeps its slot through its retries, so a struggling server also slows the callers.
        self._slots = _Slots(max_connections)
        self._closed = False
        connect = min(10.0, timeout / 2)
        self._api_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect)
        self._storage_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect, sock_read=timeout
        )
        # Downloads time out per 1 MiB chunk (see download): aiohttp's sock_read would re-arm a
        # timer for every 64 KiB segment, a fifth of the CPU of a long download.
        self._read_timeout = timeout
        self._download_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect)
        # Built once: aiohttp takes a CIMultiDict as is instead of converting a dict per call.
        self._headers = CIMultiDict(
            {
                "Authorization": f"Bearer {api_key}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            }
        )
        self._json_headers = CIMultiDict(self._headers, **{"Content-Type": "application/json"})

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def session(self) -> aiohttp.ClientSession:
        """The session, created on first use inside the running loop."""
        if self._closed:
            raise RuntimeError("this PrismClient is closed; create a new one")
        if self._session is None:
            asyncio.get_running_loop()  # an aiohttp session belongs to a running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections)
            )
        return self._session

    async def aclose(self) -> None:
        """Close the owned session (a borrowed one is left open). Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    # -- API requests ------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: tuple[str, ...],
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
        files: Sequence[MultipartFile] = (),
    ) -> Any:
        """Send one API request and return its parsed JSON body.

        Args:
            method: HTTP method.
            path: path segments below the base URL; each is URL-quoted.
            json_body: JSON body, if any.
            params: query parameters.
            fields: multipart form fields (with ``files``).
            files: multipart files, opened anew for every attempt.

        Raises:
            APIStatusError: a non-2xx answer (subclass by status and code).
            APIConnectionError: no answer; see ``maybe_sent``.
            ResponseValidationError: a 2xx body that is not JSON.
        """
        if not self._slots.try_acquire():  # first of all: a queued call holds nothing else
            await self._slots.acquire()
        try:
            url = _api_url(self._base, path)
            if params:
                url = url.with_query(params)
            body: Any = None
            headers = self._headers
            send = self._send_api
            if json_body is not None:
                body = json.dumps(json_body, separators=(",", ":")).encode()
                headers = self._json_headers
            elif files or fields:
                body, send = (fields or {}, files), self._send_form
            try:  # attempt 1 inline: the success path stays as lean as a bare aiohttp call
                return await send(method, url, body, headers, 1)
            except PrismError as exc:
                return await retry_after_failure(
                    exc,
                    functools.partial(send, method, url, body, headers),
                    idempotent=method in _IDEMPOTENT,
                    policy=self._retry,
                    what=_describe(method, url),
                )
        finally:
            self._slots.release()

    async def _send_form(
        self,
        method: str,
        url: URL,
        data: Any,
        headers: Mapping[str, str],
        number: int,
    ) -> Any:
        """Send a multipart body, ``data = (fields, files)``; files are opened per attempt."""
        fields, files = data
        with ExitStack() as stack:
            form = aiohttp.FormData()
            for name, value in fields.items():
                form.add_field(name, value)
            for name, path, content_type in files:
                handle: IO[bytes] = stack.enter_context(path.open("rb"))
                form.add_field(name, handle, filename=path.name, content_type=content_type)
            return await self._send_api(method, url, form, headers, number)

    async def _send_api(
        self, method: str, url: URL, data: Any, headers: Mapping[str, str], number: int
    ) -> Any:
        session = self._session
        if session is None:
            session = self.session()
        debug = logger.isEnabledFor(logging.DEBUG)
        started = time.monotonic() if debug else 0.0
        try:
            async with session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=self._api_timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                body = await response.read()
                response_headers = response.headers
        except _TRANSLATED as exc:
            what = _describe(method, url)
            logger.debug(
                "%s failed after %.3fs (attempt %d): %s",
                what,
                time.monotonic() - started,
                number,
                type(exc).__name__,
            )
            raise _translate(exc, what) from exc
        if debug:
            elapsed = time.monotonic() - started
            logger.debug(
                "%s -> %d in %.3fs (attempt %d)", _describe(method, url), status, elapsed, number
            )
        if status >= 300:
            raise error_from_response(status, response_headers, body)
        try:  # JSON is UTF-8 (RFC 8259); decoding first skips json's encoding sniffing
            return json.loads(body.decode())
        except ValueError as exc:
            text = body.decode("utf-8", "replace")
            raise ResponseValidationError(
                f"{_describe(method, url)}: the {status} response is not JSON", body=text
            ) from exc

    # -- storage transfers (presigned URLs: never the API key) -------------------------------

    def _storage_url(self, url: str) -> URL:
        parsed = URL(url, encoded=True)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise APIConnectionError(
                f"not an HTTP(S) storage URL: {_redact(parsed)}", maybe_sent=False
            )
        return parsed

    async def put_storage(
        self,
        url: str,
        *,
        body: Callable[[], AsyncIterator[bytes] | bytes],
        size: int,
        content_type: str,
    ) -> None:
        """PUT a body to a presigned URL with an explicit Content-Length; retried (idempotent).

        ``body`` is called once per attempt, so a retry re-reads the source from its start.
        """
        target = self._storage_url(url)
        what = f"PUT {_redact(target)}"
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(size),
            "User-Agent": USER_AGENT,
        }

        async def attempt(number: int) -> None:
            session = self.session()
            started = time.monotonic()
            try:
                async with session.put(
                    target,
                    data=body(),
                    headers=headers,
                    timeout=self._storage_timeout,
                    allow_redirects=False,
                ) as response:
                    status, content = response.status, await response.read()
                    response_headers = response.headers
            except _TRANSLATED as exc:
                raise _translate(exc, what) from exc
            logger.debug(
                "%s -> %d in %.3fs (attempt %d)", what, status, time.monotonic() - started, number
            )
            if status >= 300:
                raise error_from_response(status, response_headers, content)

        return await call_with_retries(attempt, idempotent=True, policy=self._retry, what=what)

    async def download(
        self, url: str, destination: Path, *, on_progress: ProgressCallback | None = None
    ) -> int:
        """Stream a presigned GET into ``destination`` (truncated per attempt); retried.

        Returns:
            The number of bytes written.
        """
        target = self._storage_url(url)
        what = f"GET {_redact(target)}"

        async def attempt(number: int) -> int:
            session = self.session()
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._read_timeout):  # until the headers are in
                    response = await session.get(
                        target, headers={"User-Agent": USER_AGENT}, timeout=self._download_timeout
                    )
                try:
                    if response.status >= 300:
                        async with asyncio.timeout(self._read_timeout):
                            content = await response.read()
                        raise error_from_response(response.status, response.headers, content)
                    total = response.content_length
                    written = 0
                    loop = asyncio.get_running_loop()
                    with destination.open("wb") as handle:
                        async with asyncio.timeout(self._read_timeout) as stall:
                            async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                                await asyncio.to_thread(handle.write, chunk)
                                written += len(chunk)
                                if on_progress is not None:
                                    await notify_progress(on_progress, written, total)
                                stall.reschedule(loop.time() + self._read_timeout)
                finally:
                    response.release()
            except _TRANSLATED as exc:
                raise _translate(exc, what) from exc
            logger.debug(
                "%s -> %d bytes in %.3fs (attempt %d)",
                what,
                written,
                time.monotonic() - started,
                number,
            )
            return written

        return await call_with_retries(attempt, idempotent=True, policy=self._retry, what=what)


async def notify_progress(callback: ProgressCallback, done: int, total: int | None) -> None:
    """Call a progress callback, awaiting it if it is a coroutine function."""
    result = callback(done, total)
    if asyncio.iscoroutine(result):
        await result
