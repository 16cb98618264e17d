"""The README's "Spend control" example, run verbatim against a fake API in another thread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import ThreadedFake
from tests.test_readme import python_block

pytestmark = pytest.mark.processes


def test_the_spend_control_example_stops_at_the_budget(tmp_path: Path) -> None:
    (tmp_path / "spend.py").write_text(python_block("## Spend control"), encoding="utf-8")
    with ThreadedFake(generation_seconds=0.2) as fake:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
        environment |= {
            "PRISM_API_KEY": fake.server.api_key,
            "PRISM_BASE_URL": fake.server.base_url,
        }
        done = subprocess.run(
            [sys.executable, "spend.py"],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        charged = 10_000 - fake.server.credits
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "quote: Quote(credits=None, basis='unknown', samples=0)",
        "refused: 120.0 credits needed, 480.0 spent",
        "quote: Quote(credits=120.0, basis='seen', samples=4)",
        "campaign=spring 480.0 4",
        "team=ads 480.0 4",
    ]
    assert charged == 480
