"""``prism-async ledger dead-letters``: the messages a fleet's broker parked after too many
deliveries (``PrismStreamBroker(max_deliveries=...)``), and ``--requeue`` to run them again.

They live in the stream ``<queue>:dead`` on the broker's Redis (``--broker redis://...``,
default ``$PRISM_BROKER``; ``--queue``, default ``prism``). Listing reads only; ``--requeue``
puts every dead letter (or the ids given) back on the queue as a new message, to be delivered
again from a fresh count. No API key, no network but that Redis: a bad URL is exit 2, a Redis
that cannot be reached exit 3.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from yarl import URL

from .._errors import PrismError
from .._transport._urls import redact
from ._context import Context
from ._extras import needs_extra
from ._ledger_file import REDIS_SCHEMES
from ._registry import EXIT_OK, UsageError, command

if TYPE_CHECKING:
    from ..integrations.taskiq._streams import DeadLetter

__all__ = ["dead_letters"]


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker", metavar="URL", help="the workers' broker, redis://... (default: $PRISM_BROKER)"
    )
    parser.add_argument(
        "--queue", default="prism", metavar="NAME", help="the broker's stream (default prism)"
    )
    parser.add_argument(
        "--requeue",
        nargs="*",
        metavar="ID",
        help="put these dead letters (all, without an ID) back on the queue",
    )


def _broker_url(args: argparse.Namespace) -> str:
    url = args.broker or os.environ.get("PRISM_BROKER")
    if not url or not str(url).startswith(REDIS_SCHEMES):
        raise UsageError("--broker: give the workers' redis://... URL, or set PRISM_BROKER")
    return str(url)


def _cells(letter: DeadLetter) -> list[str]:
    message = letter.message
    args = ", ".join(repr(a) for a in message.get("args", []))
    args += "".join(f", {k}={v!r}" for k, v in message.get("kwargs", {}).items())
    return [
        letter.id,
        letter.task_name,
        args.removeprefix(", "),
        str(letter.deliveries),
        letter.error,
        f"{letter.parked_at:%Y-%m-%d %H:%M:%S} UTC",
    ]


@command(
    "dead-letters",
    help="list the messages a fleet's broker parked after too many deliveries (--requeue)",
    options=_options,
    option_names={"broker": "--broker", "queue": "--queue", "requeue": "--requeue"},
    client="none",
    group="ledger",
)
async def dead_letters(ctx: Context) -> int:
    """List the dead letters of ``--queue`` (task, arguments, deliveries, last error, when),
    or put them back on it (``--requeue``: all, or the ids given)."""
    with needs_extra("ledger dead-letters", "taskiq"):
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        from ..integrations.taskiq._streams import (
            dead_stream,
            read_dead_letters,
            requeue_dead_letters,
        )
    args, ui = ctx.args, ctx.ui
    url = _broker_url(args)
    where = f"{dead_stream(args.queue)} on {redact(URL(url))}"
    try:
        async with Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10) as redis:
            letters = await read_dead_letters(redis, args.queue)
            if args.requeue is None:
                _show(ctx, letters, where)
                return EXIT_OK
            known = {letter.id: letter for letter in letters}
            ids = list(args.requeue) or list(known)
            unknown = [i for i in ids if i not in known]
            if unknown:
                raise UsageError(f"--requeue: no dead letter {', '.join(unknown)} in {where}")
            requeued = await requeue_dead_letters(redis, args.queue, ids)
    except RedisError as exc:  # no server there, a refused password, a wrong database
        raise PrismError(f"cannot reach the broker's Redis ({where}): {exc}") from None
    for letter_id in requeued:
        letter = known[letter_id]
        ui.emit({"event": "requeued", **letter.to_dict()})
        ui.print(f"requeued {letter_id} ({letter.task_name}) on {letter.stream}")
    if not requeued:
        ui.print(f"nothing to requeue: no dead letters in {where}")
    return EXIT_OK


def _show(ctx: Context, letters: list[DeadLetter], where: str) -> None:
    for letter in letters:
        ctx.ui.emit(letter.to_dict())
    if not letters:
        ctx.ui.print(f"no dead letters in {where}")
        return
    columns = ["id", "task", "args", "deliveries", "last error", "parked"]
    ctx.ui.table(f"Dead letters ({where})", columns, [_cells(letter) for letter in letters])
