"""The SDK end to end against FakePrismServer: every resource, transfers, faults and waits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from prism_async import (
    APIConnectionError,
    AuthenticationError,
    FreeTierPausedError,
    GenerationFailedError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidTemplateError,
    NotFoundError,
    PollPolicy,
    PricingError,
    PrismClient,
    RetryPolicy,
    WaitTimeoutError,
)
from prism_async.testing import MODEL_PRICES, TEMPLATE_PRICE, FakePrismServer

FAST_POLL = PollPolicy(initial_delay=0.02, interval=0.05, max_interval=0.1, timeout=10)
NO_WAIT = RetryPolicy(initial=0.0, max_wait=0.0, jitter=False)


@pytest.fixture
async def server() -> AsyncIterator[FakePrismServer]:
    """A fake whose videos take 0.2 s."""
    async with FakePrismServer(generation_seconds=0.2) as fake:
        yield fake


@pytest.fixture
async def prism(server: FakePrismServer) -> AsyncIterator[PrismClient]:
    async with PrismClient(
        server.api_key, base_url=server.base_url, poll=FAST_POLL, retry=NO_WAIT
    ) as client:
        yield client


async def test_upload_generate_wait_download(
    prism: PrismClient, server: FakePrismServer, tmp_path: Path
) -> None:
    """The main job: upload a reference, generate two videos, wait, download both."""
    image = tmp_path / "product.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    uploaded = await prism.uploads.upload(image)
    assert server.objects[uploaded.s3_key].data == image.read_bytes()
    assert server.objects[uploaded.s3_key].content_type == "image/png"

    credits = server.credits
    batch = await prism.generations.create(
        prompt="Animate this product",
        model_name="veo-3.1",
        count=2,
        start_frame_key=uploaded.s3_key,
    )
    assert batch.metadata.credits_charged == 2 * MODEL_PRICES["veo-3.1"]
    assert server.credits == credits - 2 * MODEL_PRICES["veo-3.1"]

    statuses: list[str] = []
    videos = await prism.wait_for_generations(batch, on_update=lambda g: statuses.append(g.status))
    assert [video.id for video in videos] == batch.ids
    assert all(video.is_completed for video in videos)
    assert statuses.count("completed") == 2

    for video in videos:
        path = await prism.generations.download(video, tmp_path / "videos")
        assert path.read_bytes() == server.video
    put = server.requests_to("PUT", "/storage/uploads/*")[0]
    assert "Authorization" not in put.headers
    assert put.headers["Content-Length"] == str(image.stat().st_size)
    for get in server.requests_to("GET", "/storage/videos/*"):
        assert "Authorization" not in get.headers


async def test_create_and_wait(prism: PrismClient, server: FakePrismServer) -> None:
    """create_and_wait returns the completed videos of the batch."""
    videos = await prism.generations.create_and_wait(
        prompt="A cat", model_name="kling-2.5", count=3, duration=5, aspect_ratio="9:16"
    )
    assert len(videos) == 3
    assert all(video.video_url for video in videos)
    (sent,) = server.requests_to("POST", "/api/generations")
    assert sent.json == {
        "prompt": "A cat",
        "modelName": "kling-2.5",
        "count": 3,
        "duration": "5s",
        "aspectRatio": "9:16",
    }


async def test_template_flow_with_a_character(prism: PrismClient, server: FakePrismServer) -> None:
    """Browse templates, create a character, generate from a template with it, and wait."""
    ids = [template.id async for template in prism.templates.iter(limit=2)]
    assert ids == [template["id"] for template in server.templates]
    template = await prism.templates.get("abc123")
    assert [variable.key for variable in template.input_variables] == [
        "hook",
        "productImage",
        "benefit",
    ]
    character = await prism.characters.create(
        name="Maya", images=["https://example.com/maya.png"], description="Presenter"
    )
    batch = await prism.templates.generate(
        "abc123",
        variables={"hook": "Look at this"},
        character_variables={"productImage": character.id},
    )
    assert server.requests_to("POST", "/api/templates/abc123/generate")[0].json == {
        "variables": {"hook": "Look at this"},
        "character_variables": {"productImage": character.id},
    }
    assert batch.credits_charged == TEMPLATE_PRICE
    assert batch.latency_estimate is not None
    (video,) = await prism.wait_for_generations(batch)
    assert video.template_id == "abc123"
    names = [c.name async for c in prism.characters.iter(q="maya")]
    assert names == ["Maya"]


async def test_character_from_local_files(
    prism: PrismClient, server: FakePrismServer, tmp_path: Path
) -> None:
    """Local images are sent as multipart and accepted."""
    images = []
    for name in ("front.png", "side.jpg"):
        path = tmp_path / name
        path.write_bytes(b"image-bytes")
        images.append(path)
    character = await prism.characters.create(name="Theo", images=images)
    assert character.name == "Theo"
    request = server.requests_to("POST", "/api/characters")[0]
    assert request.headers["Content-Type"].startswith("multipart/form-data")


async def test_assets_feed_generations(prism: PrismClient, server: FakePrismServer) -> None:
    """An asset's storage key found by search is accepted as a generation input."""
    page = await prism.assets.search("surfing cat", type="image", limit=2)
    assert page.data
    assert all(asset.asset_type == "image" for asset in page.data)
    found = [asset async for asset in prism.assets.iter_search("take", limit=5)]
    assert len(found) == len(server.assets)
    key = page.data[0].asset_s3_key
    assert key is not None
    batch = await prism.generations.create(
        prompt="Use this", model_name="veo-3.1-fast", ingredient_image_keys=[key]
    )
    assert len(batch.ids) == 1


