import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, Response

from prism_async import AmbiguousSubmissionError, PrismClient, SubmissionInFlightError
from prism_async.ledger import SQLiteLedger
from prism_async.webhooks import RedisWebhookBus, WebhookHub

hub = WebhookHub(
    secret=os.environ["PRISM_WEBHOOK_SECRET"],  # the same in every process, kept across restarts
    bus=RedisWebhookBus(os.environ["REDIS_URL"]) if os.environ.get("REDIS_URL") else None,
)
HOOK_URL = hub.url_for(os.environ["PRISM_HOOK_URL"])  # https://myapp.example/prism/hook
LEDGER = os.environ.get("PRISM_LEDGER", "prism-ledger.db")  # shared by the processes


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    ledger = SQLiteLedger(LEDGER)  # one machine; several: RedisLedger (see below)
    async with hub, PrismClient(webhooks=hub, ledger=ledger) as prism:  # PRISM_API_KEY, ...
        hub.close_on_signal()  # on SIGTERM, waits in flight stop counting on webhooks
        app.state.prism = prism
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/prism/hook")
async def prism_hook(request: Request) -> Response:
    body = await request.body()  # put a body-size limit in front of it in production too
    reply = await hub.handle(body, request.query_params)
    return Response(reply.message, status_code=reply.status, media_type="text/plain")


@app.post("/videos")
async def make_video(request: Request, hook: str, key: str) -> dict[str, str | None]:
    prism: PrismClient = request.app.state.prism
    try:  # the caller's key: a retried request pays nothing more and gets the same video
        batch = await prism.templates.generate(
            "abc123", variables={"hook": hook}, webhook_url=HOOK_URL, key=f"videos/{key}"
        )
    except (SubmissionInFlightError, AmbiguousSubmissionError) as exc:  # sent, not settled yet
        raise HTTPException(409, str(exc)) from None
    video = await prism.wait_for_generation(batch.ids[0])  # ends when the webhook arrives
    return {"id": video.id, "video_url": video.video_url}
