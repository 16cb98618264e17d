"""What the command line accepts: local files or storage keys (each file checked before any is
uploaded), every bad line of a JSONL file, the global options on either side of the command,
and ``--help`` for every argument."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from prism_async.cli import main
from prism_async.cli._main import build_parser
from tests.test_cli import ThreadedFake, json_lines

PNG = b"\x89PNG\r\n\x1a\n fake image"


@pytest.fixture(scope="module")
def fake() -> Iterator[ThreadedFake]:
    with ThreadedFake(generation_seconds=0.2) as threaded:
        yield threaded


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in its own folder (relative paths are read there), ``~`` in it too, and no
    key or ledger from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PRISM_API_KEY", raising=False)
    monkeypatch.delenv("PRISM_LEDGER", raising=False)
    (tmp_path / "ok.png").write_bytes(PNG)
    (tmp_path / "frames").mkdir()


def uploads(fake: ThreadedFake) -> int:
    return len(fake.server.requests_to("POST", "/api/s3/presign-upload"))


def paid_posts(fake: ThreadedFake) -> int:
    return len(fake.server.requests_to("POST", "/api/generations")) + len(
        fake.server.requests_to("POST", "/api/templates/*/generate")
    )


def last_body(fake: ThreadedFake, path: str) -> dict[str, object]:
    body = fake.server.requests_to("POST", path)[-1].json
    assert isinstance(body, dict)
    return body


def fails(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    """Run ``argv``: exit 2, no traceback, nothing on stdout; the lines on stderr."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    return err.splitlines()


# -- a local file or a storage key --------------------------------------------------------------


def test_every_missing_local_file_is_named_and_nothing_is_uploaded(
    fake: ThreadedFake, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value that can only be a local path (no folder, ``~`` or ``/`` first, or in a folder
    that exists here) and names no file is exit 2, one line each (in the order of --help); an
    existing file given too is not uploaded, and a value shaped like a storage key is no
    error."""
    before = (uploads(fake), paid_posts(fake))
    argv = fake.argv(
        "generate",
        "A cat",
        "--model",
        "veo-3.1",
        "--start-frame",
        "ok.png",
        "--end-frame",
        "frames/last.png",
        "--ingredient",
        "users/user_fake/user-uploads/batch_1/file_1.png",
        "look.png",
        "--audio-file",
        "~/voice.mp3",
        "--source-video",
        "/no/such/clip.mp4",
    )
    assert fails(capsys, argv) == [
        "prism-async: error: --end-frame: no such file: frames/last.png",
        "prism-async: error: --ingredient: no such file: look.png",
        "prism-async: error: --source-video: no such file: /no/such/clip.mp4",
        "prism-async: error: --audio-file: no such file: ~/voice.mp3",
    ]
    assert (uploads(fake), paid_posts(fake)) == before


def test_files_the_api_would_refuse_are_named_before_any_upload(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder, a file that is no image, video or audio, and an empty file: exit 2 naming
    each, nothing uploaded."""
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "empty.png").write_bytes(b"")
    before = uploads(fake)
    argv = fake.argv(
        "generate",
        "A cat",
        "--model",
        "veo-3.1",
        "--start-frame",
        "ok.png",
        "--end-frame",
        "frames",
        "--ingredient",
        "notes.txt",
        "empty.png",
    )
    assert fails(capsys, argv) == [
        "prism-async: error: --end-frame: not a file: frames",
        "prism-async: error: --ingredient: notes.txt: not an image, video or audio file "
        "(by its name)",
        "prism-async: error: --ingredient: empty.png: the file is empty",
    ]
    assert uploads(fake) == before


def test_storage_keys_and_files_are_told_apart(
    fake: ThreadedFake, capsys: pytest.CaptureFixture[str]
) -> None:
    """A storage key (folders, not a local folder) is sent as it is; a local file is uploaded
    once even when given twice, its key used for both."""
    before = uploads(fake)
    argv = fake.argv(
        "--json",
        "generate",
        "Animate",
        "--model",
        "veo-3.1",
        "--start-frame",
        "./ok.png",
        "--ingredient",
        "ok.png",
        "community/assets/asset_001.png",
    )
    assert main(argv) == 0
    (upload,) = [r for r in json_lines(capsys.readouterr().out) if r.get("event") == "upload"]
    assert uploads(fake) == before + 1
    body = last_body(fake, "/api/generations")
    assert body["startFrameKey"] == upload["s3_key"]
    assert body["ingredientImageKeys"] == [upload["s3_key"], "community/assets/asset_001.png"]


