"""The ``ledger`` commands: ``list``, ``show``, ``resolve`` and ``reconcile`` the durable
submissions of a ledger file (``--ledger PATH``, default ``$PRISM_LEDGER``, then
``prism-ledger.db``).

``list``, ``show`` and ``resolve`` only read and write the ledger file: no API key, no network.
``reconcile`` looks in the account's history through the API (``prism.reconcile``). None of
them creates a ledger: a missing file is exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import to_dict
from .._errors import SubmissionInFlightError
from ..ledger import GenerationRecord, Ledger, Submission, SubmissionState
from ..ledger._model import lease_is_alive
from ._context import Context
from ._ledger_file import (
    DEFAULT_LEDGER,
    ledger_option,
    ledger_path,
    open_ledger,
    readable_ledger,
)
from ._registry import EXIT_FAILED, EXIT_OK, UsageError, command, group

__all__ = ["DEFAULT_LEDGER", "ledger_path"]


def _existing(args: argparse.Namespace) -> str:
    """The ledger ``--ledger`` names; a file must exist (reading never creates a ledger)."""
    path = ledger_path(args)
    open_ledger(path, must_exist=True)  # checks only: nothing is opened before first use
    return path


@contextlib.asynccontextmanager
async def _open(path: str) -> AsyncIterator[Ledger]:
    """The ledger at ``path`` (a file or a redis URL), closed afterwards."""
    with readable_ledger(path):
        async with open_ledger(path, must_exist=True) as ledger:
            yield ledger


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _credits(credits: float | None) -> str:
    return "" if credits is None else f"{credits:g}"


group(
    "ledger",
    help="durable submissions (list, show, resolve, reconcile) and spend (spend, budget)",
    options=ledger_option,
)


def _list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", choices=SubmissionState.ALL, help="only this state")


@command(
    "list",
    help="list the submissions of a ledger",
    options=_list_options,
    client="none",
    group="ledger",
)
async def ledger_list(ctx: Context) -> int:
    """Every submission (of one state), as a table or one JSON object each."""
    path = _existing(ctx.args)
    rows = []
    async with _open(path) as ledger:
        async for submission in ledger.list(ctx.args.state):
            ctx.ui.emit(to_dict(submission))
            rows.append(
                [
                    submission.key,
                    submission.kind,
                    submission.state,
                    submission.attempt,
                    ", ".join(submission.generation_ids),
                    _credits(submission.credits_charged),
                    _when(submission.updated_at),
                ]
            )
    if not rows:
        state = f" {ctx.args.state}" if ctx.args.state else ""
        ctx.ui.print(f"no{state} submissions in {path}")
        return EXIT_OK
    columns = ["key", "kind", "state", "attempt", "ids", "credits", "updated"]
    ctx.ui.table("Submissions", columns, rows)
    return EXIT_OK


def _key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY", help="the submission's key")


@command(
    "show",
    help="show one submission and its generations",
    options=_key_option,
    option_names={"key": "KEY"},
    client="none",
    group="ledger",
)
async def ledger_show(ctx: Context) -> int:
    """A submission's fields, then per generation id its recorded status and file."""
    path, key = _existing(ctx.args), ctx.args.key
    async with _open(path) as ledger:
        submission = await ledger.get(key)
        if submission is None:
            raise UsageError(f"KEY: no submission has the key {key!r} in {path}")
        records = [
            await ledger.generation(i) or GenerationRecord(i) for i in submission.generation_ids
        ]
    ctx.ui.emit({**to_dict(submission), "generations": to_dict(records)})
    for name, value in _fields(submission):
        ctx.ui.print(f"{name:<9}{value}")
    if records:
        rows = [[r.id, r.status or "unknown", r.error, *_file(r)] for r in records]
        ctx.ui.table("Generations", ["id", "status", "error", "file", "size"], rows)
    return EXIT_OK


def _fields(submission: Submission) -> list[tuple[str, object]]:
    """What ``show`` prints of a submission, by label."""
    s = submission
    shown = {k: v for k, v in s.request.items() if v is not None and k != "shape"}
    request = ", ".join(f"{k}={v!r}" for k, v in sorted(shown.items()))
    fields: list[tuple[str, object]] = [
        ("key", s.key),
        ("kind", s.kind),
        ("state", s.state),
        ("attempt", s.attempt),
        ("request", request or "-"),
        ("ids", ", ".join(s.generation_ids) or "-"),
        ("credits", _credits(s.credits_charged) or "-"),
        ("created", _when(s.created_at)),
        ("sent", _when(s.sent_at)),
        ("updated", _when(s.updated_at)),
    ]
    if s.lease_owner is not None:
        fields.append(("lease", f"{s.lease_owner} until {_when(s.lease_expires)}"))
    if s.error is not None:
        fields.append(("error", s.error))
    return fields


