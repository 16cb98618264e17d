"""How a ``taskiq worker`` process running PrismStreamBroker stops within its bound.

Why taskiq 0.13's workers did not stop on SIGTERM (taskiq 0.13.0, taskiq-redis 1.2.4,
redis-py 8, Python 3.11):

* The worker's handler (``signal.signal`` in ``taskiq.cli.worker.run``) only sets an asyncio
  event; nothing wakes the event loop, so the stop is seen when the current ``XREADGROUP``
  returns (``xread_block`` later).
* The receiver then cancels its pending ``anext(broker.listen())`` once. At that moment the
  listener has just had an empty answer and is sending its next command: redis-py awaits the
  write under ``asyncio.wait_for``, which on Python 3.11 swallows a cancellation that arrives
  as the write completes (CPython gh-86296, fixed in 3.12). The listener goes on reading and the
  receiver waits for it forever: "Stopping prefetching messages..." and nothing more.
* Running jobs are awaited without a bound (``--wait-tasks-timeout`` defaults to none), and the
  process manager relays SIGTERM as SIGINT (within a second) and then waits for its workers.

PrismStreamBroker fixes this from the broker's side: :class:`StopSignals` chains its own
handler in front of taskiq's (which still runs), wakes the loop at once and arms a last-resort
exit; the broker's listener stops on that signal (and re-raises a cancellation the Redis client
swallowed); running jobs get ``shutdown_timeout`` seconds, then their messages are handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["StopSignals", "reraise_swallowed_cancellation"]

logger = logging.getLogger("prism_async.taskiq")

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)
_TASKIQ_WORKER = "taskiq.cli.worker.run"
"""The module whose signal handler a ``taskiq worker`` process installs."""


def _is_taskiq_worker_handler(handler: Any) -> bool:
    return callable(handler) and getattr(handler, "__module__", None) == _TASKIQ_WORKER


class StopSignals:
    """The stop signals of a ``taskiq worker`` process: ``on_signal`` first, then taskiq's own
    handler. Installed only over taskiq's worker handler (never in another program, a test
    runner or a web app), from the main thread; :meth:`restore` puts taskiq's back."""

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self._on_signal = on_signal
        self._previous: dict[int, Any] = {}
        self._exit_timer: threading.Timer | None = None

    @property
    def installed(self) -> bool:
        """True while this process's stop signals come here first."""
        return bool(self._previous)

    def install(self) -> bool:
        """Chain in front of taskiq's worker handler; False when this is no taskiq worker."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return bool(self._previous)
        for signum in _SIGNALS:
            previous = signal.getsignal(signum)
            if _is_taskiq_worker_handler(previous):
                self._previous[signum] = previous
                signal.signal(signum, self._handle)
        return bool(self._previous)

    def restore(self) -> None:
        """Put taskiq's handlers back (where ours is still the one installed)."""
        previous, self._previous = self._previous, {}
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._on_signal(signum)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)  # taskiq's: sets its stop event, counts hard kills

    def exit_after(self, seconds: float) -> None:
        """The last resort: end the process ``seconds`` from now if it is still running (a job
        stuck in a thread, a hanging cleanup); its messages were handed back before."""
        if self._exit_timer is not None:
            return
        timer = threading.Timer(seconds, _exit_now, args=(seconds,))
        timer.daemon = True
        timer.start()
        self._exit_timer = timer


def reraise_swallowed_cancellation() -> None:
    """Python 3.11's ``asyncio.wait_for`` (inside redis-py) can swallow a cancellation: the
    task still says it was cancelled, so end the listener as the cancellation meant."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _exit_now(seconds: float) -> None:  # pragma: no cover - ends the process
    logger.error("taskiq: still running %g s after the stop signal: exiting now", seconds)
    for handler in logging.getLogger().handlers + logger.handlers:
        with contextlib.suppress(Exception):  # exiting, whatever a handler does
            handler.flush()
    os._exit(1)
