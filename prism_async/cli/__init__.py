"""The ``prism-async`` command line (``python -m prism_async`` too).

Exit codes: 0 success, 1 a generation failed, 2 bad usage or bad input, 3 an API error,
4 a wait timed out, 130 interrupted (Ctrl-C or SIGTERM), 141 stdout closed early (``| head``).
No traceback reaches the user without ``-v``.

``rich`` (the ``cli`` extra) draws live tables and progress bars when stdout is a terminal;
without it, or when stdout is not a terminal, output is plain lines; ``--json`` prints one JSON
object per line and nothing else on stdout.

Layout: ``_registry.py`` (the ``Command`` declaration and ``@command``; how to add a command),
``_main.py`` (``main``: global options, the client, errors, exit codes), ``_context.py`` (what a
handler gets, and the steps commands share), ``_ui.py`` (output and the live display), and the
commands by group: ``_generating.py``, ``_running.py`` (``run``, a resumable bulk run of a
JSONL file read by ``_batch.py``), ``_transfers.py``, ``_browsing.py``, ``_offline.py``,
``_ledger.py`` (the ``ledger`` subcommands; ``_ledger_file.py`` has the ``--ledger`` option),
``_track.py`` (``track``, the tracker of a taskiq fleet). Shared by several commands:
``_files.py`` (arguments naming a local file or a storage key), ``_extras.py`` (a missing
optional package says which extra to install), ``_in_flight.py`` (what a stopped ``run`` had in
flight, and how to settle it).
"""

# The command modules, imported for their declarations, in the order of ``--help``.
from . import _generating, _running, _transfers, _browsing, _offline, _ledger, _track  # noqa: F401  # isort: skip
from . import _dead_letters  # noqa: F401  # isort: skip  (ledger dead-letters)
from . import _spend  # noqa: F401  # isort: skip  (ledger spend, ledger budget)
from ._main import main
from ._registry import (
    EXIT_API,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OUTPUT_CLOSED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)

__all__ = [
    "EXIT_API",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OUTPUT_CLOSED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "main",
]
