"""Uploads and downloads against a real S3 implementation: moto's server, on loopback.

A fake Prism API (aiohttp.web) hands out URLs that boto3 presigns for moto, exactly as the
real API hands out URLs presigned for S3; the SDK then talks to moto for real. Nothing
leaves 127.0.0.1.

What moto 5.x enforces on presigned URLs, and so what these tests can prove:

* the Content-Type of a PUT to a URL presigned with ``ContentType`` (boto3's default query
  signature carries ``content-type=`` in the URL; moto refuses a different header with 403
  ``SignatureDoesNotMatch``, for a key that does not exist yet);
* nothing else: no signature check, no expiry check, and a request carrying both a query
  signature and an ``Authorization`` header is accepted. So the absence of the API key at the
  storage host is checked on moto's own request log (its recorder). The refresh of an expired
  URL is tested in test_transfers.py, whose storage host answers 403 as S3 does.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from moto.moto_api import recorder
from moto.server import ThreadedMotoServer

from prism_async import (
    AuthenticationError,
    InvalidRequestError,
    PrismClient,
    RetryPolicy,
    UploadedFile,
)

KEY = "prism_sk_test"
BUCKET = "prism-test-uploads"
NO_WAIT = RetryPolicy(initial=0.0, max_wait=0.0, jitter=False)
MIB = 1024 * 1024


def _payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Storage:
    """moto's S3 endpoint and a boto3 client pointed at it."""

    def __init__(self, endpoint: str, s3: Any) -> None:
        self.endpoint = endpoint
        self.s3 = s3

    def read(self, key: str) -> tuple[bytes, str]:
        """The stored bytes and Content-Type of ``key``."""
        obj = self.s3.get_object(Bucket=BUCKET, Key=key)
        with obj["Body"] as body:
            return body.read(), obj["ContentType"]

    def exists(self, key: str) -> bool:
        listing = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=key)
        return any(item["Key"] == key for item in listing.get("Contents", []))

    def presign_put(self, key: str, content_type: str, expires: int = 600) -> str:
        return str(
            self.s3.generate_presigned_url(
                "put_object",
                Params={"Bucket": BUCKET, "Key": key, "ContentType": content_type},
                ExpiresIn=expires,
            )
        )

    def presign_get(self, key: str, expires: int = 3600) -> str:
        return str(
            self.s3.generate_presigned_url(
                "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires
            )
        )

    def start_log(self) -> None:
        """Record every request moto receives from now on (headers included)."""
        recorder.reset_recording()
        recorder.start_recording()

    def logged(self) -> list[dict[str, Any]]:
        """The requests moto received since :meth:`start_log`."""
        recorder.stop_recording()
        text = recorder.download_recording()
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    """moto's S3 server on 127.0.0.1 (a free port), with dummy credentials and one bucket."""
    aws_dir = tmp_path_factory.mktemp("aws")
    log = aws_dir / "moto_recording.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(aws_dir / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(aws_dir / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(name, raising=False)
        # moto's recorder writes to ./moto_recording by default: keep it in the temp dir.
        mp.setattr(recorder, "_location", str(log))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            yield Storage(endpoint, s3)
            recorder.stop_recording()
            listing = s3.list_objects_v2(Bucket=BUCKET)
            for item in listing.get("Contents", []):
                s3.delete_object(Bucket=BUCKET, Key=item["Key"])
            s3.delete_bucket(Bucket=BUCKET)
            s3.close()
        finally:
            server.stop()


