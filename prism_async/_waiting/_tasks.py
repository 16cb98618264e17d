"""Tasks of a bulk wait: stopped and retrieved together, so none outlives its caller."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_all"]


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a finished task's exception as retrieved (its owner still gets it)."""
    if not task.cancelled():
        task.exception()


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel what is still running, wait until it has really stopped, and retrieve every
    outcome, so that asyncio never reports a "Task exception was never retrieved"."""
    tasks = list(tasks)
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    try:
        if pending:
            await asyncio.wait(pending)
    finally:
        for task in tasks:
            if task.done():
                _retrieve(task)
            else:  # cancelled again while waiting: retrieve whenever they end
                task.add_done_callback(_retrieve)
