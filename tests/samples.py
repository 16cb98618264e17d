"""Recorded response samples of every endpoint, as documented in prism-api.md."""

from __future__ import annotations

from typing import Any

CREATE_GENERATION: dict[str, Any] = {
    "data": {
        "generations": [
            {
                "id": "gen_abc123",
                "asset_id": "asset_abc123",
                "request_id": "fal_request_abc123",
                "status": "queued",
            }
        ],
        "endpoint_id": "fal-ai/veo3",
        "variant": "text-to-video",
        "metadata": {
            "model_name": "veo-3.1",
            "selected_model_name": "veo-3.1",
            "credits_charged": 120,
            "num_generations": 1,
        },
    }
}

GENERATION_COMPLETED: dict[str, Any] = {
    "id": "gen_abc123",
    "status": "completed",
    "template_id": None,
    "video_url": "https://storage.prism.test/videos/gen_abc123.mp4?X-Amz-Signature=abc",
    "share_url": "https://www.prismvideos.com/share/gen_abc123",
    "created_at": "2026-02-26T12:00:00.000Z",
    "completed_at": "2026-02-26T12:01:30.000Z",
    "error": None,
}

GENERATION_FAILED: dict[str, Any] = {
    "id": "gen_fail1",
    "status": "failed",
    "template_id": "abc123",
    "video_url": None,
    "share_url": None,
    "created_at": "2026-02-26T12:00:00.000Z",
    "completed_at": None,
    "error": "Generation timed out",
}

GENERATION_RUNNING: dict[str, Any] = {
    "id": "gen_run1",
    "status": "generating",
    "template_id": None,
    "video_url": None,
    "share_url": None,
    "created_at": "2026-02-26T12:00:00.000Z",
    "completed_at": None,
    "error": None,
}

TEMPLATE_GENERATE: dict[str, Any] = {
    "generations": [
        {"generation_id": "gen_abc123", "status": "generating"},
        {"generation_id": "gen_def456", "status": "generating"},
    ],
    "template_id": "abc123",
    "credits_charged": 50,
    "latency_estimate_sec": {"typical": 90, "busy": 240},
}

TEMPLATE_OLD: dict[str, Any] = {
    "id": "abc123",
    "title": "UGC product pitch",
    "description": "A creator pitches your product",
    "category": "ugc",
    "duration_sec": 15,
    "input_variables": [
        {
            "key": "hook",
            "label": "Hook",
            "type": "text",
            "required": True,
            "placeholder": "Check this out",
            "description": "Opening line",
            "default_value": "You need this",
            "max_length": 120,
            "min_length": 3,
            "slot": "intro",
        },
        {"key": "productImage", "label": "Product image", "type": "image", "required": False},
    ],
    "prompt_template": "{{hook}} with {{productImage}}",
}

TEMPLATE_NEW: dict[str, Any] = {
    "id": "featured-ugc-pitch",
    "title": "Featured pitch",
    "description": "Newer template shape",
    "kind": "video",
    "model_name": "veo-3.1",
}

TEMPLATE_LIST: dict[str, Any] = {
    "data": [TEMPLATE_OLD, TEMPLATE_NEW],
    "pagination": {"offset": 0, "limit": 50, "has_more": False},
}

TEMPLATE_GET: dict[str, Any] = {"data": TEMPLATE_OLD}

PRESIGN: dict[str, Any] = {
    "s3_key": "users/user_abc/user-uploads/batch_abc/file_abc.png",
    "upload_url": "https://storage.prism.test/upload/file_abc.png?X-Amz-Signature=sig",
    "content_type": "image/png",
    "max_bytes": 20971520,
}

CHARACTER: dict[str, Any] = {
    "id": "2f1c8f7e-8c1a-4d5e-9f3b-1a2b3c4d5e6f",
    "name": "Maya",
    "description": "Friendly presenter",
    "created_at": 1772107200000,
}

CHARACTER_CREATE: dict[str, Any] = {"data": CHARACTER}

CHARACTER_LIST: dict[str, Any] = {
    "data": [CHARACTER],
    "pagination": {"offset": 0, "limit": 24, "has_more": False},
}

ASSET: dict[str, Any] = {
    "id": "res_1",
    "asset_id": "asset_1",
    "asset_s3_key": "assets/asset_1.mp4",
    "asset_url": "https://cdn.prism.test/asset_1.mp4",
    "asset_type": "video",
    "prompt": "A cat surfing",
    "model_name": "veo-3.1",
    "published_at": 1772107200000,
    "created_at": 1772100000000,
    "metadata": {"width": 1080, "height": 1920},
    "source": "community",
}

ASSET_SEARCH: dict[str, Any] = {
    "data": [ASSET],
    "pagination": {"offset": 0, "limit": 24, "has_more": False},
}
