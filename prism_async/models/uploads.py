"""Models for ``/api/s3/presign-upload`` and uploads."""

from __future__ import annotations

from attrs import frozen

__all__ = ["PresignedUpload", "UploadedFile"]


@frozen
class PresignedUpload:
    """A presigned storage URL to PUT one reference file to."""

    s3_key: str
    """Key to pass into the ``...Key`` fields of ``generations.create`` (or a template variable)."""
    upload_url: str
    """Presigned PUT URL on the storage host. It must never receive the API key."""
    content_type: str | None = None
    """The Content-Type the PUT must carry."""
    max_bytes: int | None = None
    """Largest accepted file, in bytes."""


@frozen
class UploadedFile:
    """A reference file that was uploaded and can be used by its key."""

    s3_key: str
    """Key to pass into ``generations.create`` (``start_frame_key=...`` and the like)."""
    content_type: str
    """The file's MIME type."""
    size: int
    """Bytes uploaded."""
