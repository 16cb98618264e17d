"""What the taskiq tests share: fast polling, unique names on the session's Redis, small steps."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

from prism_async import PollPolicy
from prism_async.testing import FakePrismServer

FAST = PollPolicy(initial_delay=0.02, interval=0.05, max_interval=0.1, jitter=0, timeout=30)
"""Polling for the fake's short generations."""
MODEL = "veo-3.1-fast"


def unique(name: str) -> str:
    """A name no other test uses on the shared redis-server (a key prefix, a queue)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def prompt_of(tag: str, index: int) -> str:
    """A distinct prompt, long enough for the history search of reconciliation."""
    return f"taskiq fleet clip <{tag}-{index:03d}>: a lighthouse at dusk"


def request_of(tag: str, index: int, **extra: object) -> dict[str, object]:
    """The ``request`` argument of the submit task for one clip."""
    return {"prompt": prompt_of(tag, index), "model_name": MODEL, **extra}


def video_gets(fake: FakePrismServer) -> Counter[str]:
    """How many times each generation's video was fetched from storage."""
    gets = fake.requests_to("GET", "/storage/videos/*")
    return Counter(request.path.rsplit("/", 1)[-1].removesuffix(".mp4") for request in gets)


def posts_by_prompt(fake: FakePrismServer) -> Counter[str]:
    """How many create POSTs the fake received for each prompt."""
    return Counter(str(r.json["prompt"]) for r in fake.requests_to("POST", "/api/generations"))


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float, what: str, every: float = 0.05
) -> None:
    """Wait until ``check()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)