def test_generate_checks_the_whole_request_before_uploading(
    fake: ThreadedFake, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad option after a good file: exit 2 naming it, the file not uploaded."""
    before = uploads(fake)
    argv = fake.argv("generate", "A cat", "--model", "veo-3.1", "--start-frame", "ok.png")
    lines = fails(capsys, [*argv, "--count", "9"])
    assert lines == ["prism-async: error: --count: must be from 1 to 4, got 9"]
    assert uploads(fake) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--var", "b=@missing.png"], "--var b: no such file: missing.png"),
        (["--var", "b=@"], "--var b: no file given"),
        (["--var", "b=@frames"], "--var b: not a file: frames"),
        (["--webhook-url", "not-a-url"], "--webhook-url: must be an http(s) URL"),
        (["--character", "presenter"], "--character: expected KEY=VALUE"),
        (["--var", "=x"], "--var: expected KEY=VALUE"),
    ],
)
def test_template_uploads_nothing_before_failing_on_a_later_argument(
    extra: list[str], message: str, fake: ThreadedFake, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--var a=@ok.png`` first, then a bad argument: exit 2 naming it, nothing uploaded or
    queued."""
    before = (uploads(fake), paid_posts(fake))
    lines = fails(capsys, fake.argv("template", "abc123", "--var", "a=@ok.png", *extra))
    assert len(lines) == 1
    assert lines[0].startswith(f"prism-async: error: {message}")
    assert (uploads(fake), paid_posts(fake)) == before


def test_template_at_file_that_looks_like_a_key_is_still_a_file(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``KEY=@path`` always names a local file, however it looks; a plain value is text."""
    assert main(fake.argv("template", "abc123", "--var", "p=@users/u/x.png")) == 2
    assert "--var p: no such file: users/u/x.png" in capsys.readouterr().err
    argv = fake.argv("--json", "template", "abc123", "--var", "hook=frames/x.png")
    assert main(argv) == 0
    assert last_body(fake, "/api/templates/abc123/generate")["variables"] == {
        "hook": "frames/x.png"
    }


def test_upload_checks_every_file_first(
    fake: ThreadedFake, capsys: pytest.CaptureFixture[str]
) -> None:
    before = uploads(fake)
    lines = fails(capsys, fake.argv("upload", "ok.png", "missing.png", "frames"))
    assert lines == [
        "prism-async: error: FILE: no such file: missing.png",
        "prism-async: error: FILE: not a file: frames",
    ]
    assert uploads(fake) == before


def test_generate_help_states_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["generate", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--start-frame F start frame image: a local file (uploaded first) or a storage key" in (
        text
    )
    assert "every file is checked before any is uploaded" in text
    assert "A storage key has folders and is not a local path" in text
    assert "--start-frame: no such file: frames/start.png" in text


# -- every bad line of a JSONL file -------------------------------------------------------------


def test_run_reports_every_bad_line(
    fake: ThreadedFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four bad lines among good ones: exit 2, one line each (the file, the line, the
    field), then how many; nothing sent, no ledger made."""
    good = {"prompt": "A cat", "model_name": "veo-3.1", "key": "x"}
    lines = [
        json.dumps(good),
        '{"prompt": "A cat", "model_name": "veo-3.1"',
        "",
        json.dumps({"prompt": "A dog", "model_name": "veo-3.1", "colour": "red"}),
        json.dumps({"prompt": "A fox", "model_name": "veo-3.1"}),
        json.dumps({**good, "prompt": "A hen"}),
        '["A cat"]',
    ]
    (tmp_path / "batch.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = len(fake.server.requests_to("*", "/api/*"))
    errors = fails(capsys, fake.argv("run", "batch.jsonl", "--ledger", "l.db"))
    assert errors == [
        "prism-async: error: batch.jsonl:2: not valid JSON: Expecting ',' delimiter: "
        "line 1 column 44 (char 43)",
        "prism-async: error: batch.jsonl:4: colour: unknown field for a generation request "
        "(fields: " + ", ".join(_generation_fields()) + ")",
        "prism-async: error: batch.jsonl:6: key: 'x' is also the key of line 1",
        "prism-async: error: batch.jsonl:7: expected a JSON object, got list",
        "prism-async: error: FILE: 4 bad lines in batch.jsonl; nothing was sent",
    ]
    assert len(fake.server.requests_to("*", "/api/*")) == before
    assert not (tmp_path / "l.db").exists()


def _generation_fields() -> list[str]:
    import attrs

    from prism_async import GenerationRequest

    return [field.name for field in attrs.fields(GenerationRequest)]


# -- global options before or after the command -------------------------------------------------


def test_global_options_after_the_command(
    fake: ThreadedFake, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status ID --json --api-key K --base-url U`` is ``--json ... status ID``; one given
    before the command is not undone by the command's own (unset) copy."""
    key, url = fake.server.api_key, fake.server.base_url
    created = ["generate", "A dog", "--model", "veo-3.1", "--json", "--api-key", key]
    assert main([*created, "--base-url", url]) == 0
    (queued,) = json_lines(capsys.readouterr().out)
    generation_id = queued["id"]
    after = ["status", generation_id, "--json", "--api-key", key, "--base-url", url]
    before = ["--json", "--api-key", key, "--base-url", url, "status", generation_id]
    mixed = ["--api-key", key, "status", generation_id, "--base-url", url, "--json"]
    for argv in (after, before, mixed):
        assert main(argv) == 0
        (status,) = json_lines(capsys.readouterr().out)
        assert status["id"] == generation_id
    assert main(["status", generation_id, "--api-key", key, "--base-url", url, "-v"]) == 0
    out = capsys.readouterr().out
    assert generation_id in out
    assert not out.startswith("{")
    assert main(["wait", generation_id, "--timeout", "0", "--api-key", key]) == 2
    assert "--timeout: must be a positive number" in capsys.readouterr().err
    assert main(["templates", "--fake", "--json"]) == 0
    assert {t["id"] for t in json_lines(capsys.readouterr().out)} >= {"abc123"}


def test_global_options_after_a_group_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ledger list --ledger L --json`` (and ``-v``) as well as before ``ledger``."""
    (tmp_path / "batch.jsonl").write_text(
        json.dumps({"prompt": "A cat", "model_name": "veo-3.1", "key": "cat"}) + "\n",
        encoding="utf-8",
    )
    assert main(["run", "batch.jsonl", "--ledger", "l.db", "--fake", "--json"]) == 0
    assert [r["key"] for r in json_lines(capsys.readouterr().out)] == ["cat"]
    for argv in (
        ["ledger", "list", "--ledger", "l.db", "--json", "-v"],
        ["--json", "ledger", "list", "--ledger", "l.db"],
    ):
        assert main(argv) == 0
        assert [r["key"] for r in json_lines(capsys.readouterr().out)] == ["cat"]


def test_help_says_where_global_options_go(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "Global options go before or after the command." in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    out = capsys.readouterr().out
    assert "global options (before or after the command):" in out
    assert "--json" in out.split("global options", 1)[1]


# -- --help ---------------------------------------------------------------------------------------


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser (a group's subcommands too), by what the user types."""
    todo: list[tuple[str, argparse.ArgumentParser]] = [("", build_parser())]
    while todo:
        name, parser = todo.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child, sub in action.choices.items():
                    todo.append((f"{name} {child}".strip(), sub))
        if name:
            yield name, parser


def test_every_argument_of_every_command_has_help() -> None:
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, parser in _parsers()
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []


def test_serve_fake_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    """Each option of ``serve-fake`` that takes a value says its default, in ``--help``."""
    (parser,) = [parser for name, parser in _parsers() if name == "serve-fake"]
    own = [
        action
        for action in parser._actions
        if action.option_strings and action.default not in (None, argparse.SUPPRESS)
    ]
    assert {action.dest for action in own} >= {"port", "generation_seconds", "credits"}
    with pytest.raises(SystemExit):
        main(["serve-fake", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for action in own:
        if isinstance(action.default, bool):
            continue
        assert f"(default {action.default:g})" in str(action.help)
        assert f"{action.option_strings[0]} " in text
        assert f"default {action.default:g})" in text
