"""The command registry, and ``serve-fake``'s options and startup lines."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from prism_async import InsufficientCreditsError, PrismClient
from prism_async.cli import main
from prism_async.cli._context import Context
from prism_async.cli._main import build_parser
from prism_async.cli._registry import COMMANDS, EXIT_OK, command
from tests.test_cli import json_lines, run_cli


def test_every_declared_command_is_in_the_parser() -> None:
    """The parser is built from the registry: one subcommand per declaration, in order."""
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(subparsers.choices) == list(COMMANDS)
    assert list(COMMANDS)[:2] == ["generate", "template"]
    assert {"serve-fake", "demo", "assets", "upload"} <= set(COMMANDS)


@pytest.fixture
def hello() -> Iterator[None]:
    """A command declared the way the registry's docstring says, removed afterwards."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("id", metavar="ID")

    @command("hello", help="greet a template", options=options, option_names={"template_id": "ID"})
    async def hello(ctx: Context) -> int:
        template = await ctx.prism.templates.get(ctx.args.id)
        ctx.ui.print(f"hello {template.id}")
        ctx.ui.emit({"hello": template.id})
        return EXIT_OK

    try:
        yield
    finally:
        del COMMANDS["hello"]


@pytest.mark.usefixtures("hello")
def test_one_declaration_adds_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    """A declared command is in --help, runs with the global options, and names its own
    argument in error messages."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "greet a template" in capsys.readouterr().out
    assert main(["--fake", "hello", "abc123"]) == 0
    assert "hello abc123" in capsys.readouterr().out
    assert main(["--fake", "--json", "hello", "abc123"]) == 0
    assert json_lines(capsys.readouterr().out) == [{"hello": "abc123"}]
    assert main(["--fake", "hello", ""]) == 2
    assert "error: ID: must not be empty" in capsys.readouterr().err
    assert main(["--fake", "hello", "nope"]) == 3
    assert "not_found" in capsys.readouterr().err


def test_declaring_a_command_twice_is_refused() -> None:
    async def handler(ctx: Context) -> int:
        return EXIT_OK

    with pytest.raises(RuntimeError, match="'status' is declared twice"):
        command("status", help="again")(handler)
    assert COMMANDS["status"].handler is not handler


def test_serve_fake_refuses_negative_credits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve-fake", "--port", "0", "--credits", "-1"]) == 2
    assert "--credits: must be 0 or more" in capsys.readouterr().err


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "Traceback" not in err


def test_serve_fake_credits_and_control_api_line() -> None:
    """`serve-fake --credits 0` starts a fake with no credits and prints its control API."""
    process = run_cli("serve-fake", "--port", "0", "--credits", "0")
    assert process.stdout is not None
    lines = [process.stdout.readline().rstrip("\n") for _ in range(5)]
    base_url = lines[0].split(" on ", 1)[1]
    root = base_url.removesuffix("/api")
    assert lines[1:4] == [
        f"  export PRISM_BASE_URL={base_url}",
        "  export PRISM_API_KEY=prism_sk_test",
        "Ctrl-C to stop.",
    ]
    assert lines[4] == f'control API: {root}/_fake/ (see README "Testing your code")'
    argv = ["--api-key", "prism_sk_test", "--base-url", base_url, "generate", "A cat"]
    result = subprocess.run(
        [sys.executable, "-m", "prism_async", *argv, "--model", "veo-3.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "insufficient_credits" in result.stderr
    stop(process)


def test_serve_fake_json_includes_the_control_url() -> None:
    """With --json, serve-fake prints one object: base URL, key and control URL."""
    process = run_cli("--json", "serve-fake", "--port", "0", "--credits", "500")
    assert process.stdout is not None
    record = json.loads(process.stdout.readline())
    assert record["api_key"] == "prism_sk_test"
    assert record["base_url"].startswith("http://127.0.0.1:")
    assert record["control_url"] == record["base_url"].removesuffix("/api") + "/_fake/"
    stop(process)


async def test_a_fake_in_another_process_is_driven_through_its_control_api() -> None:
    """The control API is what a test uses when the fake (or the app) is another process."""
    process = run_cli("--json", "serve-fake", "--port", "0", "--credits", "0")
    assert process.stdout is not None
    record = json.loads(process.stdout.readline())
    control = record["control_url"]
    try:
        async with (
            aiohttp.ClientSession() as http,
            PrismClient(record["api_key"], base_url=record["base_url"]) as prism,
        ):
            with pytest.raises(InsufficientCreditsError):
                await prism.generations.create(prompt="A cat", model_name="veo-3.1")
            async with http.patch(f"{control}account", json={"credits": 120}) as response:
                assert (await response.json())["data"]["credits"] == 120
            batch = await prism.generations.create(prompt="A cat", model_name="veo-3.1")
            async with http.post(f"{control}generations/{batch.ids[0]}/complete") as response:
                assert response.status == 200
            video = await prism.generations.get(batch.ids[0])
            assert video.is_completed
            query = {"method": "POST", "path": "/api/generations"}
            async with http.get(f"{control}requests", params=query) as response:
                posts = (await response.json())["data"]
            assert [p["json"]["prompt"] for p in posts] == ["A cat", "A cat"]
    finally:
        stop(process)


def test_download_makes_its_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--download DIR` is always a folder, made when missing: videos never overwrite each
    other in one file named DIR."""
    folder = tmp_path / "new" / "videos"
    argv = ["--fake", "--json", "generate", "A cat", "--model", "veo-3.1", "--count", "2"]
    assert main([*argv, "--download", str(folder)]) == 0
    files = sorted(folder.iterdir())
    assert len(files) == 2
    assert sorted(Path(r["file"]) for r in json_lines(capsys.readouterr().out)) == files
    (tmp_path / "plain").write_text("not a folder")
    assert main([*argv, "--download", str(tmp_path / "plain")]) == 2
    assert "--download: cannot make folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["template", ""], "TEMPLATE_ID"),
        (["template-info", ""], "ID"),
        (["assets", ""], "Q"),
    ],
)
def test_errors_name_the_argument_typed(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--fake", *argv]) == 2
    assert f"error: {named}: " in capsys.readouterr().err
