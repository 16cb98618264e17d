"""The README's Quick start, run verbatim as a new user would: against a fake API in another
thread, with only ``PRISM_API_KEY`` and ``PRISM_BASE_URL`` set, it ends with files on disk."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.test_cli import ThreadedFake

ROOT = Path(__file__).resolve().parent.parent


def python_block(section: str) -> str:
    """The first ```python block under a README heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{section}\n")
    match = re.search(r"```python\n(.*?)```", text[start:], re.DOTALL)
    assert match is not None, f"no python block under {section}"
    return match.group(1)


def run_block(section: str, folder: Path, fake: ThreadedFake) -> subprocess.CompletedProcess[str]:
    """The first python block under ``section``, run as a script in ``folder`` with only
    ``PRISM_API_KEY`` and ``PRISM_BASE_URL`` (the fake's) set, as a new user would."""
    (folder / "example.py").write_text(python_block(section), encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    environment |= {"PRISM_API_KEY": fake.server.api_key, "PRISM_BASE_URL": fake.server.base_url}
    return subprocess.run(
        [sys.executable, "example.py"],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_quick_start_ends_with_downloaded_videos(tmp_path: Path) -> None:
    with ThreadedFake(generation_seconds=0.2) as fake:
        done = run_block("## Quick start", tmp_path, fake)
        video = fake.server.video
    assert done.returncode == 0, done.stderr
    files = sorted(tmp_path.glob("gen_*.mp4"))
    assert len(files) == 2
    assert all(file.read_bytes() == video for file in files)
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["queued", "saved", "saved"]
