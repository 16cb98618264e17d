"""Uploads and downloads end to end against a loopback API and a loopback storage host."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, cast

import attrs
import pytest
from aiohttp import web

from prism_async import (
    Generation,
    GenerationFailedError,
    InvalidRequestError,
    PermissionDeniedError,
    PrismClient,
)
from tests import samples
from tests.conftest import KEY, NO_WAIT

Serve = Callable[[web.Application], Awaitable[str]]
VIDEO = os.urandom(3 * 1024 * 1024 + 17)
EXPIRED_XML = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"


@attrs.define
class World:
    """A fake API plus a fake storage host, recording what reached each."""

    api_root: str = ""
    storage_root: str = ""
    api_requests: list[tuple[str, str, Any]] = attrs.field(factory=list)
    puts: list[dict[str, Any]] = attrs.field(factory=list)
    gets: list[dict[str, Any]] = attrs.field(factory=list)
    put_statuses: list[int] = attrs.field(factory=list)
    get_plan: list[str] = attrs.field(factory=list)
    max_bytes: int = 20 * 1024 * 1024
    presigned_type: str | None = None
    generation_status: str = "completed"
    stall: asyncio.Event = attrs.field(factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return f"{self.api_root}/api"


@pytest.fixture
async def world(serve: Serve) -> World:
    state = World()

    async def presign(request: web.Request) -> web.Response:
        body = await request.json()
        state.api_requests.append(("POST", request.path, body))
        content_type = state.presigned_type or body["contentType"]
        return web.json_response(
            {
                "s3_key": f"users/u/uploads/{body.get('fileName') or 'file'}",
                "upload_url": f"{state.storage_root}/upload/obj?X-Amz-Signature=secret",
                "content_type": content_type,
                "max_bytes": state.max_bytes,
            }
        )

    async def get_generation(request: web.Request) -> web.Response:
        gid = request.match_info["id"]
        state.api_requests.append(("GET", request.path, None))
        fetches = sum(1 for method, path, _ in state.api_requests if path == request.path)
        payload = {
            **samples.GENERATION_COMPLETED,
            "id": gid,
            "status": state.generation_status,
            "video_url": f"{state.storage_root}/video/{gid}?fetch={fetches}",
        }
        if state.generation_status != "completed":
            payload["video_url"] = None
        if state.generation_status == "failed":
            payload["error"] = "Generation timed out"
        return web.json_response(payload)

    api = web.Application()
    api.router.add_post("/api/s3/presign-upload", presign)
    api.router.add_get("/api/generations/{id}", get_generation)

    async def put_object(request: web.Request) -> web.Response:
        data = await request.read()
        state.puts.append({"headers": dict(request.headers), "body": data, "query": request.query})
        status = state.put_statuses.pop(0) if state.put_statuses else 200
        return web.Response(status=status)

    async def get_video(request: web.Request) -> web.StreamResponse:
        state.gets.append({"headers": dict(request.headers), "query": dict(request.query)})
        plan = state.get_plan.pop(0) if state.get_plan else "ok"
        if plan == "expired":
            return web.Response(
                status=403,
                text=EXPIRED_XML,
                content_type="application/xml",
            )
        response = web.StreamResponse()
        response.content_length = len(VIDEO)
        response.content_type = "video/mp4"
        await response.prepare(request)
        if plan == "truncate":
            await response.write(VIDEO[: len(VIDEO) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        if plan == "stall":
            await response.write(VIDEO[:1024])
            state.stall.set()
            await asyncio.sleep(30)
        await response.write(VIDEO)
        return response

    storage = web.Application(client_max_size=64 * 1024 * 1024)
    storage.router.add_put("/upload/obj", put_object)
    storage.router.add_get("/video/{id}", get_video)
    state.api_root = await serve(api)
    state.storage_root = await serve(storage)
    return state


@pytest.fixture
async def client(world: World) -> Any:
    async with PrismClient(KEY, base_url=world.base_url, retry=NO_WAIT) as prism:
        yield prism


# -- uploads -------------------------------------------------------------------------------


async def test_upload_path_streams_with_presigned_headers_and_no_key(
    client: PrismClient, world: World, tmp_path: Path
) -> None:
    """A file upload presigns (camelCase) then PUTs the exact bytes with Content-Length, no key."""
    image = tmp_path / "product.png"
    content = os.urandom(2 * 1024 * 1024 + 5)
    image.write_bytes(content)
    progress: list[tuple[int, int | None]] = []
    uploaded = await client.uploads.upload(image, on_progress=lambda d, t: progress.append((d, t)))
    assert world.api_requests == [
        (
            "POST",
            "/api/s3/presign-upload",
            {"kind": "upload", "contentType": "image/png", "fileName": "product.png"},
        )
    ]
    (put,) = world.puts
    assert put["body"] == content
    assert put["headers"]["Content-Type"] == "image/png"
    assert put["headers"]["Content-Length"] == str(len(content))
    assert "Authorization" not in put["headers"]
    assert "Transfer-Encoding" not in put["headers"]
    assert put["query"]["X-Amz-Signature"] == "secret"
    assert uploaded.s3_key == "users/u/uploads/product.png"
    assert uploaded.size == len(content)
    assert uploaded.content_type == "image/png"
    assert progress[-1] == (len(content), len(content))
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


async def test_upload_uses_the_presigned_content_type(client: PrismClient, world: World) -> None:
    """The PUT carries the Content-Type the presign answered with."""
    world.presigned_type = "video/quicktime"
    await client.uploads.upload(b"\x00" * 100, content_type="video/mp4")
    assert world.puts[0]["headers"]["Content-Type"] == "video/quicktime"


async def test_upload_bytes_and_file_objects(client: PrismClient, world: World) -> None:
    """bytes, a seekable binary file (from its position) and a non-seekable stream upload."""
    await client.uploads.upload(b"voice" * 100, content_type="audio/mpeg")
    handle = io.BytesIO(b"HEADERvideo-bytes")
    handle.seek(6)
    await client.uploads.upload(handle, content_type="video/mp4")

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._data = io.BytesIO(b"streamed image")

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def read(self, size: int = -1) -> bytes:
            return self._data.read(size)

    await client.uploads.upload(cast(IO[bytes], Pipe()), content_type="image/jpeg")
    assert [put["body"] for put in world.puts] == [
        b"voice" * 100,
        b"video-bytes",
        b"streamed image",
    ]


async def test_failed_put_is_retried_by_rereading_the_source(
    client: PrismClient, world: World, tmp_path: Path
) -> None:
    """A 503 from storage is retried with the whole file sent again from its start."""
    world.put_statuses = [503]
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"v" * 50_000)
    await client.uploads.upload(clip)
    assert len(world.puts) == 2
    assert world.puts[1]["body"] == b"v" * 50_000
    assert len(world.api_requests) == 1  # one presign only


async def test_storage_refusal_is_a_typed_error(client: PrismClient, world: World) -> None:
    """A 403 from storage is a PermissionDeniedError, not retried."""
    world.put_statuses = [403]
    with pytest.raises(PermissionDeniedError):
        await client.uploads.upload(b"x" * 10, content_type="image/png")
    assert len(world.puts) == 1


@pytest.mark.parametrize(
    ("size", "name", "content_type"),
    [
        (20 * 1024 * 1024 + 1, "big.png", None),
        (50 * 1024 * 1024 + 1, "long.mp3", None),
        (200 * 1024 * 1024 + 1, "huge.mp4", None),
    ],
)
async def test_oversized_files_are_refused_before_any_request(
    client: PrismClient,
    world: World,
    tmp_path: Path,
    size: int,
    name: str,
    content_type: str | None,
) -> None:
    """Size limits per media kind are checked before presigning."""
    path = tmp_path / name
    with path.open("wb") as handle:
        handle.truncate(size)  # sparse: no real disk use
    with pytest.raises(InvalidRequestError) as info:
        await client.uploads.upload(path, content_type=content_type)
    assert info.value.field == "source"
    assert "limit" in info.value.reason
    assert world.api_requests == []
    assert world.puts == []


async def test_presign_max_bytes_is_checked_before_the_put(
    client: PrismClient, world: World
) -> None:
    """A file over the presign's max_bytes is refused before any byte is PUT."""
    world.max_bytes = 10
    with pytest.raises(InvalidRequestError):
        await client.uploads.upload(b"x" * 11, content_type="image/png")
    assert len(world.api_requests) == 1
    assert world.puts == []


