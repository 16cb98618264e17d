"""A webhook receiver in a process of its own: a hub on a Redis bus, behind aiohttp.

Run by tests/test_webhook_bus.py with PRISM_WEBHOOK_SECRET, REDIS_URL and PRISM_STREAM set;
prints its port, then serves until its stdin closes.
"""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web

from prism_async.webhooks import RedisWebhookBus, WebhookHub


async def main() -> None:
    bus = RedisWebhookBus(os.environ["REDIS_URL"], stream=os.environ["PRISM_STREAM"])
    async with WebhookHub(secret=os.environ["PRISM_WEBHOOK_SECRET"], bus=bus) as hub:
        app = web.Application()
        app.router.add_post("/hook", hub.aiohttp_handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(runner.addresses[0][1], flush=True)
        try:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
