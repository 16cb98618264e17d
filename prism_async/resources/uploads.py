"""``prism.uploads``: presign and upload reference images, video and audio."""

from __future__ import annotations

import asyncio
import io
import mimetypes
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

from attrs import frozen

from .. import _rules
from .._callbacks import call_maybe_async
from .._converters import structure, unstructure
from .._errors import InvalidRequestError
from .._rules import UPLOAD_KINDS, UPLOAD_LIMITS
from .._transport._http import CHUNK_SIZE, ProgressCallback
from .._validation import check, optional_text
from ..models.uploads import PresignedUpload, UploadedFile
from ._base import Resource

__all__ = ["LIMITS", "UploadSource", "Uploads"]

LIMITS = UPLOAD_LIMITS
"""Largest file per media kind, as documented (the shared :data:`._rules.UPLOAD_LIMITS`)."""

UploadSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]
"""What ``uploads.upload`` accepts: a path, bytes, or a binary file object."""


def _media_kind(field: str, content_type: object) -> str:
    """``image``, ``video`` or ``audio``, or InvalidRequestError for any other type."""
    check(field, _rules.content_type_problem(content_type))
    return str(_rules.media_kind(content_type))


@frozen
class _Source:
    """A resolved upload source: its size, name, and a way to stream it once per attempt."""

    size: int
    file_name: str | None
    stream: Callable[[], AsyncIterator[bytes]]


async def _chunks_of(data: bytes | memoryview) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK_SIZE):
        yield bytes(view[start : start + CHUNK_SIZE])


async def _chunks_from(handle: IO[bytes], size: int) -> AsyncIterator[bytes]:
    remaining = size
    while remaining > 0:
        chunk = await asyncio.to_thread(handle.read, min(CHUNK_SIZE, remaining))
        if not chunk:
            raise OSError("the file became shorter while it was being uploaded")
        remaining -= len(chunk)
        yield chunk


def _resolve(source: Any, limit_hint: int) -> _Source:
    """Turn ``source`` into a :class:`_Source` without sending anything."""
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        if not path.exists():
            raise InvalidRequestError("source", f"file not found: {path}")
        if not path.is_file():
            raise InvalidRequestError("source", f"not a regular file: {path}")
        size = path.stat().st_size

        async def from_path() -> AsyncIterator[bytes]:
            handle = await asyncio.to_thread(path.open, "rb")
            try:
                async for chunk in _chunks_from(handle, size):
                    yield chunk
            finally:
                handle.close()

        return _Source(size=size, file_name=path.name, stream=from_path)

    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return _Source(size=len(data), file_name=None, stream=lambda: _chunks_of(data))

    if hasattr(source, "read"):
        if isinstance(source, io.TextIOBase) or not isinstance(source.read(0), bytes):
            raise InvalidRequestError("source", "file object must be opened in binary mode")
        name = getattr(source, "name", None)
        file_name = os.path.basename(name) if isinstance(name, str) else None
        seekable = getattr(source, "seekable", None)
        if callable(seekable) and seekable():
            start = source.tell()
            size = source.seek(0, os.SEEK_END) - start
            source.seek(start)

            async def from_handle() -> AsyncIterator[bytes]:
                source.seek(start)  # every attempt re-reads the source from its start
                async for chunk in _chunks_from(source, size):
                    yield chunk

            return _Source(size=size, file_name=file_name, stream=from_handle)
        # Not seekable: read it once (bounded by the largest limit) so retries can resend it.
        data = source.read(limit_hint + 1)
        if not isinstance(data, bytes):
            raise InvalidRequestError("source", "file object must be opened in binary mode")
        return _Source(size=len(data), file_name=file_name, stream=lambda: _chunks_of(data))

    raise InvalidRequestError(
        "source", f"must be a path, bytes or a binary file object, not {type(source).__name__}"
    )


class Uploads(Resource):
    """Endpoints under ``/api/s3``: reference files for generations and templates."""

    async def presign(
        self, content_type: str, *, file_name: str | None = None, kind: str = "upload"
    ) -> PresignedUpload:
        """Ask for a presigned storage URL to PUT one file to.

        Most callers want :meth:`upload`, which presigns and uploads in one call.

        Args:
            content_type: the file's MIME type (image/*, video/* or audio/*).
            file_name: original file name, for bookkeeping only.
            kind: ``upload`` (the one documented value) for image, video or audio references.
        """
        _media_kind("content_type", content_type)
        check("kind", _rules.choice_problem(kind, UPLOAD_KINDS))
        from ..models.requests import PresignUploadRequest

        body = PresignUploadRequest(
            kind=kind,
            content_type=content_type,
            file_name=optional_text("file_name", file_name),
        )
        payload = await self._http.request(
            "POST", ("s3", "presign-upload"), json_body=unstructure(body)
        )
        return structure(payload, PresignedUpload)

    async def upload(
        self,
        source: UploadSource,
        *,
        content_type: str | None = None,
        file_name: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> UploadedFile:
        """Upload a reference file and return its storage key.

        The content type comes from ``content_type`` or the file name. Size limits (image
        20 MB, video 200 MB, audio 50 MB, then the presign's ``max_bytes``) are checked before
        the bytes are sent. A file streams from disk in chunks with an explicit
        Content-Length and no Authorization header; a transient failure of the PUT is retried
        by reading the source again.

        Args:
            source: a path (``str`` or ``os.PathLike``), bytes, or a binary file object.
            content_type: MIME type; guessed from the file name when omitted.
            file_name: name sent for bookkeeping; defaults to the path's name.
            on_progress: called with ``(bytes_sent, total_bytes)``; may be async. A retried
                PUT counts again from 0.

        Returns:
            The uploaded file's ``s3_key``, content type and size.

        Raises:
            InvalidRequestError: missing, empty or oversized file, or an unsupported type.
        """
        resolved = await asyncio.to_thread(_resolve, source, max(UPLOAD_LIMITS.values()))
        name = optional_text("file_name", file_name) or resolved.file_name
        if content_type is None:
            if name is None:
                raise InvalidRequestError(
                    "content_type", "is required when the source has no file name"
                )
            content_type = mimetypes.guess_type(name)[0]
            if content_type is None:
                raise InvalidRequestError(
                    "content_type", f"cannot be guessed from {name!r}; pass content_type="
                )
        kind = _media_kind("content_type", content_type)
        check("source", _rules.size_problem(resolved.size, UPLOAD_LIMITS[kind], kind))

        presigned = await self.presign(content_type, file_name=name)
        if presigned.max_bytes is not None:
            check("source", _rules.size_problem(resolved.size, presigned.max_bytes))
        put_type = presigned.content_type or content_type

        def body() -> AsyncIterator[bytes]:
            return _with_progress(resolved.stream(), resolved.size, on_progress)

        await self._http.put_storage(
            presigned.upload_url, body=body, size=resolved.size, content_type=put_type
        )
        return UploadedFile(s3_key=presigned.s3_key, content_type=put_type, size=resolved.size)


async def _with_progress(
    chunks: AsyncIterator[bytes], total: int, on_progress: ProgressCallback | None
) -> AsyncIterator[bytes]:
    sent = 0
    async for chunk in chunks:
        yield chunk
        sent += len(chunk)
        if on_progress is not None:
            await call_maybe_async(on_progress, sent, total)
