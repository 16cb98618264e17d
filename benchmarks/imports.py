"""Import time of prism_async vs aiohttp alone, each in fresh interpreters, alternating."""

from __future__ import annotations

import statistics
import subprocess
import sys
from typing import Any

PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def _once(module: str) -> float:
    output = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(output.strip())


def run(quick: bool = False, *, rounds: int | None = None) -> dict[str, Any]:
    """Median import seconds of each module over alternating fresh interpreters."""
    rounds = rounds or (5 if quick else 15)
    samples: dict[str, list[float]] = {"prism_async": [], "aiohttp": []}
    for round_number in range(rounds):
        order = ["prism_async", "aiohttp"][:: 1 if round_number % 2 == 0 else -1]
        for module in order:
            samples[module].append(_once(module))
    medians = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "case": "import time",
        "seconds_median": {k: round(v, 4) for k, v in medians.items()},
        "ratio_vs_aiohttp": round(medians["prism_async"] / medians["aiohttp"], 3),
    }
