"""The payload shapes of the API, and the fake's seed data (models, prices, templates, assets).

One source for what a response looks like: the builders below (:func:`generation`,
:func:`queued_generations`, :func:`template_generations`, :func:`presigned_upload`,
:func:`character`, :func:`asset`, :func:`page`) give each documented body of prism-api.md its
keys, in the documented order, from the values of one case. The fake's seed data, the test
samples (``tests/samples.py``) and the benchmark servers (``benchmarks/_server.py``) are built
with them, so their shapes cannot drift apart.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

JSON = dict[str, Any]

MODEL_PRICES: dict[str, int] = {
    "veo-3.1": 120,
    "veo-3.1-fast": 60,
    "kling-2.5": 80,
    "sora-2": 150,
    "seedance-1-pro": 40,
}
"""Credits per video for each model the fake knows; any other model is a ``pricing_error``."""

TEMPLATE_PRICE = 50
"""Credits per video generated from a template."""

TEMPLATES: list[dict[str, Any]] = [
    {
        "id": "abc123",
        "title": "UGC product pitch",
        "description": "A creator holds up your product and pitches it to camera.",
        "category": "ugc",
        "duration_sec": 15,
        "input_variables": [
            {
                "key": "hook",
                "label": "Hook",
                "type": "text",
                "required": True,
                "placeholder": "Check out this amazing product",
                "description": "The opening line",
                "max_length": 120,
                "min_length": 3,
                "slot": "intro",
            },
            {
                "key": "productImage",
                "label": "Product image",
                "type": "image",
                "required": False,
                "description": "An HTTP(S) URL or the key of an uploaded image",
                "slot": "product",
            },
            {
                "key": "benefit",
                "label": "Benefit",
                "type": "text",
                "required": True,
                "default_value": "It just works",
                "max_length": 80,
            },
        ],
        "prompt_template": "{{hook}} Show {{productImage}}. Say: {{benefit}}",
    },
    {
        "id": "product-unboxing",
        "title": "Product unboxing",
        "description": "Hands unbox the product on a clean desk.",
        "category": "product",
        "duration_sec": 10,
        "input_variables": [
            {"key": "product", "label": "Product name", "type": "text", "required": True},
            {"key": "presenter", "label": "Presenter", "type": "image", "required": False},
        ],
        "prompt_template": "Unboxing {{product}} with {{presenter}}",
    },
    {
        "id": "featured-ugc-pitch",
        "title": "Featured UGC pitch",
        "description": "The featured pitch template (newer shape).",
        "kind": "video",
        "model_name": "veo-3.1",
    },
    {
        "id": "featured-still",
        "title": "Featured still",
        "description": "A product still (newer shape).",
        "kind": "image",
        "model_name": "seedance-1-pro",
    },
    {
        "id": "broken-template",
        "title": "Broken template",
        "description": "Its configuration is invalid: generating from it answers 422.",
        "category": "testing",
        "input_variables": [],
    },
]
"""Templates the fake serves. ``broken-template`` answers ``422 invalid_template``."""

INVALID_TEMPLATES = frozenset({"broken-template"})

_SUBJECTS = [
    "surfing cat",
    "city skyline at night",
    "coffee pour in slow motion",
    "sneaker product shot",
    "mountain sunrise timelapse",
    "dog running on a beach",
]


def seed_assets() -> list[dict[str, Any]]:
    """Community assets, 4 per subject, alternating images and videos."""
    assets: list[dict[str, Any]] = []
    base_ms = 1_772_000_000_000
    for subject_index, subject in enumerate(_SUBJECTS):
        for n in range(4):
            number = subject_index * 4 + n
            kind = "video" if n % 2 == 0 else "image"
            extension = "mp4" if kind == "video" else "png"
            key = f"community/assets/asset_{number:03d}.{extension}"
            assets.append(
                asset(
                    f"res_{number:03d}",
                    asset_id=f"asset_{number:03d}",
                    s3_key=key,
                    url=f"https://cdn.prismvideos.test/{key}",
                    kind=kind,
                    prompt=f"A {subject}, take {n + 1}",
                    model_name="veo-3.1" if kind == "video" else "seedance-1-pro",
                    published_at=base_ms + number * 60_000,
                    created_at=base_ms + number * 60_000 - 3_600_000,
                    metadata={"width": 1080, "height": 1920},
                    source="community",
                )
            )
    return assets


def template(template_id: str) -> JSON:
    """A deep copy of the seed template ``template_id`` (a ``GET /api/templates/{id}`` body)."""
    for seed in TEMPLATES:
        if seed["id"] == template_id:
            return copy.deepcopy(seed)
    raise KeyError(template_id)


# -- the payload shapes ------------------------------------------------------------------------


def generation(
    generation_id: str,
    status: str,
    *,
    created_at: str,
    template_id: str | None = None,
    video_url: str | None = None,
    share_url: str | None = None,
    completed_at: str | None = None,
    error: str | None = None,
) -> JSON:
    """``GET /api/generations/{id}``: one generation (ISO 8601 times, ``null`` until known)."""
    return {
        "id": generation_id,
        "status": status,
        "template_id": template_id,
        "video_url": video_url,
        "share_url": share_url,
        "created_at": created_at,
        "completed_at": completed_at,
        "error": error,
    }


def queued_generations(
    ids: Sequence[str],
    *,
    model: str,
    credits_charged: int,
    variant: str = "text-to-video",
    endpoint_id: str | None = None,
) -> JSON:
    """``POST /api/generations``: the ``data``-wrapped batch, every generation ``queued``.

    Each ``gen_<x>`` has the asset ``asset_<x>`` and the request ``fal_request_<x>``; the
    endpoint is ``fal-ai/<model>`` unless ``endpoint_id`` says otherwise.
    """
    return {
        "data": {
            "generations": [
                {
                    "id": generation_id,
                    "asset_id": f"asset_{generation_id.removeprefix('gen_')}",
                    "request_id": f"fal_request_{generation_id.removeprefix('gen_')}",
                    "status": "queued",
                }
                for generation_id in ids
            ],
            "endpoint_id": f"fal-ai/{model}" if endpoint_id is None else endpoint_id,
            "variant": variant,
            "metadata": {
                "model_name": model,
                "selected_model_name": model,
                "credits_charged": credits_charged,
                "num_generations": len(ids),
            },
        }
    }


def template_generations(
    ids: Sequence[str],
    *,
    template_id: str,
    typical: float,
    busy: float | None = None,
    credits_charged: int = TEMPLATE_PRICE,
) -> JSON:
    """``POST /api/templates/{id}/generate``: the generations started, each ``generating``.

    ``busy`` (the latency estimate under load) is twice ``typical`` unless given.
    """
    return {
        "generations": [
            {"generation_id": generation_id, "status": "generating"} for generation_id in ids
        ],
        "template_id": template_id,
        "credits_charged": credits_charged,
        "latency_estimate_sec": {"typical": typical, "busy": typical * 2 if busy is None else busy},
    }


def presigned_upload(s3_key: str, upload_url: str, content_type: str, max_bytes: int) -> JSON:
    """``POST /api/s3/presign-upload``: where to PUT the file, and the key to use it by."""
    return {
        "s3_key": s3_key,
        "upload_url": upload_url,
        "content_type": content_type,
        "max_bytes": max_bytes,
    }


def character(character_id: str, name: str, description: str | None, created_at: int) -> JSON:
    """One character (``POST /api/characters`` wraps it in ``data``); ``created_at`` in ms."""
    return {
        "id": character_id,
        "name": name,
        "description": description,
        "created_at": created_at,
    }


def asset(
    asset_record_id: str,
    *,
    asset_id: str,
    s3_key: str,
    url: str | None,
    kind: str,
    prompt: str | None,
    model_name: str | None,
    published_at: int | None,
    created_at: int,
    metadata: dict[str, Any],
    source: str,
) -> JSON:
    """One ``GET /api/assets/search`` result (``kind``: ``video``/``image``; times in ms)."""
    return {
        "id": asset_record_id,
        "asset_id": asset_id,
        "asset_s3_key": s3_key,
        "asset_url": url,
        "asset_type": kind,
        "prompt": prompt,
        "model_name": model_name,
        "published_at": published_at,
        "created_at": created_at,
        "metadata": metadata,
        "source": source,
    }


def page(items: list[Any], *, limit: int, offset: int = 0, has_more: bool = False) -> JSON:
    """One page of a listing (templates, characters, assets): ``data`` and ``pagination``."""
    return {
        "data": items,
        "pagination": {"offset": offset, "limit": limit, "has_more": has_more},
    }
