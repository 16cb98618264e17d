"""``main``: the global options, the client each command gets, errors and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import __version__
from .._client import PrismClient
from .._errors import (
    APIConnectionError,
    APIStatusError,
    GenerationFailedError,
    InvalidRequestError,
    PrismError,
    WaitTimeoutError,
)
from ..polling import PollPolicy
from ._context import Context
from ._extras import missing_extra
from ._registry import (
    EXIT_API,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OUTPUT_CLOSED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    Command,
    Parser,
    UsageError,
    add_commands,
    find_command,
)
from ._ui import UI, OutputClosed

if TYPE_CHECKING:
    from ..testing import FakePrismServer

__all__ = ["FAKE_POLL", "GLOBAL_OPTION_NAMES", "build_parser", "main", "option_name"]

FAKE_POLL = PollPolicy(initial_delay=0.3, interval=0.4, max_interval=1.5, multiplier=1.5)
"""Polling against the embedded fake: its videos take seconds, not minutes."""
FAKE_SECONDS = (1.5, 4.0)
"""How long a video takes on ``--fake``: a random time in this range, in seconds."""

GLOBAL_OPTION_NAMES = {"timeout": "--timeout", "base_url": "--base-url"}
"""SDK field -> global option, for every command (a command's own names come first)."""


def option_name(field: str, declared: Command) -> str:
    """The argument or option a user typed for an SDK field (``variables['k']`` -> ``--var``)."""
    head = field.split("[", 1)[0]
    return declared.option_names.get(head) or GLOBAL_OPTION_NAMES.get(head, field)


def build_parser() -> argparse.ArgumentParser:
    """The ``prism-async`` argument parser: the global options, then every declared command
    (each of which takes the global options too, after its name)."""
    parser = Parser(
        prog="prism-async",
        description="Generate videos with the Prism Videos API from the command line.",
        epilog="Global options go before or after the command.\n"
        "Try it with no account: prism-async demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"prism-async {__version__}")
    _global_options(parser)
    add_commands(parser, common=_command_global_options)
    return parser


def _global_options(where: Any, **defaults: Any) -> None:
    """Add the global options to ``where`` (a parser or one of its groups)."""
    where.add_argument(
        "--api-key", metavar="KEY", help="API key (default: $PRISM_API_KEY)", **defaults
    )
    where.add_argument(
        "--base-url",
        metavar="URL",
        help="API root (default: $PRISM_BASE_URL or the real API)",
        **defaults,
    )
    where.add_argument(
        "--fake",
        action="store_true",
        help="run against an embedded FakePrismServer (no network)",
        **defaults,
    )
    where.add_argument(
        "--json", action="store_true", help="one JSON object per line on stdout", **defaults
    )
    where.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="seconds a wait may take before exit code 4 (default 900)",
        **defaults,
    )
    where.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, tracebacks", **defaults
    )


def _command_global_options(parser: argparse.ArgumentParser) -> None:
    """The global options after a command's name too (``prism-async status ID --json``):
    unset there, they leave what was given before the command alone."""
    where = parser.add_argument_group("global options (before or after the command)")
    _global_options(where, default=argparse.SUPPRESS)


async def _run(args: argparse.Namespace, ui: UI) -> int:
    """Give the command the client it declared (none, the API, or an embedded fake); run it."""
    declared = find_command(args)
    assert declared.handler is not None  # a group's subcommand is always given
    if declared.client == "none":
        return await declared.handler(Context(args, ui))
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout: must be a positive number of seconds")
    async with contextlib.AsyncExitStack() as stack:
        fake: FakePrismServer | None = None
        api_key: str | None
        base_url: str | None
        if args.fake or declared.client == "fake":
            from ..testing import FakePrismServer

            fake = await stack.enter_async_context(
                FakePrismServer(generation_seconds=lambda: random.uniform(*FAKE_SECONDS))
            )
            api_key, base_url, poll = fake.api_key, fake.base_url, FAKE_POLL
        else:
            api_key = args.api_key or os.environ.get("PRISM_API_KEY")
            if not api_key:
                raise UsageError(
                    "--api-key: no API key; pass --api-key or set PRISM_API_KEY (or try --fake)"
                )
            base_url, poll = args.base_url, PollPolicy()
        extra = declared.client_options(args) if declared.client_options is not None else {}
        prism = await stack.enter_async_context(
            PrismClient(api_key, base_url=base_url, poll=poll, **extra)
        )
        return await declared.handler(Context(args, ui, prism=prism, fake=fake))
    raise AssertionError("unreachable")  # pragma: no cover


