"""Every endpoint's request shape (aioresponses) and its parsing, plus bad input caught early."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from prism_async import (
    InsufficientCreditsError,
    InvalidRequestError,
    InvalidTemplateError,
    NotFoundError,
    PricingError,
    PrismClient,
)
from tests import samples
from tests.conftest import API, calls_to, sent_json

GEN_URL = f"{API}/generations"


async def test_create_generation_sends_camel_case_and_parses(
    prism: PrismClient, mock: aioresponses
) -> None:
    """create() sends exactly the camelCase body, unset fields left out, and returns a batch."""
    mock.post(GEN_URL, payload=samples.CREATE_GENERATION)
    batch = await prism.generations.create(
        prompt="A fast-paced product demo with bold captions",
        model_name="veo-3.1",
        aspect_ratio="9:16",
        duration="8s",
        resolution="1080p",
        count=1,
        has_audio=True,
        start_frame_key="users/u/start.png",
        ingredient_image_keys=["users/u/a.png", "users/u/b.png"],
        reference_video_keys=["users/u/ref.mp4"],
        audio_key="users/u/voice.mp3",
        template_id="abc123",
    )
    assert sent_json(mock, "POST", GEN_URL) == [
        {
            "prompt": "A fast-paced product demo with bold captions",
            "modelName": "veo-3.1",
            "aspectRatio": "9:16",
            "duration": "8s",
            "resolution": "1080p",
            "count": 1,
            "hasAudio": True,
            "startFrameKey": "users/u/start.png",
            "ingredientImageKeys": ["users/u/a.png", "users/u/b.png"],
            "referenceVideoKeys": ["users/u/ref.mp4"],
            "audioKey": "users/u/voice.mp3",
            "templateId": "abc123",
        }
    ]
    assert batch.ids == ["gen_abc123"]
    assert batch.metadata.credits_charged == 120


async def test_create_minimal_body(prism: PrismClient, mock: aioresponses) -> None:
    """Only prompt and modelName are sent when nothing else is set; an int duration becomes '8s'."""
    mock.post(GEN_URL, payload=samples.CREATE_GENERATION)
    mock.post(GEN_URL, payload=samples.CREATE_GENERATION)
    await prism.generations.create(prompt="p", model_name="veo-3.1")
    await prism.generations.create(
        prompt="p",
        model_name="veo-3.1",
        duration=8,
        has_audio=False,
        end_frame_key="e",
        character_reference_image_keys=["c"],
        source_video_key="v",
    )
    assert sent_json(mock, "POST", GEN_URL) == [
        {"prompt": "p", "modelName": "veo-3.1"},
        {
            "prompt": "p",
            "modelName": "veo-3.1",
            "duration": "8s",
            "hasAudio": False,
            "endFrameKey": "e",
            "characterReferenceImageKeys": ["c"],
            "sourceVideoKey": "v",
        },
    ]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"model_name": ""}, "model_name"),
        ({"count": 0}, "count"),
        ({"count": 5}, "count"),
        ({"count": 2.0}, "count"),
        ({"count": True}, "count"),
        ({"aspect_ratio": "2:1"}, "aspect_ratio"),
        ({"duration": "eight"}, "duration"),
        ({"duration": "8m"}, "duration"),
        ({"duration": 0}, "duration"),
        ({"duration": -5}, "duration"),
        ({"has_audio": "yes"}, "has_audio"),
        ({"start_frame_key": ""}, "start_frame_key"),
        ({"ingredient_image_keys": "one.png"}, "ingredient_image_keys"),
        ({"ingredient_image_keys": ["ok", ""]}, "ingredient_image_keys[1]"),
        ({"template_id": ""}, "template_id"),
    ],
)
async def test_bad_create_input_is_refused_before_sending(
    prism: PrismClient, mock: aioresponses, kwargs: dict[str, Any], field: str
) -> None:
    """Bad input raises InvalidRequestError naming the field, and nothing is sent."""
    arguments: dict[str, Any] = {"prompt": "p", "model_name": "veo-3.1", **kwargs}
    with pytest.raises(InvalidRequestError) as info:
        await prism.generations.create(**arguments)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert not mock.requests


@pytest.mark.parametrize("duration", ["5s", "10s", "8", " 8s ", 8, 10])
async def test_durations_are_normalised(
    prism: PrismClient, mock: aioresponses, duration: str | int
) -> None:
    """'8s', '8' and 8 all go out as '8s'."""
    mock.post(GEN_URL, payload=samples.CREATE_GENERATION)
    await prism.generations.create(prompt="p", model_name="m", duration=duration)
    (body,) = sent_json(mock, "POST", GEN_URL)
    assert body["duration"] == f"{str(duration).strip().rstrip('s')}s"


@pytest.mark.parametrize("ratio", ["auto", "21:9", "16:9", "4:3", "1:1", "3:4", "9:16"])
async def test_every_documented_aspect_ratio_is_accepted(
    prism: PrismClient, mock: aioresponses, ratio: str
) -> None:
    """All seven documented aspect ratios pass validation."""
    mock.post(GEN_URL, payload=samples.CREATE_GENERATION)
    await prism.generations.create(prompt="p", model_name="m", aspect_ratio=ratio)
    assert sent_json(mock, "POST", GEN_URL)[0]["aspectRatio"] == ratio


async def test_api_errors_keep_status_code_and_message(
    prism: PrismClient, mock: aioresponses
) -> None:
    """A 402 from create keeps its status, code and message."""
    mock.post(
        GEN_URL,
        status=402,
        payload={"error": "insufficient_credits", "message": "Not enough credits"},
    )
    with pytest.raises(InsufficientCreditsError) as info:
        await prism.generations.create(prompt="p", model_name="veo-3.1")
    assert info.value.status_code == 402
    assert info.value.code == "insufficient_credits"
    assert info.value.message == "Not enough credits"
    mock.post(GEN_URL, status=400, payload={"error": "pricing_error", "message": "No pricing"})
    with pytest.raises(PricingError):
        await prism.generations.create(prompt="p", model_name="nope")


async def test_get_generation(prism: PrismClient, mock: aioresponses) -> None:
    """get() parses the flat status object; a 404 is NotFoundError; an empty id never leaves."""
    mock.get(f"{GEN_URL}/gen_abc123", payload=samples.GENERATION_COMPLETED)
    generation = await prism.generations.get("gen_abc123")
    assert generation.is_completed
    assert generation.video_url == samples.GENERATION_COMPLETED["video_url"]
    assert generation.share_url == samples.GENERATION_COMPLETED["share_url"]
    mock.get(f"{GEN_URL}/gen_x", status=404, payload={"error": "not_found", "message": "no"})
    with pytest.raises(NotFoundError):
        await prism.generations.get("gen_x")
    with pytest.raises(InvalidRequestError) as info:
        await prism.generations.get("")
    assert info.value.field == "generation_id"


async def test_template_generate_sends_snake_case(prism: PrismClient, mock: aioresponses) -> None:
    """templates.generate sends variables as is, in snake_case, and parses the estimate."""
    url = f"{API}/templates/abc123/generate"
    mock.post(url, payload=samples.TEMPLATE_GENERATE)
    batch = await prism.templates.generate(
        "abc123",
        variables={
            "hook": "Check out this amazing product",
            "productImage": "https://x.test/p.jpg",
        },
        character_variables={"presenter": "2f1c8f7e"},
        webhook_url="https://example.com/webhook",
    )
    assert sent_json(mock, "POST", url) == [
        {
            "variables": {
                "hook": "Check out this amazing product",
                "productImage": "https://x.test/p.jpg",
            },
            "webhook_url": "https://example.com/webhook",
            "character_variables": {"presenter": "2f1c8f7e"},
        }
    ]
    assert batch.ids == ["gen_abc123", "gen_def456"]
    assert batch.template_id == "abc123"
    assert batch.latency_estimate is not None
    assert batch.latency_estimate.typical == 90.0


async def test_template_generate_defaults_variables_to_empty(
    prism: PrismClient, mock: aioresponses
) -> None:
    """Without variables, an empty object is sent (the server applies defaults)."""
    url = f"{API}/templates/featured-ugc-pitch/generate"
    mock.post(url, payload=samples.TEMPLATE_GENERATE)
    await prism.templates.generate("featured-ugc-pitch")
    assert sent_json(mock, "POST", url) == [{"variables": {}}]


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (("",), {}, "template_id"),
        (("abc",), {"webhook_url": "ftp://x.test/h"}, "webhook_url"),
        (("abc",), {"webhook_url": "not a url"}, "webhook_url"),
        (("abc",), {"variables": {"hook": 3}}, "variables['hook']"),
        (("abc",), {"variables": ["hook"]}, "variables"),
        (("abc",), {"character_variables": {"face": ""}}, "character_variables['face']"),
    ],
)
async def test_bad_template_input(
    prism: PrismClient,
    mock: aioresponses,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    field: str,
) -> None:
    """Bad template input is refused before sending, naming the field."""
    with pytest.raises(InvalidRequestError) as info:
        await prism.templates.generate(*args, **kwargs)
    assert info.value.field == field
    assert not mock.requests


async def test_template_errors(prism: PrismClient, mock: aioresponses) -> None:
    """422 invalid_template maps to InvalidTemplateError."""
    url = f"{API}/templates/abc/generate"
    mock.post(url, status=422, payload={"error": "invalid_template", "message": "broken"})
    with pytest.raises(InvalidTemplateError):
        await prism.templates.generate("abc", variables={})


async def test_templates_list_get_and_query(prism: PrismClient, mock: aioresponses) -> None:
    """list() passes its query; get() unwraps data; both shapes parse."""
    mock.get(
        URL(f"{API}/templates").with_query(limit="10", offset="20", q="ugc"),
        payload=samples.TEMPLATE_LIST,
    )
    page = await prism.templates.list(limit=10, offset=20, q="ugc")
    assert [template.id for template in page.data] == ["abc123", "featured-ugc-pitch"]
    mock.get(URL(f"{API}/templates").with_query(category="ugc"), payload=samples.TEMPLATE_LIST)
    await prism.templates.list(category="ugc")
    mock.get(f"{API}/templates/abc123", payload=samples.TEMPLATE_GET)
    template = await prism.templates.get("abc123")
    assert template.input_variables[0].default_value == "You need this"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"q": "a"}, "q"),
    ],
)
async def test_templates_list_bad_input(
    prism: PrismClient, mock: aioresponses, kwargs: dict[str, Any], field: str
) -> None:
    """Out-of-range paging and one-letter queries are refused before sending."""
    with pytest.raises(InvalidRequestError) as info:
        await prism.templates.list(**kwargs)
    assert info.value.field == field


async def test_templates_iter_walks_every_page(prism: PrismClient, mock: aioresponses) -> None:
    """iter() follows has_more with growing offsets; limit is the page size."""
    first = {
        "data": [{"id": "t1"}, {"id": "t2"}],
        "pagination": {"offset": 0, "limit": 2, "has_more": True},
    }
    second = {"data": [{"id": "t3"}], "pagination": {"offset": 2, "limit": 2, "has_more": False}}
    mock.get(URL(f"{API}/templates").with_query(limit="2", offset="0"), payload=first)
    mock.get(URL(f"{API}/templates").with_query(limit="2", offset="2"), payload=second)
    ids = [template.id async for template in prism.templates.iter(limit=2)]
    assert ids == ["t1", "t2", "t3"]


async def test_characters_create_with_urls_sends_json(
    prism: PrismClient, mock: aioresponses
) -> None:
    """Image URLs go as a JSON body; the 201 data wrapper is parsed with ms timestamps."""
    url = f"{API}/characters"
    mock.post(url, status=201, payload=samples.CHARACTER_CREATE)
    character = await prism.characters.create(
        name="Maya", images=["https://x.test/1.png", "https://x.test/2.png"], description="Host"
    )
    assert sent_json(mock, "POST", url) == [
        {
            "name": "Maya",
            "images": ["https://x.test/1.png", "https://x.test/2.png"],
            "description": "Host",
        }
    ]
    assert character.id == samples.CHARACTER["id"]
    assert character.created_at is not None
    assert character.created_at.year == 2026


async def test_characters_create_with_files_sends_multipart(
    prism: PrismClient, mock: aioresponses, tmp_path: Path
) -> None:
    """Local image files go as multipart form data with name and description fields."""
    url = f"{API}/characters"
    mock.post(url, status=201, payload=samples.CHARACTER_CREATE)
    first = tmp_path / "face.png"
    first.write_bytes(b"\x89PNG fake")
    second = tmp_path / "side.jpg"
    second.write_bytes(b"\xff\xd8 fake")
    await prism.characters.create(name="Maya", images=[first, str(second)])
    (call,) = calls_to(mock, "POST", url)
    form = call.kwargs["data"]
    names = [options["name"] for options, _, _ in form._fields]
    assert names == ["name", "images", "images"]
    assert "Content-Type" not in call.kwargs["headers"]  # aiohttp sets the multipart boundary


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "", "images": ["https://x.test/a.png"]}, "name"),
        ({"name": "x" * 61, "images": ["https://x.test/a.png"]}, "name"),
        ({"name": "M", "images": []}, "images"),
        ({"name": "M", "images": ["https://x.test/a.png"] * 11}, "images"),
        ({"name": "M", "images": "https://x.test/a.png"}, "images"),
        ({"name": "M", "images": ["https://x.test/a.png", "/tmp/a.png"]}, "images"),
        ({"name": "M", "images": ["/no/such/file.png"]}, "images[0]"),
        (
            {"name": "M", "images": ["https://x.test/a.png"], "description": "d" * 301},
            "description",
        ),
    ],
)
async def test_characters_bad_input(
    prism: PrismClient, mock: aioresponses, kwargs: dict[str, Any], field: str
) -> None:
    """Names, image counts, mixes of URLs and files, and missing files are refused early."""
    with pytest.raises(InvalidRequestError) as info:
        await prism.characters.create(**kwargs)
    assert info.value.field == field
    assert not mock.requests


async def test_characters_list_and_iter(prism: PrismClient, mock: aioresponses) -> None:
    """characters.list passes q/limit/offset; iter walks pages."""
    mock.get(
        URL(f"{API}/characters").with_query(q="ma", limit="60", offset="0"),
        payload=samples.CHARACTER_LIST,
    )
    page = await prism.characters.list(q="ma", limit=60, offset=0)
    assert page.data[0].name == "Maya"
    mock.get(URL(f"{API}/characters").with_query(offset="0"), payload=samples.CHARACTER_LIST)
    names = [character.name async for character in prism.characters.iter()]
    assert names == ["Maya"]
    with pytest.raises(InvalidRequestError):
        await prism.characters.list(limit=61)


async def test_assets_search_and_iter(prism: PrismClient, mock: aioresponses) -> None:
    """assets.search passes its filters; iter_search walks pages; bad filters are refused."""
    mock.get(
        URL(f"{API}/assets/search").with_query(
            q="cat", type="video", source="community", limit="5"
        ),
        payload=samples.ASSET_SEARCH,
    )
    page = await prism.assets.search("cat", type="video", source="community", limit=5)
    assert page.data[0].asset_s3_key == "assets/asset_1.mp4"
    mock.get(
        URL(f"{API}/assets/search").with_query(q="cat", offset="0"), payload=samples.ASSET_SEARCH
    )
    found = [asset.id async for asset in prism.assets.iter_search("cat")]
    assert found == ["res_1"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "gif"}, "type"),
        ({"source": "mine"}, "source"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidRequestError) as info:
            await prism.assets.search("cat", **kwargs)
        assert info.value.field == field
    with pytest.raises(InvalidRequestError) as missing:
        await prism.assets.search("c")
    assert missing.value.field == "q"
    with pytest.raises(InvalidRequestError):
        prism.assets.iter_search("")
