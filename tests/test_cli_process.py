"""The command line as real processes meet it: an optional package missing, stdout closed by
the program reading it, and ``run`` stopped by Ctrl-C or SIGTERM with paid requests in flight.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from prism_async.cli import main
from prism_async.cli._context import Context
from prism_async.cli._registry import COMMANDS, EXIT_OK, command
from tests.conftest import QUICK_CLI
from tests.test_cli import ThreadedFake, json_lines

CLI = [sys.executable, "-m", "prism_async"]

BLOCKING = """
import runpy, sys

BLOCKED = set(sys.argv[1].split(","))


class Missing:
    '''An import system where the BLOCKED packages are not installed.'''

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Missing())
sys.argv = ["prism-async", *sys.argv[2:]]
runpy.run_module("prism_async", run_name="__main__", alter_sys=True)
"""
"""``python -c BLOCKING a,b ARGS...``: ``python -m prism_async ARGS...`` without packages a, b."""


def environment(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    return {**clean, "PYTHONUNBUFFERED": "1", **extra}


def without(packages: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKING, packages, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=environment(),
    )


# -- a missing extra says which to install --------------------------------------------------------

REDIS = "redis://127.0.0.1:9/0"


@pytest.mark.parametrize(
    ("packages", "argv", "message"),
    [
        (
            "redis",
            ["ledger", "list", "--ledger", REDIS],
            "--ledger redis://...: needs the 'redis' package, not installed: "
            "pip install 'prism-async[redis]'",
        ),
        (
            "redis",
            ["--fake", "run", "batch.jsonl", "--ledger", REDIS],
            "--ledger redis://...: needs the 'redis' package, not installed: "
            "pip install 'prism-async[redis]'",
        ),
        (
            "taskiq",
            ["--fake", "track", "--ledger", REDIS, "--broker", REDIS],
            "track: needs the 'taskiq' package, not installed: pip install 'prism-async[taskiq]'",
        ),
        (
            "taskiq_redis",
            ["--fake", "track", "--ledger", REDIS, "--broker", REDIS],
            "track: needs the 'taskiq_redis' package, not installed: "
            "pip install 'prism-async[taskiq]'",
        ),
        (
            "redis",
            ["--fake", "track", "--ledger", REDIS, "--broker", REDIS],
            "track: needs the 'redis' package, not installed: pip install 'prism-async[taskiq]'",
        ),
    ],
)
def test_a_missing_extra_says_which_to_install(
    packages: str, argv: list[str], message: str, tmp_path: Path
) -> None:
    """In a process where the package cannot be imported: exit 2, one line naming the extra,
    no traceback; nothing else on stdout or stderr."""
    (tmp_path / "batch.jsonl").write_text(
        json.dumps({"prompt": "A cat", "model_name": "veo-3.1"}) + "\n", encoding="utf-8"
    )
    result = without(packages, *argv, cwd=tmp_path)
    assert result.stderr == f"prism-async: error: {message}\n"
    assert result.returncode == 2
    assert result.stdout == ""


@pytest.fixture
def needs_redis() -> Iterator[None]:
    """A command that imports redis in its handler, as a future one might, removed after."""

    @command("needs-redis", help="import redis", client="none")
    async def needs_redis(ctx: Context) -> int:
        import redis.asyncio  # noqa: F401

        return EXIT_OK

    try:
        yield
    finally:
        del COMMANDS["needs-redis"]


@pytest.mark.usefixtures("needs_redis")
def test_any_missing_extra_a_command_reaches_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An import of an extra's package no command wrapped still names the extra (``main``);
    another ImportError is a bug: exit 1."""
    assert main(["needs-redis"]) == 0
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis: ModuleNotFoundError
    assert main(["needs-redis"]) == 2
    assert capsys.readouterr().err == (
        "prism-async: error: needs-redis: needs the 'redis' package, not installed: "
        "pip install 'prism-async[redis]'\n"
    )


