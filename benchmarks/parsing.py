"""Model parsing: structuring the create and status responses with the converter vs json.loads."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from prism_async import Generation, GenerationBatch
from prism_async._converters import structure, structure_data

CREATE = json.dumps(
    {
        "data": {
            "generations": [
                {
                    "id": f"gen_{n}",
                    "asset_id": f"asset_{n}",
                    "request_id": f"r_{n}",
                    "status": "queued",
                }
                for n in range(4)
            ],
            "endpoint_id": "fal-ai/veo3",
            "variant": "text-to-video",
            "metadata": {
                "model_name": "veo-3.1",
                "selected_model_name": "veo-3.1",
                "credits_charged": 480,
                "num_generations": 4,
            },
        }
    }
).encode()
STATUS = json.dumps(
    {
        "id": "gen_abc123",
        "status": "completed",
        "template_id": None,
        "video_url": "https://storage.example/v.mp4?X-Amz-Signature=abc",
        "share_url": "https://www.prismvideos.com/share/gen_abc123",
        "created_at": "2026-02-26T12:00:00.000Z",
        "completed_at": "2026-02-26T12:01:30.000Z",
        "error": None,
    }
).encode()


def _rate(function: Any, body: bytes, loops: int) -> float:
    started = time.perf_counter()
    for _ in range(loops):
        function(body)
    return loops / (time.perf_counter() - started)


def run(quick: bool = False, *, size: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Parses per second, medians of alternating rounds (``size``: loops, rounds)."""
    loops, rounds = size or ((5_000, 3) if quick else (50_000, 7))
    rows = []
    cases = [
        ("create response", CREATE, lambda b: structure_data(json.loads(b), GenerationBatch)),
        ("status response", STATUS, lambda b: structure(json.loads(b), Generation)),
    ]
    for name, body, parse in cases:
        samples: dict[str, list[float]] = {"json.loads + cattrs": [], "json.loads alone": []}
        for _ in range(rounds):
            samples["json.loads + cattrs"].append(_rate(parse, body, loops))
            samples["json.loads alone"].append(_rate(json.loads, body, loops))
        medians = {k: statistics.median(v) for k, v in samples.items()}
        rows.append(
            {
                "case": f"parse {name}",
                "per_second_median": {k: round(v) for k, v in medians.items()},
                "ratio": round(medians["json.loads + cattrs"] / medians["json.loads alone"], 3),
                "microseconds_per_parse": round(1e6 / medians["json.loads + cattrs"], 2),
            }
        )
    return rows
