"""The ``ledger`` commands on a real ledger file, made by a client against FakePrismServer."""

from __future__ import annotations

import argparse
import asyncio
import functools
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis import asyncio as redis

from prism_async import InternalServerError, PollPolicy, PrismClient
from prism_async.cli import main
from prism_async.cli._context import Context
from prism_async.cli._main import build_parser
from prism_async.cli._registry import COMMANDS, EXIT_OK, command, group
from prism_async.ledger import RedisLedger, SQLiteLedger, Submission, SubmissionState
from prism_async.ledger._model import Owner
from tests.test_cli import ThreadedFake, json_lines

FAST = PollPolicy(initial_delay=0.05, interval=0.05, max_interval=0.1)

PROMPTS = {"clip/1": "A cat", "clip/2": "A dog", "clip/3": "A bird", "clip/4": "A fish"}
"""clip/1 is accepted (and downloaded); clip/2 got a 502 after the fake queued two videos;
clip/3 and clip/4 got a 502 before the fake did anything. The last three are ambiguous."""


def on_the_fake(fake: ThreadedFake, action: Callable[[], object]) -> None:
    """Run ``action`` on the fake's loop and wait until it has run."""

    async def act() -> None:
        action()

    asyncio.run_coroutine_threadsafe(act(), fake.loop).result(5)


@pytest.fixture(scope="module")
def fake() -> Iterator[ThreadedFake]:
    with ThreadedFake(generation_seconds=0.2) as threaded:
        yield threaded


