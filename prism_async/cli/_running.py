"""``prism-async run FILE.jsonl``: a resumable bulk run (``prism.run``) with a live table.

Every line of the file is checked first (exit 2 naming the line and the field); then each
request is submitted under its ledger key (its ``key`` or ``f"{run_id}/{digest}"``), waited for
and downloaded, and its row of the live table moves from ``pending`` through ``sending`` and
``waiting`` to how it ended. Running the same command again resumes: accepted keys are not
sent again, ambiguous ones are reconciled first, downloaded videos are not fetched again.
``--json`` prints one object per request as it ends. Stopped early (Ctrl-C or SIGTERM: exit
130), it prints on stderr the paid requests in flight and the command that settles them
(``_in_flight.py``).

Exit codes: 0 every request ``downloaded`` (or ``completed`` without ``--download``); 1 one
``failed``, is ``ambiguous``, was ``rejected`` or ``skipped``, or its download failed; 4 one
``timed_out`` and none of those.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..ledger import Ledger, Submission, SubmissionState
from ..runs import RunResult, run_credits
from ._batch import BatchLine, default_run_id, load_batch, run_keys
from ._context import Context
from ._in_flight import reporting_in_flight, rerun_command
from ._ledger_file import ledger_option, ledger_path, open_ledger, readable_ledger
from ._registry import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, UsageError, command
from ._ui import RowUpdate

__all__ = ["RunReport", "run", "run_batch"]

STATES = (
    "downloaded",
    "completed",
    "failed",
    "timed_out",
    "ambiguous",
    "rejected",
    "skipped",
    "conflict",
)
"""How a request of a run can end (``RunResult.state``), in the summary's order."""

_STYLES = {
    "pending": "dim",
    "sending": "cyan",
    "waiting": "cyan",
    "downloaded": "green",
    "completed": "green",
    "failed": "red",
    "rejected": "red",
    "ambiguous": "magenta",
    "timed_out": "yellow",
    "skipped": "yellow",
    "conflict": "red",
}
_COLUMNS = ("key", "state", "generations", "files / error")
_FOLLOW_SECONDS = 0.3
"""How often the live table reads the ledger for requests still in progress."""


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        metavar="FILE.jsonl",
        help="one request per line: the fields of GenerationRequest or TemplateRequest",
    )
    ledger_option(parser, note="; made when missing")
    parser.add_argument(
        "--run-id",
        metavar="ID",
        help="names the run: a request's key is ID/<digest of the request> unless its line "
        "gives a key (default: FILE's name without .jsonl, never its folder, so a re-run "
        "from anywhere resumes)",
    )
    parser.add_argument("--download", metavar="DIR", help="download the videos into DIR")
    parser.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="POSTs in flight (default 8)"
    )
    parser.add_argument(
        "--max-credits",
        type=float,
        metavar="N",
        help="the most the run's keys may be charged in all, re-runs included",
    )
    parser.add_argument(
        "--reconcile-window",
        type=float,
        metavar="SECONDS",
        help="how long an ambiguous key (its answer lost) waits for its videos to show up in "
        "the account's history before it counts as never queued and is sent again (default "
        "1800: longer than the longest generation)",
    )


def _run_client(args: argparse.Namespace) -> Mapping[str, Any]:
    window = args.reconcile_window
    if window is not None and not window > 0:
        raise UsageError("--reconcile-window: must be more than 0 seconds")
    ledger = open_ledger(ledger_path(args), must_exist=False)
    if window is not None:
        ledger.configure_reconciliation(window=window)
    return {"ledger": ledger}