class FakePrism:
    """A fake Prism API that presigns real moto URLs. Tests steer it through its attributes."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.url = ""
        self.presign_bodies: list[dict[str, Any]] = []
        self.generation_gets: list[str] = []
        self.max_bytes = 200 * MIB
        self.video_key = "videos/gen_1.mp4"
        # Expiry (seconds) of each video_url handed out, in order; one hour once it is empty.
        self._uploads = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/s3/presign-upload", self._presign)
        app.router.add_get("/api/generations/{id}", self._generation)
        return app

    @staticmethod
    def _authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {KEY}"

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": code, "message": message}, status=status)

    async def _presign(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, "unauthorized", "Invalid or missing API key")
        body = await request.json()
        self.presign_bodies.append(body)
        content_type = body.get("contentType")
        if body.get("kind") != "upload" or not isinstance(content_type, str):
            return self._error(400, "validation_error", "kind and contentType are required")
        if content_type.split("/")[0] not in ("image", "video", "audio"):
            return self._error(400, "validation_error", "Unsupported content type")
        if content_type == "image/jpg":  # the server may canonicalise the type it presigns
            content_type = "image/jpeg"
        self._uploads += 1
        key = f"uploads/user_1/{self._uploads:04d}-{body.get('fileName') or 'file'}"
        return web.json_response(
            {
                "s3_key": key,
                "upload_url": self.storage.presign_put(key, content_type),
                "content_type": content_type,
                "max_bytes": self.max_bytes,
            }
        )

    async def _generation(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, "unauthorized", "Invalid or missing API key")
        generation_id = request.match_info["id"]
        self.generation_gets.append(generation_id)
        return web.json_response(
            {
                "id": generation_id,
                "status": "completed",
                "video_url": self.storage.presign_get(self.video_key),
                "created_at": "2026-02-26T12:00:00.000Z",
                "completed_at": "2026-02-26T12:01:30.000Z",
                "template_id": None,
                "share_url": None,
                "error": None,
            }
        )


@pytest.fixture
async def api(storage: Storage) -> AsyncIterator[FakePrism]:
    """The fake Prism API, served by aiohttp.web on 127.0.0.1 (a free port)."""
    fake = FakePrism(storage)
    runner = web.AppRunner(fake.app(), shutdown_timeout=0.1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}/api"
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
async def prism(api: FakePrism) -> AsyncIterator[PrismClient]:
    """An SDK client on the fake API, with zero-wait retries."""
    async with PrismClient(KEY, base_url=api.url, retry=NO_WAIT) as client:
        yield client


def _storage_requests(
    log: list[dict[str, Any]], method: str, key_part: str
) -> list[dict[str, Any]]:
    return [
        entry
        for entry in log
        if entry["method"] == method and f"/{BUCKET}/" in entry["url"] and key_part in entry["url"]
    ]


def _has_header(entry: dict[str, Any], name: str) -> bool:
    return any(header.lower() == name.lower() for header in entry["headers"])


async def test_upload_path_stores_exact_bytes_with_guessed_type(
    prism: PrismClient, api: FakePrism, storage: Storage, tmp_path: Path
) -> None:
    """Uploading a .png path presigns image/png and stores the file's exact bytes as image/png."""
    data = _payload(300 * 1024, seed=1)
    path = tmp_path / "ref frame+1.png"  # a space and a plus: the URL path must survive as-is
    path.write_bytes(data)

    uploaded = await prism.uploads.upload(path)

    assert api.presign_bodies == [
        {"kind": "upload", "contentType": "image/png", "fileName": "ref frame+1.png"}
    ]
    assert uploaded == UploadedFile(
        s3_key="uploads/user_1/0001-ref frame+1.png", content_type="image/png", size=len(data)
    )
    stored, stored_type = storage.read(uploaded.s3_key)
    assert stored == data
    assert stored_type == "image/png"


async def test_upload_bytes_and_file_object(
    prism: PrismClient, api: FakePrism, storage: Storage, tmp_path: Path
) -> None:
    """Bytes (with an explicit type) and an open binary file (type from its name) upload intact."""
    clip = _payload(700 * 1024, seed=2)
    from_bytes = await prism.uploads.upload(clip, content_type="video/mp4")

    voice = _payload(200 * 1024, seed=3)
    path = tmp_path / "voice.mp3"
    path.write_bytes(voice)
    with path.open("rb") as handle:
        from_handle = await prism.uploads.upload(handle)

    assert api.presign_bodies == [
        {"kind": "upload", "contentType": "video/mp4"},
        {"kind": "upload", "contentType": "audio/mpeg", "fileName": "voice.mp3"},
    ]
    assert (from_bytes.content_type, from_bytes.size) == ("video/mp4", len(clip))
    assert (from_handle.content_type, from_handle.size) == ("audio/mpeg", len(voice))
    assert storage.read(from_bytes.s3_key) == (clip, "video/mp4")
    assert storage.read(from_handle.s3_key) == (voice, "audio/mpeg")


async def test_upload_seekable_file_object_sends_from_current_position(
    prism: PrismClient, storage: Storage
) -> None:
    """A seekable file object is uploaded from its current position to its end."""
    data = _payload(64 * 1024, seed=4)
    handle = io.BytesIO(b"HEADER" + data)
    handle.seek(6)

    uploaded = await prism.uploads.upload(handle, content_type="image/webp")

    assert uploaded.size == len(data)
    assert storage.read(uploaded.s3_key) == (data, "image/webp")


async def test_upload_reports_increasing_progress_up_to_total(
    prism: PrismClient, storage: Storage
) -> None:
    """on_progress is called with increasing byte counts, the total each time, ending at it."""
    data = _payload(2 * MIB + 12345, seed=5)
    calls: list[tuple[int, int | None]] = []

    async def on_progress(done: int, total: int | None) -> None:
        calls.append((done, total))

    uploaded = await prism.uploads.upload(data, content_type="video/mp4", on_progress=on_progress)

    assert len(calls) > 1
    sent = [done for done, _ in calls]
    assert sent == sorted(set(sent))
    assert sent[-1] == len(data)
    assert {total for _, total in calls} == {len(data)}
    assert storage.read(uploaded.s3_key) == (data, "video/mp4")


