"""The fake's object storage: presigned uploads and video URLs that behave like S3's.

Rules only (signatures, expiry, content type, size, framing); no HTTP in here. Every refusal
is a :class:`StorageError` carrying the status, code and message S3 would answer.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen

from .. import _rules
from .._rules import UPLOAD_LIMITS
from ._data import presigned_upload
from ._records import StorageError, StoredObject, invalid, json_object

__all__ = ["FakeStorage", "Upload"]

_BAD_SIGNATURE = "The request signature we calculated does not match the signature you provided"
_TWO_AUTHS = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
    "Signature query string parameter or the Authorization header should be specified"
)


@frozen
class Upload:
    """A presigned upload: where it goes and what it must be."""

    token: str
    key: str
    content_type: str
    max_bytes: int
    expires: float
    file_name: str | None


class FakeStorage:
    """Uploaded objects, presigned upload URLs and signed, expiring video URLs."""

    def __init__(self, *, clock: Callable[[], float], url_ttl: float, video: bytes) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.url_ttl = url_ttl
        self.video = video
        self.root = ""
        self._clock = clock
        self._uploads: dict[str, Upload] = {}
        self._secret = secrets.token_bytes(16)

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "|".join(parts).encode(), hashlib.sha256).hexdigest()

    def _check_signature(self, expected: str, query: Mapping[str, str]) -> None:
        if not hmac.compare_digest(expected, query.get("X-Amz-Signature", "")):
            raise StorageError(403, "SignatureDoesNotMatch", _BAD_SIGNATURE)

    # -- uploads -----------------------------------------------------------------------------

    def presign(self, body: Any) -> dict[str, Any]:
        """``POST /api/s3/presign-upload``: a key and a URL to PUT the file to."""
        body = json_object(body)
        kind, content_type = body.get("kind"), body.get("contentType")
        for name, problem in (
            ("kind", _rules.choice_problem(kind, _rules.UPLOAD_KINDS)),
            ("contentType", _rules.content_type_problem(content_type)),
        ):
            if problem is not None:
                raise invalid(f"{name}: {problem}")
        content_type = str(content_type)
        max_bytes = UPLOAD_LIMITS[str(_rules.media_kind(content_type))]
        extension = mimetypes.guess_extension(content_type) or ""
        key = (
            f"users/user_fake/user-uploads/batch_{secrets.token_hex(4)}/"
            f"file_{secrets.token_hex(4)}{extension}"
        )
        token = secrets.token_urlsafe(12)
        expires = self._clock() + self.url_ttl
        self._uploads[token] = Upload(
            token, key, content_type, max_bytes, expires, body.get("fileName")
        )
        signature = self._sign(token, content_type, f"{expires:.3f}")
        upload_url = (
            f"{self.root}/storage/uploads/{token}"
            f"?X-Amz-Expires={expires:.3f}&X-Amz-Signature={signature}"
        )
        return presigned_upload(key, upload_url, content_type, max_bytes)

    def accept_upload(
        self,
        token: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        content_length: int | None,
    ) -> Upload:
        """The upload a PUT may go to, once its URL, headers and size pass S3's checks."""
        upload = self._uploads.get(token)
        if upload is None:
            raise StorageError(404, "NoSuchUpload", "The upload URL is unknown")
        if "Authorization" in headers:
            raise StorageError(400, "InvalidArgument", _TWO_AUTHS)
        self._check_signature(
            self._sign(token, upload.content_type, query.get("X-Amz-Expires", "")), query
        )
        if self._clock() > upload.expires:
            raise StorageError(403, "AccessDenied", "Request has expired")
        if headers.get("Content-Type") != upload.content_type:
            raise StorageError(
                403,
                "SignatureDoesNotMatch",
                "The Content-Type does not match the one the URL was signed with",
            )
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            raise StorageError(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
            )
        if content_length is None:
            raise StorageError(
                411, "MissingContentLength", "You must provide the Content-Length HTTP header."
            )
        if content_length > upload.max_bytes:
            raise StorageError(
                400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
            )
        return upload

    def store(self, upload: Upload, data: bytes) -> str:
        """Keep an accepted upload's bytes; returns its ETag."""
        self.objects[upload.key] = StoredObject(content_type=upload.content_type, data=data)
        return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'

    # -- videos ------------------------------------------------------------------------------

    def video_url(self, generation_id: str) -> str:
        """A signed download URL for a generation's video, valid for ``url_ttl`` seconds."""
        expires = f"{self._clock() + self.url_ttl:.3f}"
        signature = self._sign("video", generation_id, expires)
        return (
            f"{self.root}/storage/videos/{generation_id}.mp4"
            f"?X-Amz-Expires={expires}&X-Amz-Signature={signature}"
        )

    def read_video(self, name: str, query: Mapping[str, str], headers: Mapping[str, str]) -> bytes:
        """The video bytes behind a signed URL (``name`` is ``<generation id>.mp4``)."""
        expires = query.get("X-Amz-Expires", "")
        self._check_signature(self._sign("video", name.removesuffix(".mp4"), expires), query)
        if self._clock() > float(expires):
            raise StorageError(403, "AccessDenied", "Request has expired")
        if "Authorization" in headers:
            raise StorageError(400, "InvalidArgument", "Only one auth mechanism allowed")
        return self.video
