"""The ledger file of the commands that use one (``ledger ...``, ``run``): the ``--ledger``
option, its default (``$PRISM_LEDGER``, then ``prism-ledger.db``), and bad files as exit 2."""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
from collections.abc import Iterator

from ..ledger import Ledger
from ._extras import needs_extra
from ._registry import UsageError

__all__ = [
    "DEFAULT_LEDGER",
    "REDIS_SCHEMES",
    "ledger_option",
    "ledger_path",
    "open_ledger",
    "readable_ledger",
]

DEFAULT_LEDGER = "prism-ledger.db"
"""The ledger file when neither ``--ledger`` nor ``$PRISM_LEDGER`` names one."""


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
"""A ``--ledger`` starting with one of these is a Redis server (a fleet's ledger)."""


def open_ledger(location: str, *, must_exist: bool, prefix: str | None = None) -> Ledger:
    """The ledger ``--ledger`` names: a ``RedisLedger`` for a redis URL, else a SQLite file
    (which reading commands require to exist: they never create an empty ledger)."""
    if location.startswith(REDIS_SCHEMES):
        with needs_extra("--ledger redis://...", "redis"):
            from ..ledger import RedisLedger

        return RedisLedger(location) if prefix is None else RedisLedger(location, prefix=prefix)
    from ..ledger import SQLiteLedger

    if must_exist and not os.path.isfile(location):
        raise UsageError(f"--ledger: no ledger at {location}")
    return SQLiteLedger(location)


def ledger_path(args: argparse.Namespace) -> str:
    """The ledger file a command uses: ``--ledger``, ``$PRISM_LEDGER``, then the default."""
    return os.path.expanduser(args.ledger or os.environ.get("PRISM_LEDGER") or DEFAULT_LEDGER)


def ledger_option(parser: argparse.ArgumentParser, *, note: str = "") -> None:
    """Add ``--ledger PATH`` to a command's options (``note`` ends its help)."""
    parser.add_argument(
        "--ledger",
        metavar="PATH",
        help=(
            f"the ledger file, or a redis:// URL (default: $PRISM_LEDGER, then "
            f"{DEFAULT_LEDGER}){note}"
        ),
    )


@contextlib.contextmanager
def readable_ledger(path: str) -> Iterator[None]:
    """A file that is not a ledger (or cannot be opened) is bad input, not a crash."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"--ledger: cannot use {path} as a ledger: {exc}") from None
