"""arq jobs that pay for each video once, however often arq runs them."""

import os
from pathlib import Path
from typing import Any

from arq import Retry
from arq.connections import RedisSettings

from prism_async import AmbiguousSubmissionError, PollPolicy, PrismClient, SubmissionInFlightError
from prism_async.ledger import Ledger, RedisLedger

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
VIDEOS = Path(os.environ.get("VIDEO_DIR", "videos"))
POLL_SECONDS = float(os.environ.get("POLL_SECONDS", "5"))


async def startup(ctx: dict[str, Any]) -> None:
    ctx["ledger"] = ledger = RedisLedger(REDIS_URL)  # the same Redis as the queue
    poll = PollPolicy(initial_delay=POLL_SECONDS, interval=POLL_SECONDS)
    ctx["prism"] = PrismClient(ledger=ledger, poll=poll)  # key from $PRISM_API_KEY


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["prism"].aclose()  # closes the ledger too


async def make_video(ctx: dict[str, Any], key: str, prompt: str) -> list[str]:
    prism: PrismClient = ctx["prism"]
    ledger: Ledger = ctx["ledger"]
    try:  # run again with the same key, it sends nothing: the ledger replays the batch
        ids = (await prism.generations.create(key=key, prompt=prompt, model_name="veo-3.1")).ids
    except AmbiguousSubmissionError:  # a run died while sending: find what it queued
        found = await prism.reconcile(key)
        if not found.done:
            raise Retry(defer=60) from None  # not listed yet: look again in a minute
        ids = list(found.generation_ids)
    except SubmissionInFlightError:  # another worker is sending this key right now
        raise Retry(defer=15) from None
    paths = []
    for video in await prism.wait_for_generations(ids):
        record = await ledger.generation(video.id)  # did an earlier run download it?
        path = Path(record.path if record and record.path else VIDEOS / f"{video.id}.mp4")
        if record is None or not path.is_file() or path.stat().st_size != record.size:
            path = await prism.generations.download(video, path)
        paths.append(str(path))
    return paths


class WorkerSettings:
    functions = (make_video,)
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    # Longer than a job takes (a wait gives up after 15 min). Also how long a killed worker's
    # jobs wait before arq runs them again: job_timeout + 10 s after they started.
    job_timeout = int(os.environ.get("JOB_TIMEOUT", "1200"))
