"""The worker app of the deploy tests: ``taskiq worker tests.taskiq_deploy_app:broker``.

Configured from the environment the test sets: ``DEPLOY_REDIS``, ``DEPLOY_QUEUE``,
``DEPLOY_JOURNAL`` (a file), ``DEPLOY_IDLE_MS``, ``DEPLOY_SHUTDOWN`` (``shutdown_timeout``) and
``DEPLOY_MAX_DELIVERIES``. The tasks write what they do to the journal file, not to Redis
(which a test stops): one line per event, ``<event> <tag> <pid>`` (``worker``, ``start``,
``done``), appended in one write.

* ``deploy.sleep(tag, first, again)``: sleeps ``first`` seconds on its first run, ``again`` on
  the next ones.
* ``deploy.crash(tag)``: kills its own worker process (SIGKILL) until the file
  ``<journal>.healed`` exists, then completes.
* ``deploy.poison(tag)``: never runs: :class:`Poison` raises in ``pre_execute`` (an error out of
  the receiver's callback: the message stays unacknowledged).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from taskiq import TaskiqEvents, TaskiqMessage, TaskiqMiddleware, TaskiqState

from prism_async.integrations.taskiq import TASK_LABELS, PrismStreamBroker

JOURNAL = Path(os.environ.get("DEPLOY_JOURNAL", "deploy-journal.log"))
IDLE_MS = int(os.environ.get("DEPLOY_IDLE_MS", "60000"))

broker = PrismStreamBroker(
    os.environ.get("DEPLOY_REDIS", "redis://127.0.0.1:6379/0"),
    queue_name=os.environ.get("DEPLOY_QUEUE", "deploy"),
    idle_timeout=IDLE_MS,
    heartbeat_interval=min(0.3, IDLE_MS / 1000 / 4),
    reclaim_interval=0.5,
    xread_block=300,
    shutdown_timeout=float(os.environ.get("DEPLOY_SHUTDOWN", "3")),
    max_deliveries=int(os.environ.get("DEPLOY_MAX_DELIVERIES", "5")),
)


def journal(event: str, tag: str) -> None:
    """Append ``<event> <tag> <pid>`` to the journal in one write."""
    line = f"{event} {tag} {os.getpid()}\n".encode()
    descriptor = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def runs(tag: str) -> int:
    """How many times a job with ``tag`` started so far."""
    if not JOURNAL.exists():
        return 0
    return sum(1 for line in JOURNAL.read_text().splitlines() if line.split()[:2] == ["start", tag])


@broker.task("deploy.sleep", **TASK_LABELS)
async def sleep(tag: str, first: float, again: float) -> str:
    """Sleep ``first`` seconds on the first run, ``again`` on the next ones."""
    seconds = first if runs(tag) == 0 else again
    journal("start", tag)
    await asyncio.sleep(seconds)
    journal("done", tag)
    return tag


@broker.task("deploy.crash", **TASK_LABELS)
async def crash(tag: str) -> str:
    """Kill this worker process, until ``<journal>.healed`` exists."""
    journal("start", tag)
    if not Path(f"{JOURNAL}.healed").exists():
        os.kill(os.getpid(), signal.SIGKILL)
    journal("done", tag)
    return tag


@broker.task("deploy.poison", **TASK_LABELS)
async def poison(tag: str) -> str:
    """Never runs (see :class:`Poison`)."""
    journal("done", tag)
    return tag


class Poison(TaskiqMiddleware):
    """Raises before ``deploy.poison`` runs: its message is never acknowledged."""

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Refuse ``deploy.poison``."""
        if message.task_name == "deploy.poison":
            journal("start", str(message.args[0]))
            raise RuntimeError(f"poisoned {message.args[0]}")
        return message


broker.add_middlewares(Poison())


async def _announce(state: TaskiqState) -> None:
    journal("worker", "-")


broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, _announce)
