"""Shutdown signals: the handler behind ``WebhookHub.close_on_signal``."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

__all__ = ["CloseOnSignal"]


class CloseOnSignal:
    """A signal handler that closes a hub (on its loop), then runs the previous handler."""

    def __init__(
        self, close: Callable[[], None], loop: asyncio.AbstractEventLoop, previous: Any
    ) -> None:
        self.close = close
        self.loop = loop
        self.previous = previous

    @classmethod
    def install(cls, close: Callable[[], None], signums: Iterable[int]) -> None:
        """Call ``close`` on the running loop when one of ``signums`` arrives (main thread
        only: elsewhere, nothing is installed)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for signum in signums:
            previous = signal.getsignal(signum)
            while isinstance(previous, CloseOnSignal) and previous.close == close:
                previous = previous.previous  # installed again (a second lifespan): once is enough
            signal.signal(signum, cls(close, loop, previous))

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.close)
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous == signal.SIG_DFL:  # what would have happened without us
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