@pytest.fixture(scope="module")
def built(fake: ThreadedFake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger file with the submissions of :data:`PROMPTS`, made once for the module."""
    folder = tmp_path_factory.mktemp("built")
    path = folder / "ledger.db"

    async def build() -> None:
        server = fake.server
        async with PrismClient(
            server.api_key, base_url=server.base_url, poll=FAST, ledger=SQLiteLedger(path)
        ) as prism:
            batch = await prism.generations.create(
                key="clip/1", prompt=PROMPTS["clip/1"], model_name="veo-3.1"
            )
            generation = await prism.wait_for_generation(batch.ids[0])
            await prism.generations.download(generation, folder)
            for key, count in (("clip/2", 2), ("clip/3", 1), ("clip/4", 1)):
                inject = functools.partial(
                    server.inject, "POST", "/api/generations", status=502, processed=key == "clip/2"
                )
                on_the_fake(fake, inject)
                with pytest.raises(InternalServerError):
                    await prism.generations.create(
                        key=key, prompt=PROMPTS[key], model_name="veo-3.1", count=count
                    )

    asyncio.run(build())
    return path


@pytest.fixture
def ledger(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh copy of the built ledger for one test; no API key in the environment."""
    monkeypatch.delenv("PRISM_API_KEY", raising=False)
    monkeypatch.delenv("PRISM_LEDGER", raising=False)
    copy = tmp_path / "ledger.db"
    shutil.copy(built, copy)
    return str(copy)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: its exit code, stdout and stderr (never a traceback)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def records(capsys: pytest.CaptureFixture[str], ledger: str, *args: str) -> list[dict[str, Any]]:
    code, out, _ = run(capsys, "--json", "ledger", "list", "--ledger", ledger, *args)
    assert code == 0
    return json_lines(out)


def states(capsys: pytest.CaptureFixture[str], ledger: str) -> dict[str, str]:
    return {r["key"]: r["state"] for r in records(capsys, ledger)}


def test_list_is_a_table_or_json_lines(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`ledger list` needs no API key: a table of every submission, --state filters, --json
    prints one object per submission with ISO times."""
    code, out, _ = run(capsys, "ledger", "list", "--ledger", ledger)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["key", "kind", "state", "attempt", "ids", "credits", "updated"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["clip/1", "clip/2", "clip/3", "clip/4"]
    assert rows["clip/1"].split()[1:3] == ["generation", "accepted"]
    assert rows["clip/1"].split()[4].startswith("gen_")
    assert "UTC" in rows["clip/1"]
    assert all(rows[k].split()[2] == "ambiguous" for k in ("clip/2", "clip/3", "clip/4"))

    code, out, _ = run(capsys, "ledger", "list", "--state", "ambiguous", "--ledger", ledger)
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["clip/2", "clip/3", "clip/4"]
    code, out, _ = run(capsys, "ledger", "list", "--state", "reconciled", "--ledger", ledger)
    assert (code, out.strip()) == (0, f"no reconciled submissions in {ledger}")

    (accepted,) = records(capsys, ledger, "--state", "accepted")
    assert accepted["key"] == "clip/1"
    assert accepted["request"]["prompt"] == "A cat"
    assert len(accepted["generation_ids"]) == 1
    assert accepted["credits_charged"] > 0
    assert datetime.fromisoformat(accepted["updated_at"]).tzinfo is not None
    assert len(records(capsys, ledger)) == 4


def test_show_prints_fields_and_generations(
    ledger: str, built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ledger show KEY`: the submission's fields, and each generation's recorded status and
    downloaded file; --json gives the same as one object."""
    code, out, _ = run(capsys, "ledger", "show", "clip/1", "--ledger", ledger)
    assert code == 0
    fields = dict(line.split(maxsplit=1) for line in out.splitlines()[:10])
    assert fields["state"] == "accepted"
    assert fields["request"] == "model_name='veo-3.1', prompt='A cat'"
    generation_id = fields["ids"]
    (row,) = [line for line in out.splitlines() if line.startswith(generation_id + " ")]
    assert row.split()[1] == "completed"
    assert str(built.parent / f"{generation_id}.mp4") in row
    assert "bytes" in row

    code, out, _ = run(capsys, "--json", "ledger", "show", "clip/1", "--ledger", ledger)
    (shown,) = json_lines(out)
    assert shown["generation_ids"] == [generation_id]
    (generation,) = shown["generations"]
    assert generation["status"] == "completed"
    assert Path(generation["path"]).stat().st_size == generation["size"]

    code, out, _ = run(capsys, "ledger", "show", "clip/2", "--ledger", ledger)
    assert code == 0
    assert "state    ambiguous" in out
    assert "error    InternalServerError" in out


def test_resolve_by_hand_both_ways(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`ledger resolve KEY --ids ...` reconciles it, `--not-sent` rejects it; list shows it."""
    code, out, _ = run(
        capsys, "ledger", "resolve", "clip/3", "--ids", "gen_a", "gen_b", "--ledger", ledger
    )
    assert code == 0
    assert out.strip() == "clip/3: reconciled with gen_a, gen_b (resolved by hand)"
    code, out, _ = run(capsys, "ledger", "resolve", "clip/4", "--not-sent", "--ledger", ledger)
    assert code == 0
    assert out.strip() == "clip/4: rejected (not sent); it may be sent again"
    assert states(capsys, ledger) == {
        "clip/1": "accepted",
        "clip/2": "ambiguous",
        "clip/3": "reconciled",
        "clip/4": "rejected",
    }
    (resolved,) = records(capsys, ledger, "--state", "reconciled")
    assert resolved["generation_ids"] == ["gen_a", "gen_b"]
    code, out, _ = run(
        capsys, "--json", "ledger", "resolve", "clip/2", "--not-sent", "--ledger", ledger
    )
    assert json_lines(out)[0]["state"] == "rejected"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["resolve", "clip/1", "--not-sent"], "KEY: 'clip/1' is accepted, not ambiguous"),
        (["resolve", "nope", "--ids", "gen_a"], "KEY: no submission has the key 'nope'"),
        (["resolve", "clip/2", "--ids", " "], "--ids: must be non-empty generation ids"),
        (["resolve", "clip/2", "--ids", "g", "--not-sent"], "--not-sent: not allowed with"),
        (["resolve", "clip/2"], "one of the arguments --ids --not-sent is required"),
        (["show", "nope"], "KEY: no submission has the key 'nope'"),
        (["list", "--state", "lost"], "argument --state: invalid choice: 'lost'"),
    ],
)
def test_bad_input_exits_2_naming_the_option(
    argv: list[str], message: str, ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input is exit 2 with the argument or option it is about, and the reason."""
    code, _, err = run(capsys, "ledger", *argv, "--ledger", ledger)
    assert code == 2
    assert message in err
    assert states(capsys, ledger)["clip/2"] == "ambiguous"


def test_reconcile_one_key_against_the_api(
    fake: ThreadedFake, ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ledger reconcile KEY` finds the two videos the fake queued behind its 502."""
    queued = sorted(g.id for g in fake.server.generations.values() if g.prompt == "A dog")
    assert len(queued) == 2
    code, out, _ = run(capsys, *fake.argv("ledger", "reconcile", "clip/2", "--ledger", ledger))
    assert code == 0
    head, _, ids = out.strip().partition(": reconciled: ")
    assert head == "clip/2"
    assert sorted(ids.split(", ")) == queued  # in creation order (same millisecond: by id)
    (reconciled,) = records(capsys, ledger, "--state", "reconciled")
    assert sorted(reconciled["generation_ids"]) == queued
    code, out, _ = run(capsys, *fake.argv("ledger", "reconcile", "clip/1", "--ledger", ledger))
    assert (code, out.strip()) == (0, "clip/1: accepted, nothing to reconcile")


def test_reconcile_every_ambiguous_key(
    fake: ThreadedFake, ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without KEY every ambiguous key and every dead `sending` one is reconciled (a live one
    is left alone); exit 1 while one stays ambiguous, with the reason."""

    async def add_sending() -> None:
        now = datetime.now(UTC)
        request = {"prompt": "A horse", "model_name": "veo-3.1", "count": 1}
        async with SQLiteLedger(ledger) as db:
            leases = {
                "dead": ("elsewhere:1:1", now - timedelta(seconds=1)),
                "still-sending": (str(Owner.me()), now + timedelta(seconds=60)),
            }
            for key, (owner, expires) in leases.items():
                sending = Submission(
                    key, "generation", SubmissionState.SENDING, 1, "fp", now, now,
                    sent_at=now, request=request, lease_owner=owner, lease_expires=expires,
                )  # fmt: skip
                assert await db.insert(sending)

    asyncio.run(add_sending())
    code, out, _ = run(capsys, *fake.argv("ledger", "reconcile", "--ledger", ledger))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("clip/2: reconciled: gen_")
    assert lines[1].startswith("clip/3: still ambiguous: reconciliation found 0 of 1 ")
    assert lines[2].startswith("clip/4: still ambiguous: ")
    assert lines[3].startswith("dead: still ambiguous: ")
    assert lines[4] == "1 settled, 3 still ambiguous"
    assert "still-sending" not in out

    code, out, _ = run(
        capsys, *fake.argv("ledger", "reconcile", "still-sending", "--ledger", ledger)
    )
    assert code == 1
    assert out.startswith("still-sending: being sent by a live process")

    for key in ("clip/3", "clip/4", "dead"):
        assert run(capsys, "ledger", "resolve", key, "--not-sent", "--ledger", ledger)[0] == 0
    code, out, _ = run(capsys, *fake.argv("--json", "ledger", "reconcile", "--ledger", ledger))
    assert (code, out) == (0, "")
    code, out, _ = run(capsys, *fake.argv("ledger", "reconcile", "--ledger", ledger))
    assert (code, out.strip()) == (0, f"nothing to reconcile: no ambiguous submissions in {ledger}")


def test_reconcile_json_and_fake(
    fake: ThreadedFake, ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one object per key; --fake reconciles against a fresh fake (which
    queued nothing: still ambiguous); without an API key reconcile is exit 2."""
    code, out, _ = run(capsys, "--fake", "ledger", "reconcile", "clip/2", "--ledger", ledger)
    assert code == 1
    assert out.startswith("clip/2: still ambiguous: reconciliation found 0 of 2")
    code, out, err = run(capsys, "ledger", "reconcile", "--ledger", ledger)
    assert code == 2
    assert "--api-key" in err
    code, out, _ = run(capsys, *fake.argv("--json", "ledger", "reconcile", "--ledger", ledger))
    assert code == 1
    assert [(r["key"], r["state"]) for r in json_lines(out)] == [
        ("clip/2", "reconciled"),
        ("clip/3", "ambiguous"),
        ("clip/4", "ambiguous"),
    ]
    code, _, err = run(capsys, *fake.argv("ledger", "reconcile", "nope", "--ledger", ledger))
    assert code == 2
    assert "KEY: no submission has the key 'nope'" in err


@pytest.mark.parametrize(
    "argv",
    [["list"], ["show", "clip/1"], ["resolve", "clip/2", "--not-sent"], ["reconcile"]],
)
def test_a_missing_ledger_is_exit_2_and_not_created(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every subcommand refuses a missing ledger file (and does not make an empty one)."""
    missing = tmp_path / "missing.db"
    code, _, err = run(capsys, "--fake", "ledger", *argv, "--ledger", str(missing))
    assert code == 2
    assert f"--ledger: no ledger at {missing}" in err
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_ledger_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a SQLite database is bad input, not a crash."""
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    code, _, err = run(capsys, "ledger", "list", "--ledger", str(text))
    assert code == 2
    assert f"--ledger: cannot use {text} as a ledger" in err


def test_prism_ledger_is_the_default(
    ledger: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --ledger, $PRISM_LEDGER names the file, then prism-ledger.db in the cwd."""
    monkeypatch.setenv("PRISM_LEDGER", ledger)
    assert len(json_lines(run(capsys, "--json", "ledger", "list")[1])) == 4
    monkeypatch.delenv("PRISM_LEDGER")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "ledger", "show", "clip/1")
    assert code == 2
    assert "no ledger at prism-ledger.db" in err
    shutil.copy(ledger, tmp_path / "prism-ledger.db")
    code, out, _ = run(capsys, "ledger", "show", "clip/1")
    assert code == 0
    assert "state    accepted" in out


def test_a_group_is_one_declaration_and_one_per_subcommand() -> None:
    """`ledger` is a group: in the parser with its subcommands, each declared once."""
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(subparsers.choices) == list(COMMANDS)
    ledger = COMMANDS["ledger"]
    assert ledger.handler is None
    assert list(ledger.subcommands) == [
        "list",
        "show",
        "resolve",
        "reconcile",
        "dead-letters",
        "spend",
        "budget",
    ]
    assert ledger.subcommands["reconcile"].full_name == "ledger reconcile"
    args = parser.parse_args(["ledger", "show", "k", "--ledger", "x.db"])
    assert (args.command, args.ledger_subcommand, args.key, args.ledger) == (
        "ledger",
        "show",
        "k",
        "x.db",
    )

    async def handler(ctx: Context) -> int:
        return EXIT_OK

    with pytest.raises(RuntimeError, match="'ledger list' is declared twice"):
        command("list", help="again", group="ledger")(handler)
    with pytest.raises(RuntimeError, match="group 'nope' is not declared"):
        command("list", help="lost", group="nope")(handler)
    with pytest.raises(RuntimeError, match="group 'status' is not declared"):
        command("list", help="not a group", group="status")(handler)
    with pytest.raises(RuntimeError, match="'ledger' is declared twice"):
        group("ledger", help="again")
    assert ledger.subcommands["list"].handler is not handler


def test_a_redis_ledger_is_listed_shown_and_resolved(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--ledger redis://...` reads a fleet's RedisLedger like a file (no API key needed)."""
    url = redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own, emptied first
    now = datetime.now(UTC)
    row = Submission(
        key="fleet/1",
        kind="generation",
        state=SubmissionState.AMBIGUOUS,
        attempt=1,
        fingerprint="f" * 64,
        created_at=now,
        updated_at=now,
        request={"prompt": "A cat", "model_name": "veo-3.1", "count": 1},
    )

    async def seed() -> None:
        ledger = RedisLedger(url)
        async with redis.Redis.from_url(url) as client:
            await client.flushdb()
        await ledger.insert(row)
        await ledger.aclose()

    asyncio.run(seed())
    listed = json_lines(run(capsys, "--json", "ledger", "list", "--ledger", url)[1])
    assert [(r["key"], r["state"]) for r in listed] == [("fleet/1", "ambiguous")]
    code, out, _ = run(capsys, "ledger", "resolve", "fleet/1", "--not-sent", "--ledger", url)
    assert code == 0
    code, out, _ = run(capsys, "ledger", "show", "fleet/1", "--ledger", url)
    assert code == 0
    assert "rejected" in out
