"""``prism-async run FILE.jsonl``: a resumable bulk run against FakePrismServer."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from prism_async import PrismClient
from prism_async.cli import main
from prism_async.cli._batch import default_run_id, load_batch, run_keys
from prism_async.cli._context import Context
from prism_async.cli._running import run_batch
from prism_async.cli._ui import UI
from prism_async.ledger import SQLiteLedger
from prism_async.testing import FakePrismServer
from tests.conftest import QUICK_CLI, QUICK_POLL
from tests.test_cli import ThreadedFake, json_lines
from tests.test_cli_display import recording_console, row, tables

BATCH: list[dict[str, Any]] = [
    {"prompt": "A cat", "model_name": "veo-3.1", "duration": "8s"},
    {"prompt": "A dog", "model_name": "veo-3.1-fast", "count": 2},
    {"prompt": "A bird", "model_name": "kling-2.5", "template_id": "abc123", "key": "bird"},
    {"template_id": "abc123", "variables": {"hook": "Check this out"}},
]
"""Three generation requests (one with a template_id and its own key) and a template one."""


@pytest.fixture(scope="module")
def fake() -> Iterator[ThreadedFake]:
    with ThreadedFake(generation_seconds=0.2) as threaded:
        yield threaded


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key or ledger from the environment (conftest paces polling for the fake)."""
    monkeypatch.delenv("PRISM_API_KEY", raising=False)
    monkeypatch.delenv("PRISM_LEDGER", raising=False)


def on_the_fake(fake: ThreadedFake, action: Callable[[], object]) -> None:
    """Run ``action`` on the fake's loop (where its state lives) and wait until it has run."""

    async def act() -> None:
        action()

    asyncio.run_coroutine_threadsafe(act(), fake.loop).result(5)