@pytest.mark.parametrize(
    ("source", "kwargs", "field"),
    [
        (b"data", {}, "content_type"),
        (b"data", {"content_type": "application/pdf"}, "content_type"),
        (b"data", {"content_type": "text/plain"}, "content_type"),
        (b"", {"content_type": "image/png"}, "source"),
        ("/no/such/file.png", {}, "source"),
        (12345, {}, "source"),
        (io.StringIO("text"), {"content_type": "image/png"}, "source"),
        (b"data", {"file_name": "notes.weirdext"}, "content_type"),
    ],
)
async def test_bad_upload_input(
    client: PrismClient, world: World, source: Any, kwargs: dict[str, Any], field: str
) -> None:
    """Missing, empty, untyped or unsupported sources are refused before any request."""
    with pytest.raises(InvalidRequestError) as info:
        await client.uploads.upload(source, **kwargs)
    assert info.value.field == field
    assert world.api_requests == []


async def test_directory_and_empty_file(client: PrismClient, world: World, tmp_path: Path) -> None:
    """A directory or an empty file is not uploadable."""
    with pytest.raises(InvalidRequestError, match="not a regular file"):
        await client.uploads.upload(tmp_path, content_type="image/png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InvalidRequestError, match="empty"):
        await client.uploads.upload(empty)
    assert world.api_requests == []


async def test_presign_alone(client: PrismClient, world: World) -> None:
    """presign() returns the storage URL and key; unsupported types are refused."""
    presigned = await client.uploads.presign("video/mp4", file_name="clip.mp4")
    assert presigned.s3_key == "users/u/uploads/clip.mp4"
    assert presigned.upload_url.startswith(world.storage_root)
    assert presigned.max_bytes == world.max_bytes
    with pytest.raises(InvalidRequestError):
        await client.uploads.presign("application/zip")


# -- downloads -----------------------------------------------------------------------------


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".part"))


