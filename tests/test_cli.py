"""The command line through its real entry points, against FakePrismServer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prism_async.cli import main
from prism_async.testing import FakePrismServer


class ThreadedFake:
    """A FakePrismServer on its own loop in a thread, for the synchronous CLI tests."""

    def __init__(self, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = FakePrismServer(**kwargs)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.close())
        self.loop.close()

    def __enter__(self) -> ThreadedFake:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def call(self, function: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(function, *args)

    def argv(self, *args: str) -> list[str]:
        return ["--api-key", self.server.api_key, "--base-url", self.server.base_url, *args]


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    with ThreadedFake(generation_seconds=0.3) as threaded:
        yield threaded


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_demo_runs_the_main_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo` uploads, generates, waits and downloads into ./prism-demo with a summary."""
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    videos = sorted((tmp_path / "prism-demo").glob("*.mp4"))
    assert len(videos) == 4
    assert all(video.stat().st_size > 0 for video in videos)
    for video in videos:
        assert video.stem in out
    assert "completed" in out
    assert "uploaded" in out


def test_generate_wait_download_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one parseable object per generation, with the downloaded file."""
    code = main(
        [
            "--fake",
            "--json",
            "generate",
            "A cat",
            "--model",
            "veo-3.1",
            "--count",
            "2",
            "--duration",
            "8s",
            "--download",
            str(tmp_path),
        ]
    )
    assert code == 0
    records = json_lines(capsys.readouterr().out)
    assert len(records) == 2
    for record in records:
        assert record["status"] == "completed"
        assert Path(record["file"]).exists()


def test_generate_uploads_local_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reference given as a local file is uploaded first and its key used."""
    image, look = tmp_path / "frame.png", tmp_path / "look.png"
    image.write_bytes(b"\x89PNG fake")
    look.write_bytes(b"\x89PNG look")
    code = main(
        [
            "--fake",
            "--json",
            "generate",
            "Animate",
            "--model",
            "veo-3.1",
            "--start-frame",
            str(image),
            "--ingredient",
            str(look),
            "community/assets/asset_001.png",
        ]
    )
    assert code == 0
    records = json_lines(capsys.readouterr().out)
    uploads = [r for r in records if r.get("event") == "upload"]
    assert len(uploads) == 2
    assert uploads[0]["s3_key"].startswith("users/")
    queued = [r for r in records if "event" not in r]
    assert queued[0]["status"] == "queued"


