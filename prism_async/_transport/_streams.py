"""File bodies in chunks: progress callbacks, multipart forms of files, and a storage download
streamed into a file.

Memory stays flat whatever the file size. A download has one deadline, pushed back by every
chunk written: it bounds the wait for the answer's headers (or an error body), then each stall
of the body (aiohttp's ``sock_read`` would re-arm a timer for every 64 KiB segment, a fifth of
the CPU of a long download).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import aiohttp

from .._callbacks import call_maybe_async
from .._errors import APITimeoutError

__all__ = [
    "CHUNK_SIZE",
    "BodyWriter",
    "MultipartFile",
    "ProgressCallback",
    "multipart_form",
    "stream_into",
]

CHUNK_SIZE = 1 << 20
"""Bytes per read or write of a file transfer: memory stays flat whatever the file size."""

ProgressCallback = Callable[[int, int | None], object]
"""``on_progress(done, total)``: bytes so far and the total (None when unknown); may be async."""

BodyWriter = Callable[[aiohttp.ClientResponse], Awaitable[int]]
"""Reads a download's 2xx body into a file; returns the bytes written."""

MultipartFile = tuple[str, Path, str]
"""``(form field, local path, content type)`` of one file in a multipart body."""


def multipart_form(
    fields: Mapping[str, str], files: Sequence[MultipartFile], stack: ExitStack
) -> aiohttp.FormData:
    """A multipart body of ``fields`` and ``files``; each file is opened in ``stack`` (closed
    when the attempt ends) and streams from disk."""
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    for name, path, content_type in files:
        handle: IO[bytes] = stack.enter_context(path.open("rb"))
        form.add_field(name, handle, filename=path.name, content_type=content_type)
    return form


async def stream_into(
    handle: IO[bytes],
    send: Callable[[BodyWriter], Awaitable[int]],
    what: str,
    read_timeout: float,
    on_progress: ProgressCallback | None,
) -> int:
    """Send one download attempt with ``send(writer)``; the writer copies a 2xx body into
    ``handle`` chunk by chunk. Returns the bytes written. ``what`` names the request in errors.

    Raises:
        APITimeoutError: nothing came for ``read_timeout`` seconds (``maybe_sent=True``).
    """
    stall = asyncio.timeout(read_timeout)

    async def write(response: aiohttp.ClientResponse) -> int:
        total = response.content_length
        written = 0
        loop = asyncio.get_running_loop()
        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
            await asyncio.to_thread(handle.write, chunk)
            written += len(chunk)
            if on_progress is not None:
                await call_maybe_async(on_progress, written, total)
            stall.reschedule(loop.time() + read_timeout)
        return written

    try:
        async with stall:
            return await send(write)
    except TimeoutError:
        if not stall.expired():
            raise
    raise APITimeoutError(
        f"{what}: the storage host sent nothing for {read_timeout:g}s", maybe_sent=True
    )