async def test_download_by_id_writes_the_file_without_the_key(
    client: PrismClient, world: World, tmp_path: Path
) -> None:
    """download(id) fetches the status, streams the video, renames into place, sends no key."""
    progress: list[tuple[int, int | None]] = []
    path = await client.generations.download(
        "gen_1", tmp_path / "out.mp4", on_progress=lambda d, t: progress.append((d, t))
    )
    assert path == tmp_path / "out.mp4"
    assert path.read_bytes() == VIDEO
    assert leftovers(tmp_path) == []
    assert "Authorization" not in world.gets[0]["headers"]
    assert progress[-1] == (len(VIDEO), len(VIDEO))


async def test_download_into_a_directory(client: PrismClient, world: World, tmp_path: Path) -> None:
    """A directory destination gets <id>.mp4; a missing parent directory is created."""
    path = await client.generations.download("gen_7", tmp_path)
    assert path == tmp_path / "gen_7.mp4"
    nested = await client.generations.download("gen_8", tmp_path / "new" / "dir" / "v.mp4")
    assert nested.read_bytes() == VIDEO


async def test_expired_url_is_refreshed_once(
    client: PrismClient, world: World, tmp_path: Path
) -> None:
    """A 403 from storage fetches the generation again and downloads from the fresh URL."""
    world.get_plan = ["expired"]
    stale = Generation(
        id="gen_1", status="completed", video_url=f"{world.storage_root}/video/gen_1?fetch=0"
    )
    path = await client.generations.download(stale, tmp_path / "v.mp4")
    assert path.read_bytes() == VIDEO
    assert [get["query"]["fetch"] for get in world.gets] == ["0", "1"]
    assert [request[0:2] for request in world.api_requests] == [("GET", "/api/generations/gen_1")]


