"""Calling the user's callbacks (``on_update``, ``on_queued``, ``on_progress``), plain or async."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["call_maybe_async"]


async def call_maybe_async(callback: Callable[..., object] | None, *args: Any) -> None:
    """Call ``callback(*args)`` if there is one, awaiting what it returns when awaitable (a
    coroutine, a Future, any object with ``__await__``)."""
    if callback is not None:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
