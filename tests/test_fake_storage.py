"""FakePrismServer's storage, spoken to in raw HTTP: presign, PUT uploads, video downloads, expiry.

These tests never use the SDK client: they send what the documented API (prism-api.md) and its
S3 storage receive and check what they answer, so that tests written against the fake prove
something about the real API. Storage requests go through the ``storage`` session, which sends
no API key, as a storage client must not. Every server runs with ``generation_seconds=100`` so
that only :meth:`advance` moves a generation or a URL's expiry along, never real time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from prism_async import _rules
from prism_async.testing import FakePrismServer, StoredObject
from tests.fake_http import (
    MB,
    PNG,
    SECONDS,
    assert_error,
    call,
    create,
    create_one,
    get_generation,
    presign,
)


async def put(
    storage: aiohttp.ClientSession,
    url: str,
    data: Any,
    content_type: str = "image/png",
    **headers: str,
) -> tuple[int, str]:
    """PUT ``data`` to a presigned URL; return the status and the body text."""
    async with storage.put(
        url, data=data, headers={"Content-Type": content_type, **headers}
    ) as resp:
        return resp.status, await resp.text()


async def upload(
    http: aiohttp.ClientSession,
    storage: aiohttp.ClientSession,
    server: FakePrismServer,
    content_type: str = "image/png",
) -> str:
    """Presign and PUT a small file; return its ``s3_key``."""
    presigned = await presign(http, server, content_type)
    status, text = await put(storage, presigned["upload_url"], PNG, content_type)
    assert status == 200, text
    return str(presigned["s3_key"])


# -- presign -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "max_bytes"),
    [
        ("image/png", 20 * MB),
        ("image/jpeg", 20 * MB),
        ("video/mp4", 200 * MB),
        ("audio/mpeg", 50 * MB),
    ],
)
async def test_presign_response(
    server: FakePrismServer, http: aiohttp.ClientSession, content_type: str, max_bytes: int
) -> None:
    """Presign answers s3_key, upload_url, content_type and the documented max_bytes."""
    presigned = await presign(http, server, content_type)
    assert set(presigned) == {"s3_key", "upload_url", "content_type", "max_bytes"}
    assert presigned["content_type"] == content_type
    assert presigned["max_bytes"] == max_bytes
    assert isinstance(presigned["s3_key"], str)
    assert presigned["s3_key"]
    assert presigned["upload_url"].startswith("http")
    assert server.base_url not in presigned["upload_url"]
    assert presigned["s3_key"] not in server.objects


async def test_presign_without_file_name(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``fileName`` is optional."""
    status, payload = await call(
        http,
        "POST",
        f"{server.base_url}/s3/presign-upload",
        json={"kind": "upload", "contentType": "image/png"},
    )
    assert status == 200, payload
    assert payload["max_bytes"] == 20971520


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "avatar", "contentType": "image/png"},
        {"contentType": "image/png"},
        {"kind": "upload", "contentType": "application/pdf"},
        {"kind": "upload", "contentType": "text/plain"},
        {"kind": "upload", "contentType": "image"},
        {"kind": "upload"},
        {"kind": "upload", "contentType": 7},
        {"kind": "upload", "content_type": "image/png"},
    ],
    ids=repr,
)
async def test_presign_validation(
    server: FakePrismServer, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    """A bad kind or an unsupported or missing contentType answers 400 validation_error."""
    status, payload = await call(http, "POST", f"{server.base_url}/s3/presign-upload", json=body)
    assert_error(status, payload, 400, "validation_error")


# -- PUT uploads -------------------------------------------------------------------------------


async def test_put_stores_the_bytes(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """A PUT with the presigned Content-Type and a Content-Length stores the bytes."""
    presigned = await presign(http, server, "image/png")
    status, _ = await put(storage, presigned["upload_url"], PNG, "image/png")
    assert status == 200
    assert server.objects[presigned["s3_key"]] == StoredObject(content_type="image/png", data=PNG)
    recorded = server.requests_to("PUT", "/storage/uploads/*")
    assert len(recorded) == 1
    assert recorded[0].headers["Content-Length"] == str(len(PNG))
    assert "Authorization" not in recorded[0].headers


async def test_put_with_authorization_header_is_refused(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """A PUT that carries an Authorization header answers 400 as S3 does, storing nothing."""
    presigned = await presign(http, server)
    status, text = await put(
        storage, presigned["upload_url"], PNG, Authorization=f"Bearer {server.api_key}"
    )
    assert status == 400
    assert "Only one auth mechanism allowed" in text
    assert text.startswith("<?xml")
    assert "<Code>InvalidArgument</Code>" in text
    assert server.objects == {}


async def test_put_with_other_content_type_is_403(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """A PUT whose Content-Type differs from the presigned one answers 403, storing nothing."""
    presigned = await presign(http, server, "image/png")
    status, text = await put(storage, presigned["upload_url"], PNG, "image/jpeg")
    assert status == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in text
    assert server.objects == {}


async def test_chunked_put_is_501(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """A chunked PUT (no Content-Length) answers 501 NotImplemented, as S3 does."""
    presigned = await presign(http, server)

    async def chunks() -> AsyncIterator[bytes]:
        yield PNG[:10]
        yield PNG[10:]

    status, text = await put(storage, presigned["upload_url"], chunks())
    assert status == 501
    assert "<Code>NotImplemented</Code>" in text
    assert server.objects == {}


async def test_put_over_max_bytes_is_entity_too_large(
    server: FakePrismServer,
    http: aiohttp.ClientSession,
    storage: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PUT larger than ``max_bytes`` answers 400 EntityTooLarge; exactly ``max_bytes`` fits."""
    monkeypatch.setitem(_rules.UPLOAD_LIMITS, "image", 16)
    presigned = await presign(http, server, "image/png")
    assert presigned["max_bytes"] == 16
    status, text = await put(storage, presigned["upload_url"], b"x" * 17)
    assert status == 400
    assert "<Code>EntityTooLarge</Code>" in text
    assert server.objects == {}
    status, _ = await put(storage, presigned["upload_url"], b"x" * 16)
    assert status == 200
    assert server.objects[presigned["s3_key"]].data == b"x" * 16


async def test_put_with_tampered_signature_is_403(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """Changing the signature, or the expiry it signs, answers 403 SignatureDoesNotMatch."""
    presigned = await presign(http, server)
    url = URL(presigned["upload_url"])
    signature = url.query["X-Amz-Signature"]
    forged = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    status, text = await put(storage, str(url.update_query({"X-Amz-Signature": forged})), PNG)
    assert status == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in text
    later = f"{float(url.query['X-Amz-Expires']) + 86400:.3f}"
    status, text = await put(storage, str(url.update_query({"X-Amz-Expires": later})), PNG)
    assert status == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in text
    status, _ = await put(storage, str(url.with_query(None)), PNG)
    assert status == 403
    assert server.objects == {}


async def test_put_after_expiry_is_403(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """A PUT after ``url_ttl`` has passed answers 403 Request has expired."""
    presigned = await presign(http, server)
    server.advance(server.url_ttl + 1)
    status, text = await put(storage, presigned["upload_url"], PNG)
    assert status == 403
    assert "<Code>AccessDenied</Code>" in text
    assert "Request has expired" in text
    assert server.objects == {}


async def test_put_to_unknown_upload_is_refused(
    server: FakePrismServer, storage: aiohttp.ClientSession
) -> None:
    """A PUT to an upload URL the fake never issued is refused with an S3 XML error."""
    status, text = await put(storage, f"{server.root}/storage/uploads/nope?X-Amz-Signature=x", PNG)
    assert status in (403, 404)
    assert "<Error>" in text
    assert server.objects == {}


# -- uploaded keys as generation inputs --------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "as_list"),
    [
        ("startFrameKey", False),
        ("endFrameKey", False),
        ("sourceVideoKey", False),
        ("audioKey", False),
        ("ingredientImageKeys", True),
        ("characterReferenceImageKeys", True),
        ("referenceVideoKeys", True),
    ],
)
async def test_key_never_uploaded_is_a_validation_error(
    server: FakePrismServer, http: aiohttp.ClientSession, field: str, as_list: bool
) -> None:
    """A key field naming a key that was never uploaded answers 400 validation_error."""
    key = "users/user_abc/user-uploads/batch_abc/never-uploaded.png"
    status, payload = await create(http, server, **{field: [key] if as_list else key})
    assert_error(status, payload, 400, "validation_error")
    assert server.credits == 10_000


async def test_presigned_but_not_uploaded_key_is_refused(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A key that was presigned but never PUT is not a usable input yet."""
    presigned = await presign(http, server)
    status, payload = await create(http, server, startFrameKey=presigned["s3_key"])
    assert_error(status, payload, 400, "validation_error")


async def test_uploaded_keys_are_accepted_in_every_key_field(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """Keys uploaded through presign + PUT are accepted in the single and list key fields."""
    image = await upload(http, storage, server, "image/png")
    second = await upload(http, storage, server, "image/jpeg")
    video = await upload(http, storage, server, "video/mp4")
    audio = await upload(http, storage, server, "audio/mpeg")
    status, payload = await create(
        http,
        server,
        startFrameKey=image,
        endFrameKey=second,
        ingredientImageKeys=[image, second],
        characterReferenceImageKeys=[image],
        sourceVideoKey=video,
        referenceVideoKeys=[video],
        audioKey=audio,
    )
    assert status == 200, payload


# -- video download ----------------------------------------------------------------------------


async def completed_generation(
    http: aiohttp.ClientSession, server: FakePrismServer
) -> dict[str, Any]:
    """Create a generation, run it to completion and return its status object."""
    generation_id = await create_one(http, server)
    server.advance(SECONDS)
    completed = await get_generation(http, server, generation_id)
    assert completed["status"] == "completed"
    return completed


async def test_video_url_serves_the_video(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """GET video_url answers the fake's video bytes as video/mp4, with no API key."""
    completed = await completed_generation(http, server)
    async with storage.get(completed["video_url"]) as response:
        assert response.status == 200
        assert response.content_type == "video/mp4"
        assert await response.read() == server.video
    assert len(server.video) == 256 * 1024
    assert server.video[4:8] == b"ftyp"


async def test_video_url_honours_range(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """``Range: bytes=0-99`` answers 206, Content-Range and those 100 bytes; past the end 416."""
    completed = await completed_generation(http, server)
    async with storage.get(completed["video_url"], headers={"Range": "bytes=0-99"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 0-99/{len(server.video)}"
        body = await response.read()
    assert body == server.video[:100]
    async with storage.get(completed["video_url"], headers={"Range": "bytes=100-"}) as response:
        assert response.status == 206
        assert await response.read() == server.video[100:]
    beyond = {"Range": f"bytes={len(server.video)}-"}
    async with storage.get(completed["video_url"], headers=beyond) as response:
        assert response.status == 416
        assert "<Code>InvalidRange</Code>" in await response.text()


async def test_video_url_expires_and_a_fresh_fetch_renews_it(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """After ``url_ttl`` the URL answers 403 AccessDenied XML; re-fetching gives a working one."""
    completed = await completed_generation(http, server)
    server.advance(server.url_ttl + 1)
    async with storage.get(completed["video_url"]) as response:
        assert response.status == 403
        text = await response.text()
    assert "<Code>AccessDenied</Code>" in text
    assert "Request has expired" in text
    fresh = await get_generation(http, server, completed["id"])
    assert fresh["video_url"] != completed["video_url"]
    async with storage.get(fresh["video_url"]) as response:
        assert response.status == 200
        assert await response.read() == server.video


async def test_video_url_refuses_tampering_and_the_api_key(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """A forged signature answers 403, and a request carrying Authorization 400, as S3 does."""
    completed = await completed_generation(http, server)
    url = URL(completed["video_url"])
    forged = url.update_query({"X-Amz-Signature": "0" * 64})
    async with storage.get(forged) as response:
        assert response.status == 403
        assert "<Code>SignatureDoesNotMatch</Code>" in await response.text()
    async with http.get(completed["video_url"]) as response:
        assert response.status == 400
        assert "Only one auth mechanism allowed" in await response.text()


async def test_share_url_answers(
    server: FakePrismServer, http: aiohttp.ClientSession, storage: aiohttp.ClientSession
) -> None:
    """The share_url of a completed generation is a public page answering 200."""
    completed = await completed_generation(http, server)
    async with storage.get(completed["share_url"]) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
