"""The command registry: each command is declared once, here in one piece.

A declaration names the command and gives its ``--help`` line, the function adding its options
to its subparser, its async handler, and its option names (an SDK field -> the option the user
typed, so an ``InvalidRequestError`` reads ``--count: must be from 1 to 4``). The parser and the
dispatch in ``_main.py`` are built from :data:`COMMANDS`; nothing else lists commands.

**To add a command**, add one declaration to the module of its group (``_generating.py``,
``_transfers.py``, ``_browsing.py``, ``_offline.py``, ``_ledger.py``)::

    def _hello_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("id", metavar="ID")


    @command(
        "hello",
        help="greet a generation",
        options=_hello_options,
        option_names={"generation_id": "ID"},
    )
    async def hello(ctx: Context) -> int:
        generation = await ctx.prism.generations.get(ctx.args.id)
        ctx.ui.print(f"hello {generation.id}, {generation.status}")
        ctx.ui.emit(to_dict(generation))
        return EXIT_OK

Two more fields, when the defaults do not fit: ``client="fake"`` (always run on an embedded
FakePrismServer, as ``demo`` does) or ``client="none"`` (no client, as ``serve-fake``), and
``paid=True`` (it may spend credits: an ambiguous failure then warns that it may have been
queued). ``client_options=`` makes extra ``PrismClient`` keyword arguments from the command's
arguments (``ledger reconcile`` gives its client a ``ledger=``). ``epilog=`` ends its
``--help`` (line breaks kept: how its arguments are read). Every command also takes the global
options (``--json``, ``--fake``, ...) after its name; ``_main.py`` adds them.

**A group of subcommands** (``prism-async ledger list``) is one :func:`group` declaration, whose
``options`` every subcommand takes, then one ``@command(..., group="ledger")`` per subcommand
(see ``_ledger.py``); a group has no handler of its own.

Commands appear in ``--help`` in the order they are declared; a new group module is one more
import in ``cli/__init__.py``. A handler gets a :class:`~prism_async.cli._context.Context`
(``ctx.args``, ``ctx.ui``, ``ctx.prism``, ``ctx.fake`` and the steps commands share) and
returns an exit code; it raises :class:`UsageError` (exit 2) for bad input the SDK does not
check itself, and lets SDK errors through to ``main``, which turns them into exit codes.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NoReturn

if TYPE_CHECKING:
    from ._context import Context

__all__ = [
    "COMMANDS",
    "EXIT_API",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OUTPUT_CLOSED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "Command",
    "Handler",
    "Parser",
    "UsageError",
    "add_commands",
    "command",
    "find_command",
    "group",
]

# The exit codes: a handler returns one of the first three, ``main`` maps errors to the rest.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_API = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130
EXIT_OUTPUT_CLOSED = 141
"""stdout was closed by its reader (``| head``), as a program killed by SIGPIPE would give."""

Handler = Callable[["Context"], Awaitable[int]]
"""A command's body: gets the context, returns the exit code."""

ClientKind = Literal["api", "fake", "none"]

ClientOptions = Callable[[argparse.Namespace], Mapping[str, Any]]
"""Extra ``PrismClient`` keyword arguments made from a command's arguments."""


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() owns the exit code."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class Command:
    """One command of ``prism-async``: everything about it in one place."""

    name: str
    """The word typed after ``prism-async`` (or after its group's name)."""
    help: str
    """Its line in ``prism-async --help``."""
    handler: Handler | None
    """Runs it; returns the exit code (None for a group: one of its subcommands runs)."""
    add_options: Callable[[argparse.ArgumentParser], None] | None = None
    """Adds its arguments and options to its subparser (a group's: to each subcommand's)."""
    option_names: Mapping[str, str] = field(default_factory=dict)
    """SDK field name -> the argument or option the user typed, for error messages."""
    client: ClientKind = "api"
    """``"api"``: a client on the API (or on an embedded fake with ``--fake``); ``"fake"``:
    always on an embedded fake; ``"none"``: no client at all (``ctx.prism`` is unusable)."""
    paid: bool = False
    """It may spend credits: an ambiguous failure then warns that it may have been queued."""
    client_options: ClientOptions | None = None
    """Extra ``PrismClient`` keyword arguments made from its arguments (may raise
    :class:`UsageError`); called just before its client is made."""
    group: str | None = None
    """The group it belongs to (``"ledger"`` for ``ledger list``), or None."""
    subcommands: dict[str, Command] = field(default_factory=dict)
    """A group's subcommands by name, in declaration order (empty for a plain command)."""
    epilog: str | None = None
    """Printed at the end of its ``--help``, line breaks kept (how its arguments are read)."""

    @property
    def full_name(self) -> str:
        """What the user types for it: ``status``, ``ledger list``."""
        return self.name if self.group is None else f"{self.group} {self.name}"