def write_batch(path: Path, requests: Sequence[Mapping[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n\n" for r in requests), encoding="utf-8")
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: its exit code, stdout and stderr (never a traceback)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def without_json(argv: list[str]) -> list[str]:
    return [arg for arg in argv if arg != "--json"]


def posts(fake: ThreadedFake) -> int:
    return len(fake.server.requests_to("POST", "/api/*"))


def video_gets(fake: ThreadedFake) -> int:
    return len(fake.server.requests_to("GET", "/storage/videos/*"))


def test_a_batch_runs_then_a_rerun_sends_and_downloads_nothing(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every request is submitted, waited for and downloaded, one JSON object each; the same
    command again resumes from the ledger: no POST, no video fetched again, exit 0."""
    file = write_batch(tmp_path / "batch.jsonl", BATCH)
    ledger, videos = tmp_path / "new" / "batch.db", tmp_path / "videos"
    ledger.parent.mkdir()
    argv = fake.argv("--json", "run", file, "--ledger", str(ledger), "--download", str(videos))
    sent_before = posts(fake)
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert ledger.is_file()  # made when missing
    first = {r["line"]: r for r in json_lines(out)}
    run_id = default_run_id(file)
    assert run_id == "batch"
    assert sorted(first) == [1, 3, 5, 7]
    assert first[5]["key"] == "bird"
    for line in (1, 3, 7):  # keys derived from the request: batch/<16 hex digits>
        assert first[line]["key"].startswith("batch/")
        assert len(first[line]["key"]) == len("batch/") + 16
    assert all(r["state"] == "downloaded" and r["error"] is None for r in first.values())
    assert all(r["run_id"] == run_id for r in first.values())
    assert len(first[3]["generation_ids"]) == 2
    assert first[7]["credits_charged"] == 50
    files = sorted(p for r in first.values() for p in r["paths"])
    assert files == sorted(str(p) for p in videos.glob("*.mp4"))
    assert len(files) == 5
    assert posts(fake) - sent_before == 4
    body = fake.server.requests_to("POST", "/api/generations")[-4:]
    assert {"A cat", "A dog", "A bird"} <= {r.json["prompt"] for r in body}

    sent, fetched = posts(fake), video_gets(fake)
    code, out, _ = run(capsys, *argv)
    assert code == 0
    again = {r["line"]: r for r in json_lines(out)}
    assert again == first
    assert (posts(fake), video_gets(fake)) == (sent, fetched)

    code, out, err = run(capsys, *without_json(argv))
    assert code == 0
    assert f"run {run_id}: 4 requests from {file}; ledger {ledger}" in out
    assert "4 requests: 4 downloaded" in out
    assert "sent by this run: 0; credits charged to the run's keys: 370" in out
    assert err == ""


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "A cat", "model_name": "veo-3.1", "duration": "9x"}', "duration: must be"),
        ('{"prompt": "A cat", "model_name": "veo-3.1", "colour": "red"}', "colour: unknown"),
        ('{"prompt": "A cat"}', "model_name: required"),
        ('{"template_id": "abc123", "count": 2}', "count: unknown field for a template"),
        ('{"template_id": "abc123", "variables": {"hook": 3}}', "variables['hook']: must be"),
        ('{"prompt": "A cat", "model_name": "veo-3.1", "key": ""}', "key: must be a non-empty"),
        ('{"prompt": "A cat", "model_name": "veo-3.1"', "not valid JSON"),
        ('["A cat", "veo-3.1"]', "expected a JSON object, got list"),
        ('{"prompt": "A dog", "model_name": "veo-3.1", "key": "x"}', "key: 'x' is also the key"),
    ],
)
def test_a_bad_line_is_exit_2_naming_it_before_anything_is_sent(
    line: str, message: str, fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad line (third, after a good one and a blank one) is exit 2 with the file, the line
    number, the field and the reason; nothing is sent and no ledger is made."""
    file = tmp_path / "batch.jsonl"
    good = '{"prompt": "A cat", "model_name": "veo-3.1", "key": "x"}'
    file.write_text(f"{good}\n\n{line}\n{good}\n", encoding="utf-8")
    ledger = tmp_path / "l.db"
    before = len(fake.server.requests_to("*", "/api/*"))
    code, out, err = run(capsys, *fake.argv("run", str(file), "--ledger", str(ledger)))
    assert code == 2
    assert f"prism-async: error: {file}:3: {message}" in err
    assert out == ""
    assert len(fake.server.requests_to("*", "/api/*")) == before
    assert not ledger.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "missing.jsonl"], "FILE: cannot read missing.jsonl: No such file"),
        (["run", "empty.jsonl"], "FILE: no requests in empty.jsonl"),
        (["run", "one.jsonl", "--concurrency", "0"], "--concurrency: must be at least 1"),
        (["run", "one.jsonl", "--max-credits", "-1"], "--max-credits: must be 0 or more"),
        (["run", "one.jsonl", "--run-id", " "], "--run-id: must not be empty"),
        (["run", "one.jsonl", "--ledger", "no/such/dir/l.db"], "--ledger: cannot use no/such"),
    ],
)
def test_bad_arguments_are_exit_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n  \n", encoding="utf-8")
    write_batch(tmp_path / "one.jsonl", BATCH[:1])
    code, _, err = run(capsys, "--fake", *argv)
    assert code == 2
    assert message in err


