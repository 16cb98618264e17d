"""Traffic of the fake: the log of every request, and scripted faults (answers replaced,
delayed, lost, cut short or garbled). Both are middlewares that leave the control API alone."""

from __future__ import annotations

import asyncio
import fnmatch
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from attrs import define, field

from ._records import RecordedRequest

__all__ = ["CONTROL_PREFIX", "Fault", "Handler", "Traffic"]

CONTROL_PREFIX = "/_fake/"
"""Paths of the fake's control API: never recorded, never faulted, never the API's."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FRAMING_HEADERS = {
    name.lower() for name in (hdrs.CONTENT_LENGTH, hdrs.TRANSFER_ENCODING, hdrs.CONTENT_ENCODING)
}


@define
class Fault:
    """A scripted misbehaviour for requests matching ``method`` and ``path`` (a glob).

    See :meth:`FakePrismServer.inject <prism_async.testing.FakePrismServer.inject>`, which
    makes them; a fault may be changed in place (e.g. ``fault.times = 0``) while it is armed.
    """

    method: str
    """HTTP method, or ``*`` for any."""
    path: str
    """Glob on the decoded path, e.g. ``/api/generations/*``."""
    status: int | None = None
    """Answer this status instead of the real one."""
    body: Any = None
    """Body of the ``status`` answer: JSON, or bytes/str sent as they are."""
    headers: dict[str, str] = field(factory=dict)
    """Headers of the ``status`` answer."""
    delay: float = 0.0
    """Seconds to wait before answering."""
    drop: bool = False
    """Close the connection without any answer."""
    times: int = 1
    """How many more matching requests this fault scripts."""
    processed: bool = False
    """Handle the request for real first (it takes effect), then misbehave."""
    truncate: int | None = None
    """Send the answer's status and headers (full Content-Length) but only this many bytes of
    its body, then close the connection. Implies ``processed``."""
    raw: bytes | None = None
    """Write exactly these bytes as the whole answer, then close the connection."""

    def __attrs_post_init__(self) -> None:
        chosen = {
            "drop": self.drop,
            "truncate": self.truncate is not None,
            "raw": self.raw is not None,
        }
        ends = [name for name, on in chosen.items() if on]
        if len(ends) > 1:
            raise ValueError(f"a fault ends its answer one way only, not {' and '.join(ends)}")
        if self.truncate is not None and self.truncate < 0:
            raise ValueError("truncate must be 0 or more bytes")
        if self.truncate is not None:
            self.processed = True

    def matches(self, method: str, path: str) -> bool:
        """Whether a request to ``method path`` is one this fault scripts."""
        return (self.method in ("*", method)) and fnmatch.fnmatchcase(path, self.path)

    async def apply(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer ``request`` as scripted (``handler`` is the fake's real handling)."""
        answer: web.StreamResponse | None = None
        if self.processed:
            try:
                answer = await handler(request)
            except web.HTTPException as exc:  # e.g. 404 for a path with no route
                answer = exc
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.drop or self.raw is not None:
            await request.read()  # let the client finish sending first
            transport = request.transport
            if transport is not None and self.raw is not None:
                transport.write(self.raw)
                transport.close()  # sends what is buffered, then closes
            elif transport is not None:
                transport.abort()
            raise asyncio.CancelledError  # the connection is gone: nothing more to answer
        if self.status is not None:
            answer = self._answer()
        elif answer is None:
            answer = await handler(request)
        if self.truncate is not None:
            await _send_truncated(request, answer, self.truncate)
            raise asyncio.CancelledError
        if isinstance(answer, web.HTTPException):
            raise answer  # aiohttp wants HTTP exceptions raised, not returned
        return answer

    def _answer(self) -> web.Response:
        status = int(self.status or 500)
        if isinstance(self.body, str):
            return web.Response(status=status, text=self.body, headers=self.headers)
        if isinstance(self.body, bytes):
            return web.Response(status=status, body=self.body, headers=self.headers)
        body = self.body if self.body is not None else {"error": "injected", "message": ""}
        return web.json_response(body, status=status, headers=self.headers)


async def _send_truncated(request: web.Request, answer: web.StreamResponse, length: int) -> None:
    """Send ``answer``'s status line and headers, the first ``length`` bytes, then close."""
    body = answer.body if isinstance(answer, web.Response) else None
    data = bytes(body) if isinstance(body, bytes | bytearray) else b""
    response = web.StreamResponse(status=answer.status, reason=answer.reason)
    for name, value in answer.headers.items():
        if name.lower() not in _FRAMING_HEADERS:
            response.headers.add(name, value)
    response.content_length = len(data)
    await response.prepare(request)
    await response.write(data[:length])  # an empty write still sends the headers
    if request.transport is not None:
        request.transport.close()  # sends what is buffered, then closes


class Traffic:
    """The request log and the armed faults, with the two middlewares that use them."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests matching ``method`` (``*`` for any) and ``path`` (a glob)."""
        method = method.upper()
        return [
            r
            for r in self.requests
            if method in ("*", r.method) and fnmatch.fnmatchcase(r.path, path)
        ]

    @web.middleware
    async def record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Log the request (its JSON body decoded), then handle it."""
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        payload: Any = None
        if request.content_type == "application/json" and request.can_read_body:
            try:
                payload = json.loads(await request.read())
            except ValueError:
                payload = None
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                json=payload,
                raw_path=request.raw_path,
            )
        )
        return await handler(request)

    @web.middleware
    async def inject(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer as the first armed fault matching the request scripts, if any."""
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        fault = next((f for f in self.faults if f.matches(request.method, request.path)), None)
        if fault is None:
            return await handler(request)
        fault.times -= 1
        if fault.times <= 0:
            self.faults.remove(fault)
        return await fault.apply(request, handler)