# -- a closed pipe ends quietly ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["templates", "--fake"],
        ["templates", "--fake", "--json"],
        ["--fake", "--json", "generate", "A cat", "--model", "veo-3.1", "--wait"],
        ["--fake", "run", "batch.jsonl", "--ledger", "l.db"],
    ],
)
def test_stdout_closed_by_its_reader_ends_quietly(argv: list[str], tmp_path: Path) -> None:
    """stdout is a pipe whose reader has gone before the first line: exit 141 (as SIGPIPE
    would give), nothing at all on stderr."""
    (tmp_path / "batch.jsonl").write_text(
        json.dumps({"prompt": "A cat", "model_name": "veo-3.1"}) + "\n", encoding="utf-8"
    )
    read, write = os.pipe()
    os.close(read)  # the reader is gone
    try:
        result = subprocess.run(
            [*QUICK_CLI, *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=environment(),
        )
    finally:
        os.close(write)
    assert result.stderr == ""
    assert result.returncode == 141


def test_a_pipe_to_head_ends_quietly(tmp_path: Path) -> None:
    """``prism-async --fake --json templates | head -1`` in a shell: one line, no stderr."""
    command_line = f"{shlex.join(CLI)} --fake --json templates | head -1"
    for _ in range(3):
        result = subprocess.run(
            ["bash", "-c", command_line],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=environment(),
        )
        assert result.returncode == 0
        assert result.stderr == ""
        assert len(json_lines(result.stdout)) == 1


# -- Ctrl-C or SIGTERM during a run -----------------------------------------------------------


class Lines:
    """The lines of a child's stream as they come (a thread reads them)."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, done: Callable[[list[str]], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                raise AssertionError(f"the stream ended first:\n{''.join(self.seen)}")
            self.seen.append(line)


def states(lines: list[str], keys: list[str]) -> dict[str, str]:
    """Each key's last state, from the plain lines of ``run`` (``KEY  STATE  ...``)."""
    last: dict[str, str] = {}
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] in keys:
            last[words[0]] = words[1]
    return last


def on_the_fake(fake: ThreadedFake, action: Callable[[], Any]) -> None:
    done = threading.Event()

    def act() -> None:
        action()
        done.set()

    fake.call(act)
    assert done.wait(5)


def paid_posts(fake: ThreadedFake) -> int:
    return len(fake.server.requests_to("POST", "/api/generations"))


def write_herons(folder: Path, count: int) -> tuple[str, list[str]]:
    keys = [f"heron-{i}" for i in range(count)]
    requests = [
        {"prompt": f"A slow heron {folder.name} {i}", "model_name": "veo-3.1", "key": key}
        for i, key in enumerate(keys)
    ]
    (folder / "herons.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in requests), encoding="utf-8"
    )
    return "herons.jsonl", keys


def rerun_line(err: str) -> str:
    """The command the stopped run printed to settle what it had in flight."""
    lines = err.splitlines()
    (index,) = [i for i, line in enumerate(lines) if "running the same command again" in line]
    return lines[index + 1].strip()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_names_the_paid_requests_in_flight_and_how_to_settle_them(
    signum: signal.Signals, tmp_path: Path
) -> None:
    """Two keys accepted (their videos still generating) and one whose POST the fake queued
    but has not answered yet: the signal stops the run with exit 130, no traceback, every key
    named on stderr with its state, and the command that settles them; the API key typed is
    not printed. Run again (in a shell, the key from the environment) once the videos are
    done, it sends nothing and finishes every key."""
    with ThreadedFake(generation_seconds=300) as fake:
        server = fake.server
        file, keys = write_herons(tmp_path, 3)
        on_the_fake(
            fake,
            lambda: server.inject("POST", "/api/generations", delay=120, processed=True),
        )
        argv = [*QUICK_CLI, "--api-key", server.api_key, "--base-url", server.base_url]
        argv += ["run", file]
        argv += ["--ledger", "l.db"]
        with subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=environment(),
        ) as process:
            assert process.stdout is not None
            assert process.stderr is not None
            out = Lines(process.stdout)
            in_flight = ["sending", "waiting", "waiting"]
            out.until(lambda seen: sorted(states(seen, keys).values()) == in_flight)
            held = next(k for k, s in states(out.seen, keys).items() if s == "sending")
            process.send_signal(signum)
            assert process.wait(30) == 130
            err = process.stderr.read()
        assert "Traceback" not in err
        assert server.api_key not in err
        lines = err.splitlines()
        assert lines[0] == "prism-async: the run stopped; 3 paid requests were in flight:"
        named = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:4]}
        assert set(named) == set(keys)
        assert named[held] == "ambiguous: may be queued and charged (ids unknown)"
        for key in set(keys) - {held}:
            assert named[key].startswith("accepted: gen_")
            assert named[key].endswith("(still to wait for or download)")
        rerun = rerun_line(err)
        assert rerun == (
            f'prism-async --api-key "$PRISM_API_KEY" --base-url {server.base_url} run {file} '
            "--ledger l.db"
        )
        assert "the API key is not printed: set PRISM_API_KEY first" in err
        assert lines[-1] == (
            "prism-async: terminated (SIGTERM)"
            if signum == signal.SIGTERM
            else "prism-async: interrupted"
        )

        on_the_fake(fake, lambda: server.advance(600))  # every video is done now
        sent = paid_posts(fake)
        again = subprocess.run(
            ["bash", "-c", rerun.replace("prism-async", shlex.join(QUICK_CLI), 1) + " --json"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=environment(PRISM_API_KEY=server.api_key),
        )
        assert again.returncode == 0, again.stderr
        assert sorted(r["key"] for r in json_lines(again.stdout)) == keys
        assert {r["state"] for r in json_lines(again.stdout)} == {"completed"}
        assert paid_posts(fake) == sent  # nothing was sent twice
        assert again.stderr == ""
