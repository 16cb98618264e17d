"""Seed data of the fake: models and prices, templates in both documented shapes, assets."""

from __future__ import annotations

from typing import Any

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
                {
                    "id": f"res_{number:03d}",
                    "asset_id": f"asset_{number:03d}",
                    "asset_s3_key": key,
                    "asset_url": f"https://cdn.prismvideos.test/{key}",
                    "asset_type": kind,
                    "prompt": f"A {subject}, take {n + 1}",
                    "model_name": "veo-3.1" if kind == "video" else "seedance-1-pro",
                    "published_at": base_ms + number * 60_000,
                    "created_at": base_ms + number * 60_000 - 3_600_000,
                    "metadata": {"width": 1080, "height": 1920},
                    "source": "community",
                }
            )
    return assets
