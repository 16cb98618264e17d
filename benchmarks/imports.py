"""Import time of prism_async vs aiohttp alone, each in fresh interpreters, alternating.

Both are imported from compiled bytecode, as after ``pip install`` (which compiles the
modules): the interpreters share a fresh ``PYTHONPYCACHEPREFIX`` that a warm-up import of each
fills, whatever the environment says (an editable install under ``PYTHONDONTWRITEBYTECODE``
would otherwise compile prism_async from source on every import, and not aiohttp).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
MODULES = ("prism_async", "aiohttp")


def _once(module: str, env: dict[str, str]) -> float:
    output = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return float(output.strip())


def run(quick: bool = False, *, rounds: int | None = None) -> dict[str, Any]:
    """Median import seconds of each module over alternating fresh interpreters."""
    rounds = rounds or (5 if quick else 15)
    samples: dict[str, list[float]] = {module: [] for module in MODULES}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPYCACHEPREFIX": cache}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for module in MODULES:  # warm-up: compiles both into the cache
            _once(module, env)
        for round_number in range(rounds):
            order = MODULES[:: 1 if round_number % 2 == 0 else -1]
            for module in order:
                samples[module].append(_once(module, env))
    medians = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "case": "import time",
        "seconds_median": {k: round(v, 4) for k, v in medians.items()},
        "ratio_vs_aiohttp": round(medians["prism_async"] / medians["aiohttp"], 3),
        "target": "<= 1.2",
        "met": medians["prism_async"] / medians["aiohttp"] <= 1.2,
    }
