"""User callbacks (on_update, on_queued, on_progress): plain, coroutine, or any awaitable."""

from __future__ import annotations

import asyncio

from prism_async._callbacks import call_maybe_async


async def test_a_callback_returning_any_awaitable_is_awaited() -> None:
    """A coroutine, a Future and a plain value: the first two are awaited before returning."""
    seen: list[str] = []
    loop = asyncio.get_running_loop()

    async def coroutine(value: str) -> None:
        await asyncio.sleep(0)
        seen.append(f"coroutine {value}")

    def future(value: str) -> asyncio.Future[None]:
        done: asyncio.Future[None] = loop.create_future()

        def finish() -> None:
            seen.append(f"future {value}")
            done.set_result(None)

        loop.call_later(0.01, finish)
        return done

    await call_maybe_async(coroutine, "a")
    await call_maybe_async(future, "b")
    await call_maybe_async(lambda value: seen.append(f"plain {value}"), "c")
    await call_maybe_async(None, "d")
    assert seen == ["coroutine a", "future b", "plain c"]
