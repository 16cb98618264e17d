"""Recorded response samples of every endpoint, as documented in prism-api.md.

The shapes come from :mod:`prism_async.testing._data`, the builders the fake and the benchmarks
use too; only the values of one documented case are here. Where a test relies on a value that
the fake's seed data has otherwise, the override says so.
"""

from __future__ import annotations

from typing import Any

from prism_async.testing import _data

CREATED_AT = "2026-02-26T12:00:00.000Z"
CREATED_AT_MS = 1772107200000
"""2026-02-26 12:00 UTC, the moment the samples were recorded (ISO, and in milliseconds)."""

CREATE_GENERATION: dict[str, Any] = _data.queued_generations(
    ["gen_abc123"],
    model="veo-3.1",
    credits_charged=_data.MODEL_PRICES["veo-3.1"],
    endpoint_id="fal-ai/veo3",  # the fake says fal-ai/<model>; test_converters asserts this one
)

GENERATION_COMPLETED: dict[str, Any] = _data.generation(
    "gen_abc123",
    "completed",
    video_url="https://storage.prism.test/videos/gen_abc123.mp4?X-Amz-Signature=abc",
    share_url="https://www.prismvideos.com/share/gen_abc123",
    created_at=CREATED_AT,
    completed_at="2026-02-26T12:01:30.000Z",
)

GENERATION_FAILED: dict[str, Any] = _data.generation(
    "gen_fail1",
    "failed",
    template_id="abc123",
    created_at=CREATED_AT,
    error="Generation timed out",
)

GENERATION_RUNNING: dict[str, Any] = _data.generation(
    "gen_run1", "generating", created_at=CREATED_AT
)

TEMPLATE_GENERATE: dict[str, Any] = _data.template_generations(
    ["gen_abc123", "gen_def456"],
    template_id="abc123",
    typical=90,
    busy=240,  # the fake says twice typical; test_converters asserts (90, 240)
)

TEMPLATE_OLD: dict[str, Any] = _data.template("abc123")
"""The older template shape (``input_variables``, ``prompt_template``): the fake's ``abc123``."""
TEMPLATE_OLD["input_variables"][0]["default_value"] = "You need this"  # test_resources reads it

TEMPLATE_NEW: dict[str, Any] = _data.template("featured-ugc-pitch")
"""The newer template shape (``kind``, ``model_name``): the fake's ``featured-ugc-pitch``."""

TEMPLATE_LIST: dict[str, Any] = _data.page([TEMPLATE_OLD, TEMPLATE_NEW], limit=50)

TEMPLATE_GET: dict[str, Any] = {"data": TEMPLATE_OLD}

PRESIGN: dict[str, Any] = _data.presigned_upload(
    "users/user_abc/user-uploads/batch_abc/file_abc.png",
    "https://storage.prism.test/upload/file_abc.png?X-Amz-Signature=sig",
    "image/png",
    20971520,
)

CHARACTER: dict[str, Any] = _data.character(
    "2f1c8f7e-8c1a-4d5e-9f3b-1a2b3c4d5e6f", "Maya", "Friendly presenter", CREATED_AT_MS
)

CHARACTER_CREATE: dict[str, Any] = {"data": CHARACTER}

CHARACTER_LIST: dict[str, Any] = _data.page([CHARACTER], limit=24)

ASSET: dict[str, Any] = _data.asset(
    "res_1",
    asset_id="asset_1",
    s3_key="assets/asset_1.mp4",
    url="https://cdn.prism.test/asset_1.mp4",
    kind="video",
    prompt="A cat surfing",
    model_name="veo-3.1",
    published_at=CREATED_AT_MS,
    created_at=1772100000000,
    metadata={"width": 1080, "height": 1920},
    source="community",
)

ASSET_SEARCH: dict[str, Any] = _data.page([ASSET], limit=24)