async def test_expired_video_url_is_refreshed(
    prism: PrismClient, server: FakePrismServer, tmp_path: Path
) -> None:
    """A video_url older than its TTL answers 403; download() fetches a fresh one, once."""
    (video,) = await prism.generations.create_and_wait(prompt="A cat", model_name="veo-3.1")
    server.advance(server.url_ttl + 1)
    gets_before = len(server.requests_to("GET", f"/api/generations/{video.id}"))
    path = await prism.generations.download(video, tmp_path / "late.mp4")
    assert path.read_bytes() == server.video
    storage = server.requests_to("GET", "/storage/videos/*")
    assert len(storage) == 2  # the stale URL (403), then the fresh one
    assert len(server.requests_to("GET", f"/api/generations/{video.id}")) == gets_before + 1


async def test_transient_faults_on_get_are_retried(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """Injected 503s and a dropped connection on a status GET are retried to success."""
    (queued,) = (await prism.generations.create(prompt="p", model_name="veo-3.1")).ids
    server.inject("GET", "/api/generations/*", status=503, times=2)
    server.inject("GET", "/api/generations/*", drop=True)
    generation = await prism.generations.get(queued)
    assert generation.id == queued
    assert len(server.requests_to("GET", f"/api/generations/{queued}")) >= 4


async def test_paid_post_is_sent_once_on_5xx_and_drop(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """A 500 or a dropped connection on create is raised after exactly one POST."""
    credits = server.credits
    server.inject("POST", "/api/generations", status=500)
    with pytest.raises(InternalServerError):
        await prism.generations.create(prompt="p", model_name="veo-3.1")
    server.inject("POST", "/api/generations", drop=True)
    with pytest.raises(APIConnectionError) as info:
        await prism.generations.create(prompt="p", model_name="veo-3.1")
    assert info.value.maybe_sent is True
    assert len(server.requests_to("POST", "/api/generations")) == 2
    assert server.credits == credits


async def test_paid_post_is_retried_on_429(prism: PrismClient, server: FakePrismServer) -> None:
    """A 429 with Retry-After on create is retried; the video is charged once."""
    credits = server.credits
    server.inject("POST", "/api/generations", status=429, headers={"Retry-After": "0"})
    batch = await prism.generations.create(prompt="p", model_name="veo-3.1")
    assert len(batch.ids) == 1
    assert len(server.requests_to("POST", "/api/generations")) == 2
    assert server.credits == credits - MODEL_PRICES["veo-3.1"]


async def test_waits_survive_faults_and_report_failures(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """Status polls hit by faults keep going; a failing generation raises with its error."""
    good = (await prism.generations.create(prompt="fine", model_name="veo-3.1")).ids[0]
    bad = (await prism.generations.create(prompt="[fail] please", model_name="veo-3.1")).ids[0]
    server.inject("GET", "/api/generations/*", status=500, times=3)
    server.inject("GET", "/api/generations/*", status=429, headers={"Retry-After": "0"}, times=2)
    results = await prism.wait_for_generations([good, bad], return_exceptions=True)
    assert not isinstance(results[0], BaseException)
    assert results[0].is_completed
    assert isinstance(results[1], GenerationFailedError)
    assert results[1].generation.error == "Generation failed"
    server.fail_generation(good, "Moderation")
    with pytest.raises(GenerationFailedError, match="Moderation"):
        await prism.wait_for_generation(good)


async def test_wait_timeout_with_last_state(server: FakePrismServer) -> None:
    """A generation slower than the wait's timeout raises WaitTimeoutError with its last state."""
    server.generation_seconds = 60
    async with PrismClient(server.api_key, base_url=server.base_url, poll=FAST_POLL) as prism:
        (queued,) = (await prism.generations.create(prompt="slow", model_name="veo-3.1")).ids
        with pytest.raises(WaitTimeoutError) as info:
            await prism.wait_for_generation(queued, timeout=0.3)
        assert info.value.last is not None
        assert info.value.last.status in ("queued", "generating")
        server.advance(60)
        assert (await prism.wait_for_generation(queued)).is_completed


async def test_documented_errors_surface_typed(prism: PrismClient, server: FakePrismServer) -> None:
    """402, 400 pricing_error, 503 free_tier_paused, 404 and 422 reach the caller typed."""
    with pytest.raises(PricingError):
        await prism.generations.create(prompt="p", model_name="no-such-model")
    with pytest.raises(NotFoundError):
        await prism.templates.generate("no-such-template", variables={})
    with pytest.raises(InvalidTemplateError):
        await prism.templates.generate("broken-template", variables={})
    server.free_tier_paused = True
    with pytest.raises(FreeTierPausedError):
        await prism.generations.create(prompt="p", model_name="veo-3.1")
    assert len(server.requests_to("POST", "/api/generations")) == 2
    server.free_tier_paused = False
    server.credits = 10
    with pytest.raises(InsufficientCreditsError) as info:
        await prism.generations.create(prompt="p", model_name="veo-3.1")
    assert info.value.message == "Not enough credits"


async def test_wrong_key_is_an_authentication_error(server: FakePrismServer) -> None:
    """A wrong key gives AuthenticationError, and the key is not in the error."""
    async with PrismClient("prism_sk_wrong", base_url=server.base_url) as prism:
        with pytest.raises(AuthenticationError) as info:
            await prism.templates.list()
    assert "prism_sk_wrong" not in str(info.value)
    assert info.value.code == "unauthorized"


async def test_the_wire_uses_camel_case_and_the_key(
    prism: PrismClient, server: FakePrismServer
) -> None:
    """What the fake received is exactly what the docs ask for."""
    await prism.uploads.presign("video/mp4", file_name="clip.mp4")
    (presign,) = server.requests_to("POST", "/api/s3/presign-upload")
    assert presign.json == {"kind": "upload", "contentType": "video/mp4", "fileName": "clip.mp4"}
    assert presign.headers["Authorization"] == f"Bearer {server.api_key}"
    assert presign.headers["User-Agent"].startswith("prism-async/")