async def test_upload_puts_the_content_type_the_server_presigned(
    prism: PrismClient, api: FakePrism, storage: Storage
) -> None:
    """The PUT carries the presign response's content_type when it differs from the one asked."""
    data = _payload(10 * 1024, seed=6)

    uploaded = await prism.uploads.upload(data, content_type="image/jpg")

    assert api.presign_bodies == [{"kind": "upload", "contentType": "image/jpg"}]
    assert uploaded.content_type == "image/jpeg"
    assert storage.read(uploaded.s3_key) == (data, "image/jpeg")


async def test_presigned_put_refuses_another_content_type(
    prism: PrismClient, storage: Storage
) -> None:
    """Storage answers 403 to a PUT whose Content-Type differs from the presigned one, 200 to it."""
    presigned = await prism.uploads.presign("image/png", file_name="frame.png")
    assert presigned.content_type == "image/png"

    async with aiohttp.ClientSession() as session:
        async with session.put(
            presigned.upload_url, data=b"not a png", headers={"Content-Type": "text/plain"}
        ) as response:
            status, text = response.status, await response.text()
        assert status == 403
        assert "SignatureDoesNotMatch" in text
        assert not storage.exists(presigned.s3_key)

        async with session.put(
            presigned.upload_url, data=b"\x89PNG", headers={"Content-Type": "image/png"}
        ) as response:
            assert response.status == 200
    assert storage.read(presigned.s3_key) == (b"\x89PNG", "image/png")


async def test_upload_sends_no_api_key_to_storage(
    prism: PrismClient, storage: Storage, tmp_path: Path
) -> None:
    """The storage PUT carries no Authorization header, Content-Length and Content-Type only."""
    data = _payload(128 * 1024, seed=7)
    path = tmp_path / "still.png"
    path.write_bytes(data)

    storage.start_log()
    uploaded = await prism.uploads.upload(path)
    log = storage.logged()

    puts = _storage_requests(log, "PUT", "still.png")
    assert len(puts) == 1
    assert not _has_header(puts[0], "Authorization")
    headers = {name.lower(): value for name, value in puts[0]["headers"].items()}
    assert headers["content-type"] == "image/png"
    assert headers["content-length"] == str(len(data))
    assert "transfer-encoding" not in headers
    assert storage.read(uploaded.s3_key) == (data, "image/png")


async def test_upload_over_max_bytes_sends_nothing_to_storage(
    prism: PrismClient, api: FakePrism, storage: Storage
) -> None:
    """A file larger than the presign's max_bytes is refused before any byte reaches storage."""
    api.max_bytes = 1000

    storage.start_log()
    with pytest.raises(InvalidRequestError, match="over the upload limit"):
        await prism.uploads.upload(_payload(1001, seed=8), content_type="image/png")
    log = storage.logged()

    assert len(api.presign_bodies) == 1
    assert _storage_requests(log, "PUT", "uploads/") == []


async def test_upload_with_bad_key_fails_before_storage(api: FakePrism, storage: Storage) -> None:
    """A rejected API key raises AuthenticationError and nothing is sent to storage."""
    storage.start_log()
    async with PrismClient("prism_sk_wrong", base_url=api.url, retry=NO_WAIT) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.uploads.upload(b"\x89PNG", content_type="image/png")
    log = storage.logged()

    assert caught.value.status_code == 401
    assert caught.value.code == "unauthorized"
    assert api.presign_bodies == []
    assert _storage_requests(log, "PUT", "uploads/") == []


async def test_download_writes_the_object_and_leaves_no_part_file(
    prism: PrismClient, api: FakePrism, storage: Storage, tmp_path: Path
) -> None:
    """download() writes the stored video byte for byte, without the API key, and no .part file."""
    video = _payload(3 * MIB + 777, seed=9)
    storage.s3.put_object(Bucket=BUCKET, Key=api.video_key, Body=video, ContentType="video/mp4")
    out = tmp_path / "out.mp4"
    calls: list[tuple[int, int | None]] = []

    storage.start_log()
    written = await prism.generations.download(
        "gen_1", out, on_progress=lambda done, total: calls.append((done, total))
    )
    log = storage.logged()

    assert written == out
    assert out.read_bytes() == video
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    assert api.generation_gets == ["gen_1"]
    assert calls[-1] == (len(video), len(video))
    gets = _storage_requests(log, "GET", api.video_key)
    assert len(gets) == 1
    assert not _has_header(gets[0], "Authorization")


async def test_download_into_directory_names_file_after_generation(
    prism: PrismClient, api: FakePrism, storage: Storage, tmp_path: Path
) -> None:
    """download() into an existing directory writes <id>.mp4 there and nothing else."""
    video = _payload(100 * 1024, seed=10)
    api.video_key = "videos/gen_dir.mp4"
    storage.s3.put_object(Bucket=BUCKET, Key=api.video_key, Body=video, ContentType="video/mp4")

    written = await prism.generations.download("gen_dir", tmp_path)

    assert written == tmp_path / "gen_dir.mp4"
    assert written.read_bytes() == video
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen_dir.mp4"]
