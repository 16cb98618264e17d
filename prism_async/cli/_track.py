"""``prism-async track``: the tracker of a taskiq fleet (``prism_async.integrations.taskiq``).

It follows a ledger (``--ledger redis://...``, or a SQLite file), waits on every accepted
generation not yet downloaded and enqueues the ``prism_async.download`` task on the workers'
broker (``--broker redis://...``, ``--queue``) for each completed one. It runs until stopped
(SIGTERM or Ctrl-C: exit 0) or, with ``--until-idle``, until nothing is left to wait for. Its
state is the ledger: a restarted tracker goes on from the checkpoint it keeps on the broker's
Redis (``--from-start`` reads the whole ledger again). One line per event (``--json``: one
object, with ``event``, ``generation_id``, ``key``, ``detail``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from typing import Any

import attrs

from ..ledger import Ledger
from ..polling import PollPolicy
from ._context import Context
from ._extras import needs_extra
from ._ledger_file import REDIS_SCHEMES, open_ledger
from ._registry import EXIT_OK, UsageError, command

__all__ = ["track"]

_REDIS_SCHEMES = REDIS_SCHEMES


def _track_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ledger",
        metavar="URL",
        help="the ledger: redis://... (a RedisLedger) or a SQLite file (default: $PRISM_LEDGER)",
    )
    parser.add_argument(
        "--ledger-prefix", default="prism:ledger:", metavar="P", help="the RedisLedger's prefix"
    )
    parser.add_argument(
        "--broker", metavar="URL", help="the workers' broker, redis://... (default: $PRISM_BROKER)"
    )
    parser.add_argument(
        "--queue", default="prism", metavar="NAME", help="the broker's stream (default prism)"
    )
    parser.add_argument(
        "--download", metavar="DIR", help="the folder of the download tasks (default: the workers')"
    )
    parser.add_argument(
        "--webhook-bus",
        metavar="URL",
        help="a RedisWebhookBus (redis://...): webhooks your web app receives wake the waits",
    )
    parser.add_argument(
        "--max-pending", type=int, default=10_000, metavar="N", help="waits at once (10000)"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        metavar="S",
        help="the lag bound: at most S seconds between status requests once a generation may "
        "be done, counted from its creation (learnt from finished ones; until then a steady S; "
        "default: the client's policy, 30 s)",
    )
    parser.add_argument(
        "--scan-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between reads of the ledger (1)",
    )
    parser.add_argument(
        "--from-start", action="store_true", help="read the whole ledger, not from the checkpoint"
    )
    parser.add_argument(
        "--until-idle", action="store_true", help="stop once nothing is left to wait for"
    )


def _ledger_url(args: argparse.Namespace) -> str:
    value = args.ledger or os.environ.get("PRISM_LEDGER")
    if not value:
        raise UsageError("--ledger: give redis://... (or a SQLite file), or set PRISM_LEDGER")
    return str(value)


def _open_ledger(args: argparse.Namespace) -> Ledger:
    url = _ledger_url(args)
    if not url.startswith(_REDIS_SCHEMES):
        url = os.path.expanduser(url)
    return open_ledger(url, must_exist=True, prefix=args.ledger_prefix)


def _broker_url(args: argparse.Namespace) -> str:
    url = args.broker or os.environ.get("PRISM_BROKER")
    if not url or not str(url).startswith(_REDIS_SCHEMES):
        raise UsageError("--broker: give the workers' redis://... URL, or set PRISM_BROKER")
    return str(url)


def _track_client(args: argparse.Namespace) -> Mapping[str, Any]:
    """The tracker's client: the ledger, and a hub reading the webhook bus if one is given."""
    with needs_extra("track", "taskiq"):  # the taskiq extra (taskiq, taskiq-redis, redis)
        import prism_async.integrations.taskiq  # noqa: F401
    _broker_url(args)  # bad usage before anything opens
    if args.max_pending < 1:
        raise UsageError("--max-pending: must be at least 1")
    for name in ("poll_interval", "scan_interval"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise UsageError(f"--{name.replace('_', '-')}: must be a positive number of seconds")
    options: dict[str, Any] = {"ledger": _open_ledger(args)}
    if args.webhook_bus:
        from ..webhooks import RedisWebhookBus, WebhookHub

        options["webhooks"] = WebhookHub(bus=RedisWebhookBus(args.webhook_bus))
    return options


@command(
    "track",
    help="wait on every accepted generation of a ledger; enqueue each download (a fleet)",
    options=_track_options,
    option_names={"ledger": "--ledger", "max_pending": "--max-pending"},
    client_options=_track_client,
)
async def track(ctx: Context) -> int:
    """Run the tracker until stopped (or idle, with ``--until-idle``)."""
    from redis.asyncio import Redis

    from ..integrations.taskiq import (
        PrismStreamBroker,
        RedisCheckpoint,
        Tracker,
        TrackEvent,
        kick_download,
    )

    args, ui, prism = ctx.args, ctx.ui, ctx.prism
    broker_url = _broker_url(args)
    ledger_url = _ledger_url(args)
    redis_ledger = ledger_url.startswith(_REDIS_SCHEMES)
    label = args.ledger_prefix if redis_ledger else os.path.abspath(os.path.expanduser(ledger_url))
    poll = None
    if args.poll_interval is not None:
        seconds = args.poll_interval
        poll = PollPolicy(initial_delay=seconds, interval=seconds, max_interval=seconds)

    def on_event(event: TrackEvent) -> None:
        detail = f": {event.detail}" if event.detail else ""
        ui.print(f"{event.kind} {event.generation_id} ({event.key}){detail}")
        ui.emit(
            {
                "event": event.kind,
                "generation_id": event.generation_id,
                "key": event.key,
                "detail": event.detail,
            }
        )

    broker = PrismStreamBroker(broker_url, queue_name=args.queue)
    redis = Redis.from_url(broker_url, decode_responses=True)
    try:
        await broker.startup()
        checkpoint = RedisCheckpoint(redis, f"{args.queue}:tracker:{label}")
        if args.from_start:
            await checkpoint.save(0)

        async def enqueue(generation_id: str) -> None:
            await kick_download(broker, generation_id, args.download)

        tracker = Tracker(
            prism,
            enqueue,
            max_pending=args.max_pending,
            scan_interval=args.scan_interval,
            poll=poll,
            checkpoint=checkpoint,
            on_event=on_event,
        )
        if prism.webhooks is not None:
            await prism.webhooks.start()
        ui.print(f"tracking ledger {label}; downloads go to queue {args.queue!r}")
        await _until_stopped(tracker.run(until_idle=args.until_idle))
        stats = tracker.stats
        ui.print(
            f"stopped: {stats.tracked} waited on, {stats.enqueued} downloads enqueued, "
            f"{stats.failed} failed, {stats.lost} unknown to the API, {tracker.pending} pending"
        )
        ui.emit({"event": "stopped", "pending": tracker.pending, **attrs.asdict(stats)})
    finally:
        if prism.webhooks is not None:
            await prism.webhooks.aclose()
        await broker.shutdown()
        await redis.aclose()
    return EXIT_OK


async def _until_stopped(work: Any) -> None:
    """Run ``work`` until it ends, or until SIGTERM/SIGINT (then cancel it cleanly)."""
    loop = asyncio.get_running_loop()
    running: asyncio.Task[None] = asyncio.ensure_future(work)
    stop = asyncio.Event()
    handled = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        stopping.cancel()
        if not running.done():
            running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
