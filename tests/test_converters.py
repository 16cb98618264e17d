"""The cattrs converter: documented samples, timestamps, leniency, and request bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import cattrs
import pytest
from cattrs.gen import make_dict_structure_fn

from prism_async import (
    Asset,
    Character,
    Generation,
    GenerationBatch,
    Page,
    PresignedUpload,
    ResponseValidationError,
    Template,
    TemplateGenerationBatch,
    to_dict,
)
from prism_async._converters import (
    converter,
    make_converter,
    structure,
    structure_data,
    unstructure,
)
from prism_async.models.requests import (
    GenerationRequest,
    PresignUploadRequest,
    TemplateRequest,
)
from tests import samples

STRICT = make_converter(forbid_extra_keys=True)


@pytest.mark.parametrize(
    ("payload", "cls", "wrapped"),
    [
        (samples.CREATE_GENERATION, GenerationBatch, True),
        (samples.GENERATION_COMPLETED, Generation, False),
        (samples.GENERATION_FAILED, Generation, False),
        (samples.GENERATION_RUNNING, Generation, False),
        (samples.TEMPLATE_GENERATE, TemplateGenerationBatch, False),
        (samples.TEMPLATE_LIST, Page[Template], False),
        (samples.TEMPLATE_GET, Template, True),
        (samples.PRESIGN, PresignedUpload, False),
        (samples.CHARACTER_CREATE, Character, True),
        (samples.CHARACTER_LIST, Page[Character], False),
        (samples.ASSET_SEARCH, Page[Asset], False),
    ],
)
def test_strict_converter_accepts_every_documented_sample(
    payload: dict[str, Any], cls: Any, wrapped: bool
) -> None:
    """Every documented field has a home in the models: a strict converter finds no extra key."""
    if wrapped:
        assert structure_data(payload, cls, conv=STRICT) is not None
    else:
        assert structure(payload, cls, conv=STRICT) is not None


def test_create_generation_response_fields() -> None:
    """The wrapped create response becomes a GenerationBatch with ids and metadata."""
    batch = structure_data(samples.CREATE_GENERATION, GenerationBatch)
    assert batch.ids == ["gen_abc123"]
    assert batch.generations[0].asset_id == "asset_abc123"
    assert batch.endpoint_id == "fal-ai/veo3"
    assert batch.metadata.credits_charged == 120
    assert batch.metadata.num_generations == 1
    assert batch.metadata.raw["selected_model_name"] == "veo-3.1"


def test_metadata_keeps_unknown_keys_and_nulls_are_accepted() -> None:
    """metadata is an open object; nullable documented fields may be null."""
    payload = {
        "data": {
            "generations": [{"id": "g1", "asset_id": None, "request_id": None, "status": None}],
            "endpoint_id": None,
            "variant": None,
            "metadata": {"model_name": "m", "discount": 0.2, "tier": "pro"},
        }
    }
    batch = structure_data(payload, GenerationBatch)
    assert batch.metadata.raw == {"model_name": "m", "discount": 0.2, "tier": "pro"}
    assert batch.generations[0].status is None


def test_timestamps_are_timezone_aware_from_iso_and_milliseconds() -> None:
    """ISO strings (Z, offsets, naive) and Unix milliseconds all become aware datetimes."""
    generation = structure(samples.GENERATION_COMPLETED, Generation)
    assert generation.created_at == datetime(2026, 2, 26, 12, 0, tzinfo=UTC)
    assert generation.completed_at == datetime(2026, 2, 26, 12, 1, 30, tzinfo=UTC)
    character = structure(samples.CHARACTER, Character)
    assert character.created_at == datetime(2026, 2, 26, 12, 0, tzinfo=UTC)
    offset = structure(
        {"id": "g", "status": "x", "created_at": "2026-02-26T14:00:00+02:00"}, Generation
    )
    assert offset.created_at == datetime(2026, 2, 26, 12, 0, tzinfo=UTC)
    assert offset.created_at.utcoffset() == timedelta(hours=2)
    naive = structure({"id": "g", "status": "x", "created_at": "2026-02-26T12:00:00"}, Generation)
    assert naive.created_at is not None
    assert naive.created_at.tzinfo is not None
    as_string_ms = structure({"id": "c", "created_at": "1772107200000"}, Character)
    assert as_string_ms.created_at == datetime(2026, 2, 26, 12, 0, tzinfo=UTC)


def test_unknown_keys_are_ignored_and_unknown_status_kept() -> None:
    """A newer server adding fields or statuses never breaks parsing."""
    payload = {**samples.GENERATION_RUNNING, "status": "upscaling", "progress": 0.4, "new": {}}
    generation = structure(payload, Generation)
    assert generation.status == "upscaling"
    assert not generation.is_done


def test_status_helpers() -> None:
    """is_done / is_completed / is_failed follow the terminal statuses."""
    completed = structure(samples.GENERATION_COMPLETED, Generation)
    failed = structure(samples.GENERATION_FAILED, Generation)
    running = structure(samples.GENERATION_RUNNING, Generation)
    assert (completed.is_done, completed.is_completed, completed.is_failed) == (True, True, False)
    assert (failed.is_done, failed.is_completed, failed.is_failed) == (True, False, True)
    assert (running.is_done, running.is_completed, running.is_failed) == (False, False, False)


def test_template_both_shapes_and_latency_estimate() -> None:
    """Both documented template shapes parse; latency_estimate_sec maps to latency_estimate."""
    page = structure(samples.TEMPLATE_LIST, Page[Template])
    old, new = page.data
    assert old.input_variables[0].key == "hook"
    assert old.input_variables[0].required is True
    assert old.input_variables[1].required is False
    assert old.duration_sec == 15
    assert new.kind == "video"
    assert new.model_name == "veo-3.1"
    assert new.input_variables == []
    assert page.pagination.has_more is False
    batch = structure(samples.TEMPLATE_GENERATE, TemplateGenerationBatch)
    assert batch.ids == ["gen_abc123", "gen_def456"]
    assert batch.latency_estimate is not None
    assert (batch.latency_estimate.typical, batch.latency_estimate.busy) == (90.0, 240.0)
    without = structure(
        {**samples.TEMPLATE_GENERATE, "latency_estimate_sec": None}, TemplateGenerationBatch
    )
    assert without.latency_estimate is None


def test_asset_fields() -> None:
    """Assets keep their key, ms timestamps and free-form metadata."""
    asset = structure(samples.ASSET_SEARCH, Page[Asset]).data[0]
    assert asset.asset_s3_key == "assets/asset_1.mp4"
    assert asset.published_at == datetime(2026, 2, 26, 12, 0, tzinfo=UTC)
    assert asset.metadata == {"width": 1080, "height": 1920}


@pytest.mark.parametrize(
    ("payload", "cls"),
    [
        ({"status": "completed"}, Generation),
        ({"id": "g", "status": "x", "created_at": "yesterday"}, Generation),
        ([1, 2, 3], Generation),
        ({"generations": "nope"}, GenerationBatch),
        ({"s3_key": "k"}, PresignedUpload),
        ({"data": [], "pagination": {"has_more": "maybe"}}, Page[Template]),
    ],
)
def test_bodies_that_do_not_fit_raise_response_validation_error(payload: Any, cls: Any) -> None:
    """A 2xx body of the wrong shape raises ResponseValidationError carrying the body."""
    with pytest.raises(ResponseValidationError) as info:
        structure(payload, cls)
    assert info.value.body == payload


def test_missing_data_envelope() -> None:
    """A wrapped endpoint answering without 'data' is a ResponseValidationError."""
    with pytest.raises(ResponseValidationError):
        structure_data(samples.GENERATION_COMPLETED, GenerationBatch)


def test_request_bodies_camel_case_and_unset_fields_left_out() -> None:
    """Generation and presign bodies are camelCase; template bodies snake_case; None is omitted."""
    body = unstructure(
        GenerationRequest(
            prompt="p",
            model_name="veo-3.1",
            aspect_ratio="9:16",
            has_audio=False,
            ingredient_image_keys=["a", "b"],
            character_reference_image_keys=["c"],
            start_frame_key="s",
            key="never-sent",
        )
    )
    assert body == {
        "prompt": "p",
        "modelName": "veo-3.1",
        "aspectRatio": "9:16",
        "hasAudio": False,
        "ingredientImageKeys": ["a", "b"],
        "characterReferenceImageKeys": ["c"],
        "startFrameKey": "s",
    }
    presign = unstructure(PresignUploadRequest(kind="upload", content_type="image/png"))
    assert presign == {"kind": "upload", "contentType": "image/png"}
    template = unstructure(
        TemplateRequest(
            "tpl_1",
            variables={},
            webhook_url="https://x.test/h",
            character_variables={"face": "c1"},
            key="never-sent",
        )
    )
    assert template == {
        "variables": {},
        "webhook_url": "https://x.test/h",
        "character_variables": {"face": "c1"},
    }


def test_to_dict_gives_plain_json_ready_values() -> None:
    """to_dict: plain dicts and lists, datetimes as ISO 8601 strings, for one model or many."""
    generation = Generation(
        id="gen_abc123",
        status="completed",
        video_url="https://storage.prism.test/v.mp4",
        created_at=datetime(2026, 2, 26, 12, 0, tzinfo=UTC),
        completed_at=datetime(2026, 2, 26, 13, 1, 30, 250000, tzinfo=timezone(timedelta(hours=1))),
    )
    expected = {
        "id": "gen_abc123",
        "status": "completed",
        "template_id": None,
        "video_url": "https://storage.prism.test/v.mp4",
        "share_url": None,
        "created_at": "2026-02-26T12:00:00+00:00",
        "completed_at": "2026-02-26T13:01:30.250000+01:00",
        "error": None,
    }
    assert to_dict(generation) == expected
    assert to_dict([generation, generation]) == [expected, expected]
    assert json.loads(json.dumps(to_dict(generation))) == expected
    batch = structure(samples.CREATE_GENERATION["data"], GenerationBatch)
    assert to_dict(batch)["generations"][0] == {
        "id": "gen_abc123",
        "asset_id": "asset_abc123",
        "request_id": "fal_request_abc123",
        "status": "queued",
    }
    assert to_dict(batch)["metadata"]["credits_charged"] == 120


FAST_PATH_CASES: list[tuple[type, dict[str, Any]]] = [
    (Generation, samples.GENERATION_COMPLETED),
    (Generation, samples.GENERATION_FAILED),
    (Generation, {"id": 7, "status": "queued", "error": 12, "created_at": 1772107200000}),
    (Generation, {"id": "g", "status": "queued", "video_url": None, "extra": [1]}),
    (PresignedUpload, samples.PRESIGN),
    (Character, samples.CHARACTER_CREATE["data"]),
    (Asset, samples.ASSET_SEARCH["data"][0]),
]


@pytest.mark.parametrize(("cls", "payload"), FAST_PATH_CASES)
def test_fast_path_gives_what_cattrs_gives(cls: type, payload: dict[str, Any]) -> None:
    """Flat models use a lean structure function; its results are cattrs' results."""
    fast = converter.get_structure_hook(cls)
    assert fast.__code__.co_filename.startswith("<prism_async structure")
    assert fast(payload, cls) == make_dict_structure_fn(cls, converter)(payload, cls)


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "completed"},
        {"id": None, "status": "queued"},
        {"id": "g", "status": "queued", "video_url": {"no": 1}},
        {"id": "g", "status": "queued", "completed_at": "not a time"},
        "gen_1",
        [("id", "g")],
    ],
)
def test_fast_path_failures_keep_cattrs_messages(payload: Any) -> None:
    """A body the fast path cannot take raises the same detailed error as cattrs would."""
    with pytest.raises(cattrs.BaseValidationError) as slow:
        make_dict_structure_fn(Generation, converter)(payload, Generation)
    with pytest.raises(cattrs.BaseValidationError) as fast:
        converter.get_structure_hook(Generation)(payload, Generation)
    assert cattrs.transform_error(fast.value) == cattrs.transform_error(slow.value)
    with pytest.raises(ResponseValidationError, match="Generation"):
        structure(payload, Generation)
