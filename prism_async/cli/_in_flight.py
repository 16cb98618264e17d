"""What a ``prism-async run`` had in flight when it was stopped early (Ctrl-C, SIGTERM, or its
stdout closed), and how to settle it.

The paid requests in flight are the run's keys that had not finished whose ledger row is
``sending`` or ``ambiguous`` (the POST may have queued videos, and charged for them) or accepted
(queued and charged, still being waited for or downloaded). They are printed on stderr with the
command that settles them: the same one again (the ledger makes it send nothing twice; it
reconciles ambiguous keys and waits for and downloads accepted ones). The API key is never
printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager

from ..ledger import Ledger, Submission, SubmissionState
from ._ui import OutputClosed, RowUpdate

__all__ = ["in_flight", "reporting_in_flight", "rerun_command"]

_STOPPED = (asyncio.CancelledError, KeyboardInterrupt, OutputClosed)
"""How a run stops early: Ctrl-C or SIGTERM (its task cancelled), or stdout closed."""


_KEY = '"$PRISM_API_KEY"'
"""What the re-run command shows instead of an API key typed on the command line."""


def rerun_command(args: argparse.Namespace) -> str | None:
    """The command line as typed (``args.argv``, set by ``main``), quoted for a shell, an API
    key typed on it shown as ``"$PRISM_API_KEY"``; None when unknown (``run_batch`` called
    from code)."""
    argv = getattr(args, "argv", None)
    if argv is None:
        return None
    secret = getattr(args, "api_key", None)
    words = ["prism-async"]
    for word in argv:
        if secret and word == secret:
            words.append(_KEY)
        elif secret and word.startswith("--") and word.endswith(f"={secret}"):
            words.append(f"{shlex.quote(word[: -len(secret)])}{_KEY}")
        else:
            words.append(shlex.quote(word))
    return " ".join(words)


@contextlib.asynccontextmanager
async def reporting_in_flight(
    live: AbstractContextManager[RowUpdate],
    ledger: Ledger,
    keys: Sequence[str],
    finished: Mapping[str, object],
    rerun: str | None,
) -> AsyncIterator[RowUpdate]:
    """``live`` (the run's live table); if the run stops early inside it, once the table is
    gone, print on stderr the paid requests in flight (``keys`` not in ``finished``) and the
    command that settles them."""
    try:
        with live as update:
            yield update
    except _STOPPED:
        with contextlib.suppress(Exception):  # never hide why the run stopped
            _print_report(await in_flight(ledger, keys, finished), keys, finished, rerun)
        raise


async def in_flight(
    ledger: Ledger, keys: Sequence[str], finished: Mapping[str, object]
) -> list[Submission]:
    """The ledger rows of the paid requests in flight: not finished, and ``sending``,
    ``ambiguous`` or accepted (their videos still to wait for or download)."""
    open_keys = [key for key in keys if key not in finished]
    rows = await ledger.get_many(open_keys)
    paid = (SubmissionState.SENDING, SubmissionState.AMBIGUOUS)
    return [
        rows[key]
        for key in open_keys
        if key in rows and (rows[key].done or rows[key].state in paid)
    ]


def _what(row: Submission) -> str:
    ids = ", ".join(row.generation_ids)
    if row.done:
        return f"{row.state}: {ids} (still to wait for or download)"
    if row.state == SubmissionState.SENDING:
        return "sending: may be queued and charged"
    return f"ambiguous: may be queued and charged ({ids or 'ids unknown'})"


def _print_report(
    rows: Sequence[Submission],
    keys: Sequence[str],
    finished: Mapping[str, object],
    rerun: str | None,
) -> None:
    unfinished = sum(key not in finished for key in keys)
    if not unfinished:
        return
    lines = []
    if rows:
        count = "1 paid request was" if len(rows) == 1 else f"{len(rows)} paid requests were"
        lines.append(f"prism-async: the run stopped; {count} in flight:")
        lines += [f"  {row.key}  {_what(row)}" for row in rows]
        them = "it" if len(rows) == 1 else "them"
        settle = f"settles {them} (the ledger sends nothing twice)"
    else:
        lines.append(f"prism-async: the run stopped with {unfinished} of {len(keys)} unfinished")
        settle = "resumes it"
    if rerun is not None:
        lines.append(f"prism-async: running the same command again {settle}:")
        lines.append(f"  {rerun}")
        if _KEY in rerun:
            lines.append("  (the API key is not printed: set PRISM_API_KEY first)")
    else:
        lines.append(f"prism-async: running the same run again {settle}")
    print("\n".join(lines), file=sys.stderr, flush=True)
