"""arq jobs that pay for each video once, however often arq runs them."""

import os
from typing import Any

from arq import Retry
from arq.connections import RedisSettings

from prism_async import PollPolicy, PrismClient
from prism_async.integrations.jobs import DownloadLeases, RetryLater, create_wait_download
from prism_async.ledger import RedisLedger

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
VIDEOS = os.environ.get("VIDEO_DIR", "videos")
POLL_SECONDS = float(os.environ.get("POLL_SECONDS", "5"))
WAIT_SECONDS = int(os.environ.get("WAIT_SECONDS", "900"))  # a wait gives up after 15 min
RECONCILE_SECONDS = float(os.environ.get("RECONCILE_SECONDS", "30"))


async def startup(ctx: dict[str, Any]) -> None:
    # The same Redis as the queue; an ambiguous key is looked up every RECONCILE_SECONDS.
    ledger = RedisLedger(REDIS_URL, reconcile_interval=RECONCILE_SECONDS)
    every = POLL_SECONDS  # a steady poll: one status request per video every POLL_SECONDS
    poll = PollPolicy(initial_delay=every, interval=every, max_interval=every, timeout=WAIT_SECONDS)
    ctx["prism"] = PrismClient(ledger=ledger, poll=poll)  # key from $PRISM_API_KEY
    ctx["leases"] = DownloadLeases.from_url(REDIS_URL)  # one download of a video at a time


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["prism"].aclose()  # closes the ledger too
    await ctx["leases"].aclose()


async def make_video(ctx: dict[str, Any], key: str, prompt: str) -> list[str]:
    request = {"prompt": prompt, "model_name": "veo-3.1"}
    try:  # run again with the same key, it sends nothing and downloads nothing twice
        done = await create_wait_download(
            ctx["prism"], ctx["leases"], key, request, VIDEOS, defer=True
        )
    except RetryLater as later:  # a run died mid-POST, the history does not list it yet
        raise Retry(defer=later.delay) from None
    if done["state"] != "downloaded":  # failed, timed out, or ambiguous for good
        raise RuntimeError(f"{key}: {done['state']}: {done['error']}")
    return list(done["paths"])


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