@command(
    "run",
    help="submit, wait for and download a JSONL file of requests (re-running resumes)",
    options=_run_options,
    option_names={
        "requests": "FILE.jsonl",
        "run_id": "--run-id",
        "download_to": "--download",
        "concurrency": "--concurrency",
        "max_credits": "--max-credits",
        "reconcile_window": "--reconcile-window",
        "ledger": "--ledger",
    },
    paid=True,
    client_options=_run_client,
)
async def run(ctx: Context) -> int:
    """Check every line, then run the file's requests durably with a live table."""
    args = ctx.args
    batch = load_batch(args.file)
    run_id = default_run_id(args.file) if args.run_id is None else args.run_id
    if not run_id.strip():
        raise UsageError("--run-id: must not be empty")
    if args.concurrency < 1:
        raise UsageError("--concurrency: must be at least 1")
    if args.max_credits is not None and not args.max_credits >= 0:
        raise UsageError("--max-credits: must be 0 or more")
    assert ctx.prism.ledger is not None  # the command's client_options gave it one
    path = ledger_path(args)
    with readable_ledger(path):
        keys = await run_keys(args.file, batch, run_id, ctx.prism.ledger)
        report = await run_batch(
            ctx,
            batch,
            keys,
            run_id=run_id,
            source=args.file,
            ledger_label=path,
            download=args.download,
            concurrency=args.concurrency,
            max_credits=args.max_credits,
            rerun=rerun_command(args),
        )
    return report.exit_code


@attrs.frozen
class RunReport:
    """What one invocation of a run did."""

    results: tuple[RunResult, ...]
    """One per request, in the order they ended."""
    sent: int
    """Submissions this invocation sent (0 for a re-run of a finished run)."""
    credits: float
    """What the run's keys were charged in all (re-runs included), from the ledger; a
    reconciled or hand-resolved key at the price seen for the same request shape."""
    at_stake: float = 0.0
    """What its ambiguous keys would add if they were queued (at the same prices)."""

    @property
    def exit_code(self) -> int:
        """0 all downloaded/completed; 1 any failed, ambiguous, rejected, skipped or not
        downloaded; else 4 any timed out."""
        if any(_failed(result) for result in self.results):
            return EXIT_FAILED
        if any(result.state == "timed_out" for result in self.results):
            return EXIT_TIMEOUT
        return EXIT_OK


def _failed(result: RunResult) -> bool:
    if result.state == "completed":
        return result.error is not None  # asked to download, and the download failed
    return result.state not in ("downloaded", "timed_out")


async def run_batch(
    ctx: Context,
    batch: Sequence[BatchLine],
    keys: Sequence[str],
    *,
    run_id: str,
    source: str,
    ledger_label: str,
    download: str | None,
    concurrency: int = 8,
    max_credits: float | None = None,
    rerun: str | None = None,
) -> RunReport:
    """Run ``batch`` under ``keys`` on ``ctx.prism`` (which has a ledger) with the live table,
    one JSON object per result, a summary and, for ambiguous keys, how to settle them.
    Stopped early (Ctrl-C, SIGTERM), it prints the paid requests in flight and ``rerun``, the
    command that settles them."""
    ui, prism = ctx.ui, ctx.prism
    ledger = prism.ledger
    assert ledger is not None  # the command's client_options gave it one
    lines = dict(zip(keys, (item.line for item in batch), strict=True))
    ui.print(f"run {run_id}: {_requests(len(batch))} from {source}; ledger {ledger_label}")
    before = {key: await ledger.get(key) for key in keys}
    after: dict[str, Submission | None] = {}
    results: list[RunResult] = []
    rows = {key: _progress(submission) for key, submission in before.items()}
    live = ui.live_rows(f"Run {run_id}", _COLUMNS, rows, styles=_STYLES)
    async with reporting_in_flight(live, ledger, keys, after, rerun) as update:
        follow = None
        if not ui.json_mode:
            follow = asyncio.create_task(_follow(ledger, keys, after, update))
        try:
            requests = [item.request for item in batch]
            running = prism.run(
                requests,
                run_id=run_id,
                download_to=download,
                concurrency=concurrency,
                max_credits=max_credits,
                timeout=ctx.args.timeout,
            )
            async with contextlib.aclosing(running) as outcomes:
                async for result in outcomes:
                    submission = after[result.key] = await ledger.get(result.key)
                    if result.state == "conflict":  # the row is another request's
                        submission = None
                    results.append(result)
                    update(result.key, _final_cells(result, submission), _mark(result))
                    ui.emit(_record(run_id, lines[result.key], result, submission))
        finally:
            if follow is not None:
                follow.cancel()
                await asyncio.gather(follow, return_exceptions=True)
    charged, at_stake = await run_credits(ledger, [item.request for item in batch], run_id)
    report = RunReport(
        tuple(results),
        sent=sum(_attempt(after.get(key)) > _attempt(before[key]) for key in keys),
        credits=charged,
        at_stake=at_stake,
    )
    _summarise(ctx, report, run_id, ledger_label)
    return report


