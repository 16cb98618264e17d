"""The HTTP layer: every request the SDK sends goes through :meth:`HTTPClient._send`.

This is the one module that sends the SDK's HTTP requests (the webhook receiver and the fake
server import aiohttp too, to serve). It owns (or borrows) the ``aiohttp.ClientSession`` and
turns each API call or storage transfer into one typed :class:`~._outgoing.Outgoing`, sent by
one path: :meth:`HTTPClient._call` takes a slot, waits out a 429 pause the fleet shares
(``_limiter``), runs attempt 1 inline (the success path stays as lean as a bare aiohttp call)
and hands a retryable failure to tenacity (``_retry``); :meth:`HTTPClient._send` sends one
attempt, maps a non-2xx answer with the pure :func:`~prism_async._errors.error_from_response`,
translates aiohttp's failures (``_responses``), and logs. Storage transfers (presigned PUT and
GET, streamed by ``_streams``) carry no Authorization header and have slots of their own.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .._errors import (
    APIConnectionError,
    APIStatusError,
    ClientClosedError,
    PrismError,
    error_from_response,
)
from .._version import __version__
from ._limiter import Admission
from ._outgoing import IDEMPOTENT, Outgoing, Reader
from ._responses import TRANSLATED, discard, read_json, read_json_keeping_partial, translate
from ._retry import RetryPolicy, resume_with_retries
from ._slots import Slots
from ._streams import (
    CHUNK_SIZE,
    MultipartFile,
    ProgressCallback,
    multipart_form,
    stream_into,
)
from ._urls import api_url, quote_segment, redact

__all__ = [
    "CHUNK_SIZE",
    "USER_AGENT",
    "HTTPClient",
    "MultipartFile",
    "ProgressCallback",
    "quote_segment",
]

logger = logging.getLogger("prism_async")

T = TypeVar("T")
Attempt = Callable[[Outgoing[T], int], Awaitable[T]]
"""Sends attempt ``number`` of a request (``HTTPClient._send``, or a download's own)."""

USER_AGENT = f"prism-async/{__version__}"


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
        admission: Admission | None = None,
    ) -> None:
        self._base = str(base_url).rstrip("/")
        self._admission = admission  # API requests wait out a 429 pause shared by the fleet
        self._origin = base_url.origin()
        self._retry = retry
        self._max_connections = max_connections
        self._session = session
        self._owns_session = session is None
        # Bound the calls in flight before anything is built for them: thousands of waits that
        # poll at once queue here as one small future each. A call keeps its slot through its
        # retries, so a struggling server also slows the callers. API calls and storage
        # transfers have slots of their own, and an owned pool fits both, so neither ever waits
        # for a pooled connection (which would blur "sent" and "not sent").
        self._slots = Slots(max_connections)
        self._storage_slots = Slots(max_connections)
        self._closed = False
        connect = min(10.0, timeout / 2)
        # ``connect`` bounds the wait for a pooled connection too (a borrowed session's pool may
        # be busy): it ends before ``total``, as a ConnectionTimeoutError, i.e. "not sent".
        self._api_timeout = aiohttp.ClientTimeout(
            total=timeout, connect=timeout / 2, sock_connect=connect
        )
        self._storage_timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=connect, sock_read=timeout
        )
        self._read_timeout = timeout  # a download's stall deadline, per chunk (see _streams)
        self._download_timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=connect
        )
        # Built once: aiohttp takes a CIMultiDict as is instead of converting a dict per call.
        self._headers = CIMultiDict(
            {
                "Authorization": f"Bearer {api_key}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            }
        )
        self._json_headers = CIMultiDict(self._headers, **{"Content-Type": "application/json"})
        self._storage_headers = CIMultiDict({"User-Agent": USER_AGENT})

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def session(self) -> aiohttp.ClientSession:
        """The session, created on first use inside the running loop."""
        if self._closed:
            raise ClientClosedError("this PrismClient is closed; create a new one")
        if self._session is None:
            asyncio.get_running_loop()  # an aiohttp session belongs to a running loop
            if self._admission is not None:
                self._admission.start()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=2 * self._max_connections)
            )
        return self._session

    async def aclose(self) -> None:
        """Refuse new requests, end queued ones, close an owned session. Idempotent."""
        self._closed = True
        self._slots.close()
        self._storage_slots.close()
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()
        if self._admission is not None:
            await self._admission.aclose()

    # -- the one path --------------------------------------------------------------------------

    def _what(self, method: str, url: URL) -> str:
        """``GET /api/generations/gen_1`` for the API, a redacted URL for storage."""
        if url.origin() == self._origin:
            return f"{method} {url.raw_path}"
        return f"{method} {redact(url)}"

    async def _call(
        self, slots: Slots, request: Outgoing[T], attempt: Attempt[T] | None = None
    ) -> T:
        """Take a slot, send ``request`` (by ``attempt``), retry what may be retried."""
        if self._closed:
            raise ClientClosedError("this PrismClient is closed; create a new one")
        if not slots.try_acquire():  # first of all: a queued call holds nothing else
            await slots.acquire()
        send: Attempt[T] = self._send if attempt is None else attempt
        gate = self._admission if slots is self._slots else None  # storage never waits
        try:
            if gate is not None and gate.must_wait():  # a 429 pause: not an attempt
                await gate.admit(self._retry.max_retry_after)
            try:  # attempt 1 inline: the success path stays as lean as a bare aiohttp call
                return await send(request, 1)
            except PrismError as exc:
                first = exc
            if gate is not None:
                gate.saw(first)
            if not request.retries:
                raise first
            again = functools.partial(send, request)
            return await resume_with_retries(
                first,
                gate.guard(again, self._retry.max_retry_after) if gate is not None else again,
                idempotent=request.idempotent,
                policy=self._retry,
                what=self._what(request.method, request.url),
            )
        finally:
            slots.release()

    async def _send(self, request: Outgoing[T], number: int) -> T:
        """Send attempt ``number`` and return ``request.read`` of a 2xx answer; raise the rest."""
        data: Any = request.data
        stack = None
        if request.body is not None:  # built anew for each attempt; its files close after it
            stack = ExitStack()
            data = request.body(stack)
        try:
            method, url = request.method, request.url
            session = self._session
            if session is None:
                session = self.session()
            debug = logger.isEnabledFor(logging.DEBUG)
            started = time.monotonic() if debug else 0.0
            failure: PrismError | None = None
            result: T | None = None
            status: int | None = None
            try:
                response = await session.request(
                    method,
                    url,
                    data=data,
                    headers=request.headers,
                    timeout=request.timeout,
                    allow_redirects=False,
                )
                try:
                    status = response.status
                    if status < 300:
                        result = await request.read(response)
                    else:
                        content = await response.read()
                        failure = error_from_response(status, response.headers, content)
                finally:
                    response.release()
            except TRANSLATED as exc:
                failure = translate(exc, self._what(method, url))
            except PrismError as exc:
                failure = exc
            except RuntimeError:  # aiohttp's "Session is closed": a borrowed session closed
                if not session.closed:
                    raise
                failure = ClientClosedError(
                    f"{self._what(method, url)}: the aiohttp session is closed"
                )
            except asyncio.CancelledError as exc:
                if not request.idempotent:
                    self._cancelled_in_flight(exc, method, url)
                raise
            if debug:
                what, elapsed = self._what(method, url), time.monotonic() - started
                if failure is None or isinstance(failure, APIStatusError):
                    logger.debug("%s -> %s in %.3fs (attempt %d)", what, status, elapsed, number)
                else:
                    logger.debug(
                        "%s failed after %.3fs (attempt %d): %s", what, elapsed, number, failure
                    )
            if failure is not None:
                raise failure
            return cast(T, result)
        finally:
            if stack is not None:
                stack.close()

    def _cancelled_in_flight(self, exc: BaseException, method: str, url: URL) -> None:
        """A paid request cancelled after it started may have been queued: leave a trace."""
        what = self._what(method, url)
        message = (
            f"{what} was cancelled in flight: the server may have received it "
            "(a paid request may have been queued and charged)"
        )
        logger.warning("%s", message)
        exc.add_note(message)

    # -- API requests ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: tuple[str, ...],
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
        files: Sequence[MultipartFile] = (),
        retries: bool = True,
    ) -> Coroutine[Any, Any, Any]:
        """Send one API request; await it for the parsed JSON body.

        A plain function returning :meth:`_call`'s coroutine: a call queued for a slot holds
        that one frame, and a status poll resumes through one level less.

        Args:
            method: HTTP method.
            path: path segments below the base URL; each is URL-quoted.
            json_body: JSON body, if any.
            params: query parameters.
            fields: multipart form fields (with ``files``).
            files: multipart files, opened anew for every attempt.
            retries: False for exactly one attempt (a wait's status request: the wait's own
                backoff spaces its attempts).

        Raises:
            APIStatusError: a non-2xx answer (subclass by status and code).
            APIConnectionError: no answer; see ``maybe_sent``.
            ResponseValidationError: a 2xx body that is not JSON.
            ClientClosedError: the client is closed.
        """
        url = api_url(self._base, path)
        if params:
            url = url.with_query(params)
        # A paid POST's answer is read so that ids survive a body cut short.
        read = read_json if method in IDEMPOTENT else read_json_keeping_partial
        headers, data, body = self._headers, None, None
        if files or fields:
            body = functools.partial(multipart_form, fields or {}, files)
        elif json_body is not None:
            headers = self._json_headers
            data = json.dumps(json_body, separators=(",", ":")).encode()
        outgoing = Outgoing(
            method, url, headers, self._api_timeout, read, data, body, retries=retries
        )
        return self._call(self._slots, outgoing)

    # -- storage transfers (presigned URLs: never the API key) -------------------------------

    def _storage_url(self, url: str) -> URL:
        parsed = URL(url, encoded=True)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise APIConnectionError(
                f"not an HTTP(S) storage URL: {redact(parsed)}", maybe_sent=False
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
        headers = CIMultiDict(
            self._storage_headers, **{"Content-Type": content_type, "Content-Length": str(size)}
        )
        outgoing = Outgoing(
            "PUT",
            self._storage_url(url),
            headers,
            self._storage_timeout,
            discard,
            body=lambda _: body(),
        )
        await self._call(self._storage_slots, outgoing)

    async def download(
        self, url: str, destination: Path, *, on_progress: ProgressCallback | None = None
    ) -> int:
        """Stream a presigned GET into ``destination`` (truncated per attempt); retried.

        Returns:
            The number of bytes written.
        """
        headers, timeout = self._storage_headers, self._download_timeout
        target = Outgoing("GET", self._storage_url(url), headers, timeout, _written_per_attempt)
        what = self._what("GET", target.url)

        async def attempt(request: Outgoing[int], number: int) -> int:
            with destination.open("wb") as handle:  # truncated by every attempt

                def send(write: Reader[int]) -> Awaitable[int]:
                    return self._send(request.reading(write), number)

                return await stream_into(handle, send, what, self._read_timeout, on_progress)

        return await self._call(self._storage_slots, target, attempt)


async def _written_per_attempt(response: aiohttp.ClientResponse) -> int:
    """A download's reader: replaced by every attempt with one writing into the file."""
    raise AssertionError("a download attempt reads through its own writer")