def test_max_credits_skips_what_would_pass_it(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-credits 240 at 120 a video: two are sent, the third is skipped: exit 1."""
    requests = [{"prompt": f"A fox {i}", "model_name": "veo-3.1"} for i in range(3)]
    file = write_batch(tmp_path / "foxes.jsonl", requests)
    ledger = str(tmp_path / "l.db")
    before = posts(fake)
    argv = fake.argv("--json", "run", file, "--ledger", ledger, "--max-credits", "240")
    code, out, _ = run(capsys, *argv)
    assert code == 1
    states = sorted(r["state"] for r in json_lines(out))
    assert states == ["completed", "completed", "skipped"]
    (skipped,) = [r for r in json_lines(out) if r["state"] == "skipped"]
    assert "--max-credits" in skipped["error"]
    assert posts(fake) - before == 2
    code, out, _ = run(capsys, *without_json(argv))
    assert code == 1
    assert "3 requests: 2 completed, 1 skipped" in out
    assert "sent by this run: 0; credits charged to the run's keys: 240" in out
    assert posts(fake) - before == 2


def test_a_lost_answer_is_reconciled_in_the_same_run(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 502 after the fake queued the video: the key waits as ambiguous and is reconciled
    from the history in the same run (no second POST, exit 0, no raw log line)."""
    requests = [
        {"prompt": f"A unique owl {tmp_path.name} {i}", "model_name": "veo-3.1"} for i in range(2)
    ]
    file = write_batch(tmp_path / "owls.jsonl", requests)
    ledger = str(tmp_path / "l.db")
    on_the_fake(
        fake,
        lambda: fake.server.inject("POST", "/api/generations", status=502, processed=True),
    )
    sent = posts(fake)
    code, out, err = run(capsys, *fake.argv("--json", "run", file, "--ledger", ledger))
    assert code == 0, err
    assert sorted(r["state"] for r in json_lines(out)) == ["completed", "completed"]
    assert posts(fake) == sent + 2
    assert "ledger key=" not in err


def test_an_ambiguous_key_no_rule_settles_is_exit_1_with_the_hint(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A template whose answer was lost (no prompt to search the history for, no webhook):
    after ``--reconcile-window`` it is still ambiguous: exit 1, how to settle it on stderr, and
    the summary shows what it would add at the price of its shape."""
    file = write_batch(
        tmp_path / "tpl.jsonl",
        [
            {"template_id": "abc123", "variables": {"hook": f"Lost {tmp_path.name}"}},
            {"template_id": "abc123", "variables": {"hook": f"Found {tmp_path.name}"}},
        ],
    )
    ledger = str(tmp_path / "l.db")
    on_the_fake(
        fake,
        lambda: fake.server.inject("POST", "/api/templates/*", status=502, processed=True),
    )
    argv = fake.argv("run", file, "--ledger", ledger, "--reconcile-window", "0.3")
    before = fake.server.credits
    code, out, err = run(capsys, *(*argv, "--concurrency", "1"))
    assert code == 1
    assert "2 requests: 1 completed, 1 ambiguous" in out
    assert before - fake.server.credits == 100
    assert "charged to the run's keys: 50 (up to 50 more if the ambiguous keys were queued)" in out
    assert "ambiguous (maybe queued and charged, ids unknown)" in err
    assert f"prism-async ledger reconcile --ledger {ledger}" in err
    assert f"prism-async ledger resolve KEY (--ids ID... | --not-sent) --ledger {ledger}" in err
    assert "ledger key=" not in err
    code, _, err = run(
        capsys, *fake.argv("run", file, "--ledger", ledger, "--reconcile-window", "0")
    )
    assert code == 2
    assert "--reconcile-window: must be more than 0 seconds" in err


def test_the_default_run_id_is_the_file_name_without_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's name without ``.jsonl``, wherever it lies: the same file in another
    checkout, container or CI workspace resumes."""
    monkeypatch.chdir(tmp_path)
    first = write_batch(tmp_path / "batch.jsonl", BATCH)
    other = write_batch(tmp_path / "elsewhere" / "batch.jsonl", BATCH)
    assert default_run_id(first) == default_run_id(other) == "batch"
    assert default_run_id("batch.jsonl") == default_run_id("elsewhere/../batch.jsonl") == "batch"
    assert default_run_id("/ci/work/2026-12.launch.JSONL") == "2026-12.launch"
    assert default_run_id("requests.txt") == "requests.txt"
    assert default_run_id(".jsonl") == "run"


def test_run_ids_on_the_command_line(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default run id is printed and keys derive from it, again on a re-run; the same file
    run from another folder on the same ledger has the same keys and sends nothing; --run-id
    names them."""
    requests = [{"prompt": "A stable heron", "model_name": "veo-3.1-fast"}]
    file = write_batch(tmp_path / "herons.jsonl", requests)
    copy = write_batch(tmp_path / "copy" / "herons.jsonl", requests)
    ledger = str(tmp_path / "l.db")

    def keys(*argv: str) -> list[str]:
        code, out, _ = run(capsys, *fake.argv("--json", "run", *argv, "--ledger", ledger))
        assert code == 0
        return [r["key"] for r in json_lines(out)]

    run_id = default_run_id(file)
    sent = posts(fake)
    [key] = keys(file)
    assert key.startswith(f"{run_id}/")
    assert keys(file) == keys(copy) == [key]
    assert posts(fake) == sent + 1
    assert keys(file, "--run-id", "egrets") == [key.replace(f"{run_id}/", "egrets/")]
    assert posts(fake) == sent + 2
    code, out, _ = run(capsys, *fake.argv("run", file, "--ledger", ledger))
    assert code == 0
    assert out.startswith(f"run {run_id}: 1 request from {file}")


def test_fake_and_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--fake runs on an embedded fake (the default ledger is $PRISM_LEDGER); a wait past
    --timeout is timed_out: exit 4."""
    file = write_batch(tmp_path / "batch.jsonl", BATCH)
    monkeypatch.setenv("PRISM_LEDGER", str(tmp_path / "env.db"))
    code, out, _ = run(capsys, "--fake", "--json", "run", file)
    assert code == 0
    assert sorted(r["state"] for r in json_lines(out)) == ["completed"] * 4
    assert (tmp_path / "env.db").is_file()
    monkeypatch.setattr("prism_async.cli._main.FAKE_SECONDS", (5.0, 5.0))
    code, out, _ = run(
        capsys, "--fake", "--timeout", "0.3", "run", file, "--ledger", str(tmp_path / "t.db")
    )
    assert code == 4
    assert "4 requests: 4 timed_out" in out


@pytest.fixture
async def server() -> AsyncIterator[FakePrismServer]:
    async with FakePrismServer(generation_seconds=0.3) as fake:
        yield fake


async def test_the_live_table_shows_every_key_and_how_it_ended(
    server: FakePrismServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal: one row per key, a spinner while in progress, the final states (✔ or
    ✘), ids and files; then the summary."""
    monkeypatch.chdir(tmp_path)
    file = write_batch(
        tmp_path / "live.jsonl", [*BATCH[:2], {"prompt": "[fail] x", "model_name": "veo-3.1"}]
    )
    batch = load_batch(file)
    console = recording_console()
    async with PrismClient(
        server.api_key,
        base_url=server.base_url,
        poll=QUICK_POLL,
        ledger=SQLiteLedger(tmp_path / "l.db"),
    ) as prism:
        assert prism.ledger is not None
        keys = await run_keys(file, batch, "live", prism.ledger)
        ctx = Context(
            argparse.Namespace(timeout=30.0), UI(json_mode=False, console=console), prism=prism
        )
        report = await run_batch(
            ctx, batch, keys, run_id="live", source=file, ledger_label="l.db", download="v"
        )
    assert report.exit_code == 1
    text = console.export_text()
    frames = tables(text, "Run live")
    assert all(key in frames[0] for key in keys)
    (header,) = [line for line in frames[0].splitlines() if "┃" in line]
    assert [cell.strip() for cell in header.split("┃")[2:-1]] == [
        "key",
        "state",
        "generations",
        "files / error",
    ]
    last = frames[-1]
    for key in keys[:2]:
        assert "downloaded" in row(last, key)
        assert "✔" in row(last, key)
        assert "gen_" in row(last, key)
        assert "v/gen_" in row(last, key)
    assert "failed" in row(last, keys[2])
    assert "✘" in row(last, keys[2])
    assert "pending" not in last
    assert "waiting" not in last
    assert "3 requests: 2 downloaded, 1 failed" in text
    assert "sent by this run: 3; credits charged to the run's keys: 360" in text


def test_warnings_are_not_printed_raw_without_v(fake: ThreadedFake, tmp_path: Path) -> None:
    """In a real process the ledger's WARNINGs for an ambiguous key (a 502 before anything was
    queued: it waits out its window, then is sent again) are not printed by Python's
    last-resort handler; with -v they are logged."""
    for verbose in ([], ["-v"]):
        file = write_batch(
            tmp_path / f"raw{len(verbose)}.jsonl",
            [{"prompt": f"A quiet mole {len(verbose)}", "model_name": "veo-3.1"}],
        )
        on_the_fake(fake, lambda: fake.server.inject("POST", "/api/generations", status=502))
        result = subprocess.run(
            [
                *QUICK_CLI,
                *verbose,
                *fake.argv("run", file, "--ledger", str(tmp_path / "l.db")),
                *("--reconcile-window", "0.5"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("PRISM_")},
        )
        assert result.returncode == 0, result.stderr
        assert "1 request: 1 completed" in result.stdout
        assert ("ledger key=" in result.stderr) == bool(verbose)
        assert ("reconciling again in" in result.stderr) == bool(verbose)
        assert "Traceback" not in result.stderr


def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    """Ctrl-C while the run waits stops it cleanly: exit 130, no traceback."""
    file = write_batch(tmp_path / "batch.jsonl", BATCH)
    argv = ["--fake", "run", file, "--ledger", str(tmp_path / "l.db")]
    process = subprocess.Popen(
        [sys.executable, "-m", "prism_async", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("run batch: ")
    assert " waiting " in process.stdout.readline()  # a POST was answered
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "interrupted" in err
    assert "Traceback" not in err


def test_the_summary_counts_reconciled_keys_at_their_price(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key whose answer was lost is reconciled from the history (the API's charge unknown)
    and counted at the price seen for its request shape: the summary's total is exactly what
    the fake charged, on the run and on its re-run."""
    file = write_batch(
        tmp_path / "exact.jsonl",
        [
            {"prompt": "An exact otter, answer lost", "model_name": "veo-3.1"},
            {"prompt": "An exact beaver", "model_name": "veo-3.1"},
        ],
    )
    argv = fake.argv("run", file, "--ledger", str(tmp_path / "l.db"), "--concurrency", "1")
    on_the_fake(
        fake,
        lambda: fake.server.inject("POST", "/api/generations", status=502, processed=True),
    )
    before = fake.server.credits
    for _ in range(2):
        code, out, err = run(capsys, *argv)
        assert code == 0, err
        assert "2 requests: 2 completed" in out
        assert "credits charged to the run's keys: 240" in out
        assert before - fake.server.credits == 240


def test_a_key_recorded_for_another_request_is_a_conflict(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line whose key names another request in the ledger: ``conflict``, nothing sent."""
    ledger = str(tmp_path / "l.db")
    first = write_batch(
        tmp_path / "a.jsonl", [{"prompt": "A heron", "model_name": "veo-3.1", "key": "k1"}]
    )
    code, _, _ = run(capsys, *fake.argv("run", first, "--ledger", ledger))
    assert code == 0
    sent = posts(fake)
    second = write_batch(
        tmp_path / "b.jsonl", [{"prompt": "A crane", "model_name": "veo-3.1", "key": "k1"}]
    )
    code, out, _ = run(capsys, *fake.argv("--json", "run", second, "--ledger", ledger))
    assert code == 1
    [record] = json_lines(out)
    assert (record["key"], record["state"], record["generation_ids"]) == ("k1", "conflict", [])
    assert "recorded for another request" in record["error"]
    assert posts(fake) == sent


def test_edited_and_moved_files_in_real_processes(fake: ThreadedFake, tmp_path: Path) -> None:
    """`prism-async run` processes: after a line is inserted, one deleted and two swapped only
    the new request is sent, and every line's videos are its own prompt's; the same file run
    from a second folder on the same ledger sends nothing."""
    ledger = str(tmp_path / "shared.db")

    def run_process(file: str, cwd: Path) -> dict[int, dict[str, Any]]:
        done = subprocess.run(
            [*QUICK_CLI, *fake.argv("--json", "run", file)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("PRISM_")},
                 "PRISM_LEDGER": ledger},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return {r["line"]: r for r in json_lines(done.stdout)}

    def prompts_of(records: Mapping[int, Mapping[str, Any]]) -> dict[int, list[str]]:
        made = fake.server.generations
        return {line: [made[i].prompt for i in r["generation_ids"]] for line, r in records.items()}

    def lines(*prompts: str) -> list[dict[str, Any]]:
        return [{"prompt": p, "model_name": "veo-3.1"} for p in prompts]

    checkout = tmp_path / "checkout"
    file = write_batch(checkout / "launch.jsonl", lines("An owl", "A lynx", "A wolf", "A hare"))
    first = run_process("launch.jsonl", checkout)
    assert prompts_of(first) == {1: ["An owl"], 3: ["A lynx"], 5: ["A wolf"], 7: ["A hare"]}
    sent = posts(fake)
    # insert one on top, delete "A lynx", swap "A wolf" and "A hare"
    write_batch(Path(file), lines("A new fox", "An owl", "A hare", "A wolf"))
    edited = run_process("launch.jsonl", checkout)
    assert posts(fake) == sent + 1
    assert prompts_of(edited) == {1: ["A new fox"], 3: ["An owl"], 5: ["A hare"], 7: ["A wolf"]}
    keys = {r["key"] for r in edited.values()}
    assert {first[1]["key"], first[5]["key"], first[7]["key"]} <= keys
    # the same file in another workspace, on the same ledger
    elsewhere = tmp_path / "ci-workspace" / "job-17"
    write_batch(elsewhere / "launch.jsonl", lines("A new fox", "An owl", "A hare", "A wolf"))
    moved = run_process(str(elsewhere / "launch.jsonl"), tmp_path)
    assert posts(fake) == sent + 1
    assert {line: r["key"] for line, r in moved.items()} == {
        line: r["key"] for line, r in edited.items()
    }