async def _follow(
    ledger: Ledger, keys: Sequence[str], finished: Mapping[str, object], update: RowUpdate
) -> None:
    """Move the rows of requests still in progress along, from what the ledger records."""
    shown: dict[str, list[str]] = {}  # what this task last showed (live_rows skips repeats)
    while True:
        await asyncio.sleep(_FOLLOW_SECONDS)
        for key in keys:
            if key in finished:
                continue
            cells = _progress(await ledger.get(key))
            if key not in finished and cells != shown.get(key):  # it may have ended meanwhile
                shown[key] = cells
                update(key, cells)


def _progress(submission: Submission | None) -> list[str]:
    """A row's cells while its request is in progress."""
    if submission is None:
        return ["pending", "", ""]
    ids = ", ".join(submission.generation_ids)
    if submission.done:
        return ["waiting", ids, ""]
    if submission.state == SubmissionState.SENDING:
        return ["sending", "", ""]
    if submission.state == SubmissionState.AMBIGUOUS:
        return ["ambiguous", "", ""]
    return ["pending", "", ""]  # rejected before: it is sent again


def _ids(result: RunResult, submission: Submission | None) -> list[str]:
    if submission is not None and submission.done:
        return list(submission.generation_ids)
    return [generation.id for generation in result.generations]


def _error(result: RunResult) -> str | None:
    if result.error is not None:
        return str(result.error) or type(result.error).__name__
    if result.state == "skipped":
        return "not submitted: --max-credits reached or credits ran out"
    return None


def _final_cells(result: RunResult, submission: Submission | None) -> list[str]:
    detail = ", ".join(str(path) for path in result.paths)
    error = _error(result)
    if error is not None:
        detail = f"{detail}; {error}" if detail else error
    return [result.state, ", ".join(_ids(result, submission)), detail]


def _mark(result: RunResult) -> str:
    return "✘" if _failed(result) else "⏱" if result.state == "timed_out" else "✔"


def _record(
    run_id: str, line: int, result: RunResult, submission: Submission | None
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "key": result.key,
        "line": line,
        "state": result.state,
        "generation_ids": _ids(result, submission),
        "paths": [str(path) for path in result.paths],
        "credits_charged": submission.credits_charged if submission is not None else None,
        "error": _error(result),
    }


def _requests(count: int) -> str:
    return f"{count} request" if count == 1 else f"{count} requests"


def _attempt(submission: Submission | None) -> int:
    return 0 if submission is None else submission.attempt


def _summarise(ctx: Context, report: RunReport, run_id: str, ledger_label: str) -> None:
    """The summary line, and on stderr how to settle ambiguous keys."""
    counts = Counter(result.state for result in report.results)
    states = [s for s in STATES if counts[s]] + sorted(set(counts) - set(STATES))
    ctx.ui.print(
        f"{_requests(len(report.results))}: " + ", ".join(f"{counts[s]} {s}" for s in states)
    )
    ctx.ui.print(
        f"sent by this run: {report.sent}; credits charged to the run's keys: {report.credits:g}"
        + (
            f" (up to {report.at_stake:g} more if the ambiguous keys were queued)"
            if report.at_stake
            else ""
        )
    )
    ambiguous = [result.key for result in report.results if result.state == "ambiguous"]
    if not ambiguous:
        return
    which = "1 key is" if len(ambiguous) == 1 else f"{len(ambiguous)} keys are"
    ledger = f"--ledger {shlex.quote(ledger_label)}"
    print(
        f"prism-async: {which} ambiguous (maybe queued and charged, ids unknown): "
        f"{', '.join(sorted(ambiguous))}\n"
        "prism-async: running this again reconciles them first; or settle them now with\n"
        f"  prism-async ledger reconcile {ledger}\n"
        f"  prism-async ledger resolve KEY (--ids ID... | --not-sent) {ledger}",
        file=sys.stderr,
        flush=True,
    )
