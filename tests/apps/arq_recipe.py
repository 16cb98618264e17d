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
WAIT_SECONDS = int(os.environ.get("WAIT_SECONDS", "900"))  # a wait gives up after 15 min
RECONCILE_SECONDS = float(os.environ.get("RECONCILE_SECONDS", "30"))


async def startup(ctx: dict[str, Any]) -> None:
    # The same Redis as the queue; an ambiguous key is looked up every RECONCILE_SECONDS.
    ctx["ledger"] = ledger = RedisLedger(REDIS_URL, reconcile_interval=RECONCILE_SECONDS)
    every = POLL_SECONDS  # a steady poll: one status request per video every POLL_SECONDS
    poll = PollPolicy(initial_delay=every, interval=every, max_interval=every, timeout=WAIT_SECONDS)
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
        if not found.done:  # not listed yet (or never queued: then the next try sends it)
            raise Retry(defer=ledger.reconcile_interval) from None
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
    # A job mostly waits (idle, sharing one client): 100 at once poll 20 times a second at 5 s.
    max_jobs = 100
    # Longer than a whole job (its wait, then downloads). Also how long a killed worker's jobs
    # wait before arq runs them again: job_timeout + 10 s after they started.
    job_timeout = int(os.environ.get("JOB_TIMEOUT", WAIT_SECONDS + 300))
    # Every Retry counts as a try: room for an ambiguous key's whole 30-minute window.
    max_tries = 10 + int(1800 / RECONCILE_SECONDS)
