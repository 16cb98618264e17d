"""Waits in a process of its own, woken through the Redis bus (tests/test_webhook_outage.py).

Environment: PRISM_API_KEY, PRISM_BASE_URL (the fake), PRISM_WEBHOOK_SECRET, REDIS_URL,
PRISM_STREAM, PEER_HOOK (the other process's webhook receiver: this one's webhooks go there)
and COUNT. Prints ``port N`` (its own receiver), then ``queued ID`` for each of COUNT template
generations, then ``done ID TIME`` (``time.time()``) as each wait ends. Stops when stdin closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from aiohttp import web

from prism_async import PollPolicy, PrismClient
from prism_async.webhooks import RedisWebhookBus, WebhookHub

NORMAL = PollPolicy(initial_delay=0.05, interval=0.3, max_interval=0.3, jitter=0, timeout=60)


def say(*words: object) -> None:
    print(*words, flush=True)


async def main() -> None:
    logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    bus = RedisWebhookBus(os.environ["REDIS_URL"], stream=os.environ["PRISM_STREAM"])
    hub = WebhookHub(secret=os.environ["PRISM_WEBHOOK_SECRET"], fallback_interval=30, bus=bus)
    app = web.Application()
    app.router.add_post("/hook", hub.aiohttp_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    say("port", runner.addresses[0][1])
    async with hub, PrismClient(webhooks=hub, poll=NORMAL) as prism:

        async def wait(generation_id: str) -> None:
            await prism.wait_for_generation(generation_id)
            say("done", generation_id, time.time())

        url = hub.url_for(os.environ["PEER_HOOK"])
        waits = []
        for n in range(int(os.environ["COUNT"])):
            batch = await prism.templates.generate(
                "abc123", variables={"hook": f"{n}"}, webhook_url=url
            )
            say("queued", batch.ids[0])
            waits.append(asyncio.create_task(wait(batch.ids[0])))
        try:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
