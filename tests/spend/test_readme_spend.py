"""The README's "Spend control" example, run verbatim against a fake API in another thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import ThreadedFake
from tests.test_readme import run_block

pytestmark = pytest.mark.processes


def test_the_spend_control_example_stops_at_the_budget(tmp_path: Path) -> None:
    with ThreadedFake(generation_seconds=0.2) as fake:
        done = run_block("## Spend control", tmp_path, fake)
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
