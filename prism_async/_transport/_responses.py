"""What comes back from aiohttp, turned into the SDK's results and errors.

:func:`translate` maps every aiohttp / asyncio failure to :class:`APIConnectionError` or
:class:`APITimeoutError` with a truthful ``maybe_sent``. The foreign exception is never chained
to the SDK's own (aiohttp's ``ClientResponseError`` holds the request headers, the key among
them): its type and message go into the SDK's message instead. The readers turn a 2xx answer
into JSON; a paid POST's reader keeps the ids of an answer cut short.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from .._errors import (
    APIConnectionError,
    APITimeoutError,
    ResponseValidationError,
    generation_ids_in,
)

__all__ = ["TRANSLATED", "discard", "read_json", "read_json_keeping_partial", "translate"]

# Network failures only: a local disk error (a plain OSError) is not a connection error.
TRANSLATED = (aiohttp.ClientError, ConnectionError, TimeoutError)


def _detail(exc: BaseException) -> str:
    """A foreign exception in words, without what it holds (request headers, URLs)."""
    if isinstance(exc, aiohttp.ClientResponseError):  # its str() and repr() show the request
        text = exc.message
    elif isinstance(exc, aiohttp.InvalidURL):
        text = "invalid URL"
    else:
        text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def translate(exc: BaseException, what: str) -> APIConnectionError:
    """Map an aiohttp / asyncio failure to the SDK's connection errors (never chained to it).

    ``aiohttp.ConnectionTimeoutError`` covers the wait for a pooled connection as well as
    connecting: nothing was sent then.
    """
    detail = _detail(exc)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"{what}: timed out while connecting ({detail})", maybe_sent=False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError(f"{what}: could not connect ({detail})", maybe_sent=False)
    if isinstance(exc, aiohttp.InvalidURL):
        return APIConnectionError(f"{what}: invalid URL", maybe_sent=False)
    if isinstance(exc, TimeoutError):
        return APITimeoutError(
            f"{what}: timed out after the request was sent; the server may have received it",
            maybe_sent=True,
        )
    return APIConnectionError(
        f"{what}: connection failed after the request was sent ({detail}); "
        "the server may have received it",
        maybe_sent=True,
    )


def _describe(response: aiohttp.ClientResponse) -> str:
    return f"{response.method} {response.url.raw_path}"


def _parse_json(body: bytes, response: aiohttp.ClientResponse) -> Any:
    try:  # JSON is UTF-8 (RFC 8259); decoding first skips json's encoding sniffing
        return json.loads(body.decode())
    except ValueError:
        pass
    raise ResponseValidationError(
        f"{_describe(response)}: the {response.status} response is not JSON",
        body=body.decode("utf-8", "replace"),
    )


async def read_json(response: aiohttp.ClientResponse) -> Any:
    """The JSON body of a 2xx answer."""
    return _parse_json(await response.read(), response)


async def read_json_keeping_partial(response: aiohttp.ClientResponse) -> Any:
    """Like :func:`_read_json`, for a paid POST: the ids of an answer cut short are kept."""
    chunks: list[bytes] = []
    try:
        async for chunk in response.content.iter_any():
            chunks.append(chunk)
    except TRANSLATED as exc:
        failure = translate(exc, _describe(response))
    else:
        return _parse_json(b"".join(chunks), response)
    failure.generation_ids = generation_ids_in(b"".join(chunks))
    raise failure


async def discard(response: aiohttp.ClientResponse) -> None:
    await response.read()