class _Terminated(Exception):
    """SIGTERM stopped the command (as Ctrl-C does): exit 130."""


async def _run_until_signalled(args: argparse.Namespace, ui: UI) -> int:
    """:func:`_run`, SIGTERM doing what Ctrl-C does: the work is cancelled cleanly (a run
    says what it had in flight), then exit 130."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, terminate)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        return await _run(args, ui)
    try:
        return await _run(args, ui)
    except asyncio.CancelledError:
        if terminated:
            raise _Terminated from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null once its reader is gone, so that the interpreter's last flush
    does not print "Exception ignored ... BrokenPipeError" on stderr."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _configure_logging(*, verbose: bool) -> None:
    """``-v``: the SDK's debug log on stderr. Otherwise its WARNINGs (``prism_async.ledger
    ... state=ambiguous``) are not printed raw by Python's last-resort handler: the commands
    report those states themselves. A handler the application configured still gets them."""
    sdk = logging.getLogger("prism_async")
    if verbose:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        sdk.setLevel(logging.DEBUG)
    elif not any(isinstance(handler, logging.NullHandler) for handler in sdk.handlers):
        sdk.addHandler(logging.NullHandler())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prism-async`` command line and return its exit code.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Exit codes: 0 success, 1 a generation failed, 2 bad usage or bad input, 3 an API error or
    no connection, 4 a wait timed out, 130 interrupted (Ctrl-C or SIGTERM), 141 stdout was
    closed (``| head``: nothing more is printed, on stderr either). Errors are printed on
    stderr without a traceback unless ``-v`` is given.
    """
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"prism-async: error: {exc}\nTry 'prism-async --help'.", file=sys.stderr)
        return EXIT_USAGE
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a run's "run it again" line
    declared = find_command(args)
    ui = UI(json_mode=args.json)
    _configure_logging(verbose=args.verbose)

    def fail(code: int, message: str, exc: BaseException) -> int:
        for line in message.splitlines():  # a UsageError may name several problems
            print(f"prism-async: {line}", file=sys.stderr)
        if isinstance(exc, PrismError) and exc.generation_ids:
            print(
                f"prism-async: generations queued: {', '.join(exc.generation_ids)}", file=sys.stderr
            )
        elif isinstance(exc, PrismError) and exc.maybe_sent and declared.paid:
            print(
                "prism-async: the request may have been queued (and charged): "
                "check before submitting it again",
                file=sys.stderr,
            )
        if args.verbose:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        return code

    try:
        return asyncio.run(_run_until_signalled(args, ui))
    except KeyboardInterrupt as exc:
        return fail(EXIT_INTERRUPTED, "interrupted", exc)
    except _Terminated as exc:
        return fail(EXIT_INTERRUPTED, "terminated (SIGTERM)", exc)
    except OutputClosed:
        _quiet_stdout()
        return EXIT_OUTPUT_CLOSED
    except UsageError as exc:
        lines = str(exc).splitlines() or [""]
        return fail(EXIT_USAGE, "\n".join(f"error: {line}" for line in lines), exc)
    except InvalidRequestError as exc:
        return fail(EXIT_USAGE, f"error: {option_name(exc.field, declared)}: {exc.reason}", exc)
    except GenerationFailedError as exc:
        return fail(EXIT_FAILED, str(exc), exc)
    except WaitTimeoutError as exc:
        return fail(EXIT_TIMEOUT, str(exc), exc)
    except APIStatusError as exc:
        label = exc.code or f"HTTP {exc.status_code}"
        return fail(EXIT_API, f"{label}: {exc.message}", exc)
    except APIConnectionError as exc:
        return fail(EXIT_API, f"connection error: {exc}", exc)
    except PrismError as exc:
        return fail(EXIT_API, f"error: {exc}", exc)
    except (ValueError, OSError) as exc:
        return fail(EXIT_USAGE, f"error: {exc}", exc)
    except ImportError as exc:
        missing = missing_extra(exc, declared.full_name)
        if missing is not None:
            return fail(EXIT_USAGE, f"error: {missing}", exc)
        return fail(EXIT_FAILED, f"unexpected error: {type(exc).__name__}: {exc} (use -v)", exc)
    except Exception as exc:  # a bug: still no traceback without -v
        return fail(EXIT_FAILED, f"unexpected error: {type(exc).__name__}: {exc} (use -v)", exc)