async def test_expired_twice_raises_and_leaves_nothing(
    client: PrismClient, world: World, tmp_path: Path
) -> None:
    """If the fresh URL is refused too, the 403 is raised and no file is left behind."""
    world.get_plan = ["expired", "expired"]
    with pytest.raises(PermissionDeniedError) as info:
        await client.generations.download("gen_1", tmp_path / "v.mp4")
    assert info.value.code == "AccessDenied"
    assert not (tmp_path / "v.mp4").exists()
    assert leftovers(tmp_path) == []


async def test_truncated_transfer_is_retried_from_scratch(
    client: PrismClient, world: World, tmp_path: Path
) -> None:
    """A connection dropped mid-body is retried; the final file is whole."""
    world.get_plan = ["truncate"]
    path = await client.generations.download("gen_1", tmp_path / "v.mp4")
    assert path.read_bytes() == VIDEO
    assert len(world.gets) == 2
    assert leftovers(tmp_path) == []


async def test_failure_leaves_no_half_file(world: World, tmp_path: Path) -> None:
    """When every attempt fails, nothing is left at the destination."""
    world.get_plan = ["truncate"] * 4
    target = tmp_path / "v.mp4"
    async with PrismClient(KEY, base_url=world.base_url, retry=NO_WAIT) as prism:
        with pytest.raises(Exception):  # noqa: B017 - the exact error is covered elsewhere
            await prism.generations.download("gen_1", target)
    assert not target.exists()
    assert leftovers(tmp_path) == []


async def test_cancelled_download_leaves_no_half_file(
    client: PrismClient, world: World, tmp_path: Path
) -> None:
    """Cancelling mid-download removes the partial file and raises CancelledError."""
    world.get_plan = ["stall"]
    task = asyncio.create_task(client.generations.download("gen_1", tmp_path / "v.mp4"))
    await world.stall.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(tmp_path.iterdir()) == []


async def test_download_refuses_unfinished_and_failed(
    client: PrismClient, world: World, tmp_path: Path
) -> None:
    """A running generation is a clear InvalidRequestError; a failed one GenerationFailedError."""
    world.generation_status = "generating"
    with pytest.raises(InvalidRequestError, match="not completed"):
        await client.generations.download("gen_1", tmp_path / "v.mp4")
    world.generation_status = "failed"
    with pytest.raises(GenerationFailedError) as info:
        await client.generations.download("gen_1", tmp_path / "v.mp4")
    assert info.value.generation.error == "Generation timed out"
    assert world.gets == []
    assert list(tmp_path.iterdir()) == []


async def test_existing_file_is_replaced_atomically(
    client: PrismClient, world: World, tmp_path: Path
) -> None:
    """An existing destination is replaced only once the new file is complete."""
    target = tmp_path / "v.mp4"
    target.write_bytes(b"old")
    world.get_plan = ["expired", "expired"]
    with pytest.raises(PermissionDeniedError):
        await client.generations.download("gen_1", target)
    assert target.read_bytes() == b"old"
    await client.generations.download("gen_1", target)
    assert target.read_bytes() == VIDEO
    assert json.dumps(leftovers(tmp_path)) == "[]"


async def test_a_stalled_download_times_out_and_leaves_nothing(
    world: World, tmp_path: Path
) -> None:
    """A storage host that stops sending mid-body trips the read timeout; nothing is left."""
    from prism_async import APITimeoutError, RetryPolicy

    world.get_plan = ["stall"]
    target = tmp_path / "v.mp4"
    async with PrismClient(
        KEY, base_url=world.base_url, timeout=0.3, retry=RetryPolicy(max_retries=0)
    ) as prism:
        started = asyncio.get_running_loop().time()
        with pytest.raises(APITimeoutError):
            await prism.generations.download("gen_1", target)
        assert asyncio.get_running_loop().time() - started < 5
    assert list(tmp_path.iterdir()) == []