COMMANDS: dict[str, Command] = {}
"""Every declared top-level command (or group) by name, in declaration order (the order of
``--help``); a group's subcommands are in its ``subcommands``."""


def command(
    name: str,
    *,
    help: str,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
    option_names: Mapping[str, str] | None = None,
    client: ClientKind = "api",
    paid: bool = False,
    client_options: ClientOptions | None = None,
    group: str | None = None,
    epilog: str | None = None,
) -> Callable[[Handler], Handler]:
    """Declare a command: decorates its handler and registers it in :data:`COMMANDS` (or in
    its ``group``'s subcommands; the group is declared first, with :func:`group`)."""

    def register(handler: Handler) -> Handler:
        if group is None:
            siblings = COMMANDS
        elif group in COMMANDS and COMMANDS[group].handler is None:
            siblings = COMMANDS[group].subcommands
        else:
            raise RuntimeError(f"command group {group!r} is not declared")
        declared = Command(
            name=name,
            help=help,
            handler=handler,
            add_options=options,
            option_names=dict(option_names or {}),
            client=client,
            paid=paid,
            client_options=client_options,
            group=group,
            epilog=epilog,
        )
        if name in siblings:
            raise RuntimeError(f"command {declared.full_name!r} is declared twice")
        siblings[name] = declared
        return handler

    return register


def group(
    name: str, *, help: str, options: Callable[[argparse.ArgumentParser], None] | None = None
) -> None:
    """Declare a group of subcommands (``ledger``); ``options`` are added to every one of them
    (after their own). Its subcommands are declared with ``@command(..., group=name)``."""
    if name in COMMANDS:
        raise RuntimeError(f"command {name!r} is declared twice")
    COMMANDS[name] = Command(name=name, help=help, handler=None, add_options=options)


def _subcommand_dest(declared: Command) -> str:
    return f"{declared.name}_subcommand"


def find_command(args: argparse.Namespace) -> Command:
    """The command the parsed arguments ask for (a group's subcommand, for a group)."""
    declared = COMMANDS[args.command]
    if declared.handler is None:
        declared = declared.subcommands[getattr(args, _subcommand_dest(declared))]
    return declared


def add_commands(
    parser: argparse.ArgumentParser,
    common: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Add one subparser per declared command to ``parser`` (``args.command`` names it), and
    to a group's subparser one per subcommand (:func:`find_command` finds the one given).
    ``common`` adds the options every command also takes (the global ones) to each."""
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subparsers.required = True
    for declared in COMMANDS.values():
        subparser = _add_parser(subparsers, declared)
        if declared.handler is not None:
            for add_options in (declared.add_options, common):
                if add_options is not None:
                    add_options(subparser)
            continue
        if common is not None:
            common(subparser)
        nested = subparser.add_subparsers(
            dest=_subcommand_dest(declared), metavar="SUBCOMMAND", parser_class=Parser
        )
        nested.required = True
        for child in declared.subcommands.values():
            child_parser = _add_parser(nested, child)
            for add_options in (child.add_options, declared.add_options, common):
                if add_options is not None:
                    add_options(child_parser)


def _add_parser(subparsers: Any, declared: Command) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        declared.name,
        help=declared.help,
        description=declared.help,
        epilog=declared.epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
