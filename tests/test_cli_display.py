"""The command line's live display, drawn on a recording rich console."""

from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from prism_async import Generation, PollPolicy, PrismClient
from prism_async.cli import EXIT_FAILED
from prism_async.cli._context import Context
from prism_async.cli._ui import UI
from prism_async.testing import FakePrismServer

TITLE = "Waiting for videos"


def recording_console() -> Console:
    return Console(record=True, force_terminal=True, width=200, file=io.StringIO())


def row(table: str, generation_id: str) -> str:
    """The one row of a rendered table that shows ``generation_id``."""
    (line,) = [line for line in table.splitlines() if generation_id in line and "│" in line]
    return line


def tables(text: str, title: str) -> list[str]:
    """Every rendering of the table titled ``title``, from its title to its bottom border."""
    return [part.split("└")[0] for part in text.split(title)[1:]]


async def until_drawn(console: Console, text: str) -> None:
    """Wait for the live display's refresh thread to draw ``text``."""
    for _ in range(100):
        if text in console.export_text(clear=False):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} was never drawn:\n{console.export_text(clear=False)}")


async def test_live_table_shows_ids_statuses_and_final_statuses() -> None:
    """Each id gets a row; a status change is redrawn; the last frame shows how each ended."""
    console = recording_console()
    ui = UI(json_mode=False, console=console)
    async with ui.waiting(["gen_aaa", "gen_bbb"]) as on_update:
        await until_drawn(console, "gen_bbb")
        first = tables(console.export_text(clear=False), TITLE)[0]
        assert "waiting" in row(first, "gen_aaa")
        assert "waiting" in row(first, "gen_bbb")
        on_update(Generation(id="gen_aaa", status="generating"))
        await until_drawn(console, "generating")
        on_update(Generation(id="gen_aaa", status="completed"))
        on_update(Generation(id="gen_bbb", status="failed", error="nsfw"))
    frames = tables(console.export_text(), TITLE)
    assert any("generating" in row(frame, "gen_aaa") for frame in frames[:-1])
    last = frames[-1]
    assert "completed" in row(last, "gen_aaa")
    assert "✔" in row(last, "gen_aaa")
    assert "failed" in row(last, "gen_bbb")
    assert "✘" in row(last, "gen_bbb")
    assert "waiting" not in last
    assert "generating" not in last


def test_transfer_progress_shows_the_label_and_bytes() -> None:
    """A progress bar names the file and counts bytes done out of the total."""
    console = recording_console()
    ui = UI(json_mode=False, console=console)
    with ui.transfer("upload clip.mp4", 300_000) as progress:
        progress(150_000, 300_000)
        progress(300_000, 300_000)
    text = console.export_text()
    assert "upload clip.mp4" in text
    assert "300.0/300.0 kB" in text


def test_json_mode_draws_nothing() -> None:
    """--json ignores the console: no table, no progress, only JSON lines on the stream."""
    console = recording_console()
    stream = io.StringIO()
    ui = UI(json_mode=True, stream=stream, console=console)
    with ui.transfer("upload clip.mp4", 10) as progress:
        progress(10, 10)
    ui.table("Generations", ["id"], [["gen_aaa"]])
    ui.emit({"id": "gen_aaa"})
    assert console.export_text() == ""
    assert stream.getvalue() == '{"id": "gen_aaa"}\n'


@pytest.fixture
async def fake() -> AsyncIterator[FakePrismServer]:
    async with FakePrismServer(generation_seconds=0.3, video_bytes=200_000) as server:
        yield server


@pytest.fixture
async def prism(fake: FakePrismServer) -> AsyncIterator[PrismClient]:
    fast = PollPolicy(initial_delay=0.05, interval=0.1, max_interval=0.2)
    async with PrismClient(fake.api_key, base_url=fake.base_url, poll=fast) as client:
        yield client


def context(prism: PrismClient, console: Console) -> Context:
    args = argparse.Namespace(command="wait", timeout=30.0)
    return Context(args, UI(json_mode=False, console=console), prism=prism)


async def test_waiting_for_real_generations_draws_them(prism: PrismClient, tmp_path: Path) -> None:
    """The wait the commands share: live rows for every id, final statuses, downloads with
    their bytes, and a summary table."""
    console = recording_console()
    good = await prism.generations.create(prompt="A cat", model_name="veo-3.1", count=2)
    bad = await prism.generations.create(prompt="[fail] a dog", model_name="veo-3.1")
    ids = [*good.ids, *bad.ids]
    code = await context(prism, console).wait_and_report(ids, f"{tmp_path}/")
    assert code == EXIT_FAILED
    text = console.export_text()
    live = tables(text, TITLE)[-1]
    downloads = text.rpartition(TITLE)[2].partition("└")[2].partition("Generations")[0]
    (summary,) = tables(text, "Generations")
    for generation_id in good.ids:
        assert "✔" in row(live, generation_id)
        assert "completed" in row(live, generation_id)
        assert "completed" in row(summary, generation_id)
        assert f"download {generation_id}" in downloads
    assert "✘" in row(live, bad.ids[0])
    assert "failed" in row(live, bad.ids[0])
    assert "failed: Generation failed" in row(summary, bad.ids[0])
    assert f"download {bad.ids[0]}" not in downloads
    assert "200.0/200.0 kB" in downloads
    assert sorted(p.stem for p in tmp_path.glob("*.mp4")) == sorted(good.ids)


async def test_upload_progress_names_the_file(prism: PrismClient, tmp_path: Path) -> None:
    """Uploading a reference draws its file name and bytes, then prints its key."""
    console = recording_console()
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 120_000)
    key = await context(prism, console).upload(str(clip))
    text = console.export_text()
    assert "upload clip.mp4" in text
    assert "120.0/120.0 kB" in text
    assert f"uploaded {clip} -> {key}" in text
