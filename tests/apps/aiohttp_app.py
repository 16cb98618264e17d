import os
from collections.abc import AsyncIterator

from aiohttp import web

from prism_async import AmbiguousSubmissionError, PrismClient, SubmissionInFlightError
from prism_async.ledger import SQLiteLedger
from prism_async.webhooks import RedisWebhookBus, WebhookHub

hub = WebhookHub(
    secret=os.environ["PRISM_WEBHOOK_SECRET"],  # the same in every process, kept across restarts
    bus=RedisWebhookBus(os.environ["REDIS_URL"]) if os.environ.get("REDIS_URL") else None,
)
HOOK_URL = hub.url_for(os.environ["PRISM_HOOK_URL"])  # https://myapp.example/prism/hook
LEDGER = os.environ.get("PRISM_LEDGER", "prism-ledger.db")  # shared by the processes
PRISM = web.AppKey("prism", PrismClient)


async def prism_client(app: web.Application) -> AsyncIterator[None]:
    ledger = SQLiteLedger(LEDGER)  # one machine; several: RedisLedger (see below)
    async with hub, PrismClient(webhooks=hub, ledger=ledger) as prism:  # PRISM_API_KEY, ...
        app[PRISM] = prism
        yield


async def close_hub(app: web.Application) -> None:
    await hub.aclose()  # shutdown starts: waits in flight stop counting on webhooks


async def make_video(request: web.Request) -> web.Response:
    prism = request.app[PRISM]
    hook, key = request.query["hook"], request.query["key"]
    try:  # the caller's key: a retried request pays nothing more and gets the same video
        batch = await prism.templates.generate(
            "abc123", variables={"hook": hook}, webhook_url=HOOK_URL, key=f"videos/{key}"
        )
    except (SubmissionInFlightError, AmbiguousSubmissionError) as exc:  # sent, not settled yet
        raise web.HTTPConflict(text=str(exc)) from None
    video = await prism.wait_for_generation(batch.ids[0])  # ends when the webhook arrives
    return web.json_response({"id": video.id, "video_url": video.video_url})


app = web.Application()
app.cleanup_ctx.append(prism_client)
app.on_shutdown.append(close_hub)
app.router.add_post("/prism/hook", hub.aiohttp_handler)
app.router.add_post("/videos", make_video)

if __name__ == "__main__":  # start one per CPU: they share the port
    web.run_app(app, port=int(os.environ.get("PORT", "8080")), reuse_port=True)