def test_bad_usage_exits_2_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing option is exit 2 with a message naming it; no traceback."""
    assert main(["--fake", "generate", "A cat"]) == 2
    err = capsys.readouterr().err
    assert "--model" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["generate", "A cat", "--model", "veo-3.1", "--count", "9"],
            "--count: must be from 1 to 4",
        ),
        (["generate", "A cat", "--model", "veo-3.1", "--aspect-ratio", "2:1"], "--aspect-ratio"),
        (["generate", "  ", "--model", "veo-3.1"], "PROMPT: must not be empty"),
        (["template", "abc123", "--var", "novalue"], "--var: expected KEY=VALUE"),
        (["upload", "/no/such/file.png"], "FILE: no such file: /no/such/file.png"),
        (["--timeout", "0", "wait", "gen_1"], "--timeout"),
    ],
)
def test_bad_input_exits_2_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input is caught before sending: exit 2, the option and the reason."""
    assert main(["--fake", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_missing_key_is_bad_usage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --api-key or PRISM_API_KEY the command says how to fix it."""
    monkeypatch.delenv("PRISM_API_KEY", raising=False)
    assert main(["status", "gen_1"]) == 2
    assert "PRISM_API_KEY" in capsys.readouterr().err


def test_api_errors_exit_3_with_code_and_message(capsys: pytest.CaptureFixture[str]) -> None:
    """An API error prints `code: message` and exits 3."""
    with ThreadedFake(credits=0) as fake:
        assert main(fake.argv("generate", "A cat", "--model", "veo-3.1")) == 3
        assert "insufficient_credits: Not enough credits" in capsys.readouterr().err
        assert main(fake.argv("generate", "A cat", "--model", "nope")) == 3
        assert "pricing_error" in capsys.readouterr().err
        assert main(fake.argv("status", "gen_missing")) == 3
        assert "not_found" in capsys.readouterr().err
    assert main(["--api-key", "wrong", "--base-url", "http://127.0.0.1:9/api", "status", "g"]) == 3


def test_an_ambiguous_paid_request_is_flagged(capsys: pytest.CaptureFixture[str]) -> None:
    """A 502 on generate tells the user the request may have been queued, and insufficient
    credits (a refusal) does not."""
    with ThreadedFake() as fake:
        done = threading.Event()

        def on_the_fake(action: Any) -> None:
            def act_then_signal() -> None:
                action()
                done.set()

            done.clear()
            fake.call(act_then_signal)
            assert done.wait(5)

        on_the_fake(lambda: fake.server.inject("POST", "/api/generations", status=502))
        assert main(fake.argv("generate", "A cat", "--model", "veo-3.1")) == 3
        err = capsys.readouterr().err
        assert "may have been queued" in err
        assert "Traceback" not in err
        on_the_fake(lambda: setattr(fake.server, "credits", 0))
        assert main(fake.argv("generate", "A cat", "--model", "veo-3.1")) == 3
        assert "may have been queued" not in capsys.readouterr().err


def test_failed_generation_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A generation that fails while waited on gives exit 1 and its reason."""
    assert main(["--fake", "generate", "[fail] a cat", "--model", "veo-3.1", "--wait"]) == 1
    assert "failed: Generation failed" in capsys.readouterr().out


def test_timeout_exits_4(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait past --timeout gives exit 4."""
    monkeypatch.setattr("prism_async.cli._main.FAKE_SECONDS", (5.0, 5.0))
    code = main(["--fake", "--timeout", "0.3", "generate", "slow", "--model", "veo-3.1", "--wait"])
    assert code == 4
    assert "timed out" in capsys.readouterr().out


def test_status_wait_download_upload(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status, wait, download and upload against one server."""
    assert main(fake.argv("--json", "generate", "A dog", "--model", "veo-3.1")) == 0
    (queued,) = json_lines(capsys.readouterr().out)
    generation_id = queued["id"]
    assert main(fake.argv("--json", "wait", generation_id, "--download", str(tmp_path))) == 0
    (waited,) = json_lines(capsys.readouterr().out)
    assert waited["status"] == "completed"
    assert main(fake.argv("--json", "status", generation_id)) == 0
    (status,) = json_lines(capsys.readouterr().out)
    assert status["video_url"].startswith(fake.server.root)
    target = tmp_path / "out.mp4"
    assert main(fake.argv("download", generation_id, "-o", str(target))) == 0
    assert target.read_bytes() == fake.server.video
    assert f"saved {target}" in capsys.readouterr().out
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 1000)
    assert main(fake.argv("--json", "upload", str(clip))) == 0
    (uploaded,) = json_lines(capsys.readouterr().out)
    assert fake.server.objects[uploaded["s3_key"]].data == clip.read_bytes()


def test_template_command_uploads_at_files(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`template --var KEY=@path` uploads the file and passes its key."""
    image = tmp_path / "product.png"
    image.write_bytes(b"\x89PNG product")
    argv = fake.argv(
        "--json",
        "template",
        "abc123",
        "--var",
        "hook=Look at this",
        "--var",
        f"productImage=@{image}",
        "--wait",
    )
    assert main(argv) == 0
    records = json_lines(capsys.readouterr().out)
    upload = next(r for r in records if r.get("event") == "upload")
    done = [r for r in records if r.get("status") == "completed"]
    assert len(done) == 1
    assert done[0]["template_id"] == "abc123"
    body = next(r for r in fake.server.requests if r.path == "/api/templates/abc123/generate").json
    assert body["variables"]["productImage"] == upload["s3_key"]


def test_browsing_commands(fake: ThreadedFake, capsys: pytest.CaptureFixture[str]) -> None:
    """templates, template-info, characters and assets print what the API has."""
    assert main(fake.argv("templates")) == 0
    out = capsys.readouterr().out
    assert "abc123" in out
    assert "featured-ugc-pitch" in out
    assert main(fake.argv("template-info", "abc123")) == 0
    out = capsys.readouterr().out
    assert "hook" in out
    assert "benefit" in out
    assert main(fake.argv("--json", "characters")) == 0
    assert json_lines(capsys.readouterr().out) == []
    assert main(fake.argv("--json", "assets", "surfing", "--type", "video", "--limit", "3")) == 0
    assets = json_lines(capsys.readouterr().out)
    assert 1 <= len(assets) <= 3
    assert all(asset["asset_type"] == "video" for asset in assets)
    assert main(fake.argv("templates", "--q", "x")) == 2


def run_cli(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "prism_async", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def test_module_entry_point_json(tmp_path: Path) -> None:
    """`python -m prism_async --fake --json generate ...` prints JSON lines and exits 0."""
    process = run_cli(
        "--fake", "--json", "generate", "A cat", "--model", "veo-3.1", "--wait", cwd=tmp_path
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert json_lines(out)[0]["status"] == "completed"


def test_ctrl_c_exits_130_without_traceback(tmp_path: Path) -> None:
    """Ctrl-C during a wait cancels it cleanly: exit 130, no traceback."""
    process = run_cli(
        "--fake",
        "--timeout",
        "60",
        "generate",
        "[fail]",
        "--model",
        "veo-3.1",
        "--count",
        "2",
        "--wait",
        cwd=tmp_path,
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # "queued ..." once the batch exists
    assert "queued" in first
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "interrupted" in err
    assert "Traceback" not in err


def test_serve_fake_in_the_foreground() -> None:
    """`serve-fake` prints its base URL and key, serves, and stops on Ctrl-C."""
    process = run_cli("serve-fake", "--port", "0", "--generation-seconds", "1")
    assert process.stdout is not None
    first = process.stdout.readline()
    assert "FakePrismServer listening on http://127.0.0.1:" in first
    base_url = first.split(" on ", 1)[1].strip()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prism_async",
            "--api-key",
            "prism_sk_test",
            "--base-url",
            base_url,
            "--json",
            "templates",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert len(json_lines(result.stdout)) >= 4
    time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "Traceback" not in err


def test_importing_the_sdk_does_not_import_rich() -> None:
    """`import prism_async` stays free of the cli extra."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys, prism_async; print('rich' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "False"