def _file(record: GenerationRecord) -> tuple[str, str]:
    """A generation's downloaded file (marked when it is no longer there) and its size."""
    if record.path is None:
        return "", ""
    missing = "" if Path(record.path).is_file() else " (missing)"
    return record.path + missing, "" if record.size is None else f"{record.size} bytes"


def _resolve_options(parser: argparse.ArgumentParser) -> None:
    _key_option(parser)
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--ids", nargs="+", metavar="ID", help="the generations it queued (it is reconciled)"
    )
    how.add_argument(
        "--not-sent",
        action="store_true",
        help="nothing was queued (it is rejected; the key may be sent again)",
    )


@command(
    "resolve",
    help="settle an ambiguous submission by hand",
    options=_resolve_options,
    option_names={"key": "KEY", "generation_ids": "--ids", "not_sent": "--not-sent"},
    client="none",
    group="ledger",
)
async def ledger_resolve(ctx: Context) -> int:
    """Record what an ambiguous submission queued (``--ids``), or that it queued nothing."""
    args = ctx.args
    async with _open(_existing(args)) as ledger:
        if args.ids is not None:
            submission = await ledger.resolve(args.key, generation_ids=args.ids)
        else:
            submission = await ledger.resolve(args.key, not_sent=True)
    ctx.ui.emit(to_dict(submission))
    if submission.state == SubmissionState.RECONCILED:
        ids = ", ".join(submission.generation_ids)
        ctx.ui.print(f"{submission.key}: reconciled with {ids} (resolved by hand)")
    else:
        ctx.ui.print(f"{submission.key}: {submission.state} (not sent); it may be sent again")
    return EXIT_OK


def _reconcile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "key", metavar="KEY", nargs="?", help="one key (default: every ambiguous one)"
    )


def _reconcile_client(args: argparse.Namespace) -> Mapping[str, Any]:
    return {"ledger": open_ledger(ledger_path(args), must_exist=True)}


@command(
    "reconcile",
    help="find what ambiguous submissions queued, in the account's history",
    options=_reconcile_options,
    option_names={"key": "KEY"},
    client_options=_reconcile_client,
    group="ledger",
)
async def ledger_reconcile(ctx: Context) -> int:
    """Reconcile one key, or every ambiguous one (and every ``sending`` one whose process
    died); print each outcome. Exit 1 when one is still unsettled."""
    prism, path = ctx.prism, ledger_path(ctx.args)
    ledger = prism.ledger
    assert ledger is not None  # _reconcile_client gave the client one
    with readable_ledger(path):
        keys = [ctx.args.key] if ctx.args.key is not None else await _unsettled(ledger)
        if not keys:
            ctx.ui.print(f"nothing to reconcile: no ambiguous submissions in {path}")
            return EXIT_OK
        unsettled = 0
        for key in keys:
            try:
                submission: Submission | None = await prism.reconcile(key)
            except SubmissionInFlightError:
                submission = await ledger.get(key)
            if submission is None:  # pragma: no cover - rows are never deleted
                continue
            ctx.ui.emit(to_dict(submission))
            ctx.ui.print(_outcome(submission))
            unsettled += submission.state in (SubmissionState.AMBIGUOUS, SubmissionState.SENDING)
    if len(keys) > 1:
        ctx.ui.print(f"{len(keys) - unsettled} settled, {unsettled} still ambiguous")
    return EXIT_FAILED if unsettled else EXIT_OK


async def _unsettled(ledger: Ledger) -> list[str]:
    """The keys to reconcile: ambiguous ones, and ``sending`` ones whose lease is dead."""
    now = datetime.now(UTC)
    keys = [s.key async for s in ledger.list(SubmissionState.AMBIGUOUS)]
    async for submission in ledger.list(SubmissionState.SENDING):
        if not lease_is_alive(submission, now):
            keys.append(submission.key)
    return keys


def _outcome(submission: Submission) -> str:
    """One line saying what became of a submission that was reconciled."""
    key, state = submission.key, submission.state
    if state == SubmissionState.RECONCILED:
        return f"{key}: reconciled: {', '.join(submission.generation_ids)}"
    if state == SubmissionState.AMBIGUOUS:
        return f"{key}: still ambiguous: {submission.error or 'no reason recorded'}"
    if state == SubmissionState.SENDING:
        return f"{key}: being sent by a live process; reconcile it once that process is done"
    return f"{key}: {state}, nothing to reconcile"
