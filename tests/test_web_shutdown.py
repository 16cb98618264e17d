"""Stopping an app under its waits loses no generation id.

A wait that ends before its generation because the app stops logs the id at WARNING: when the
client closes under it (ClientClosedError), and when it is cancelled after the hub closed, as
uvicorn's ``--timeout-graceful-shutdown`` does to the requests still running *before* the
lifespan (and so the client) ends. The README's FastAPI example, run verbatim under uvicorn,
also has every id in its ledger (``key=``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from prism_async import ClientClosedError, PollPolicy, PrismClient
from prism_async.ledger import SQLiteLedger
from prism_async.testing import FakePrismServer
from prism_async.webhooks import WebhookHub
from tests.conftest import free_port
from tests.test_web_workers import LOG_CONFIG, SECRET, until

ROOT = Path(__file__).resolve().parent.parent
POLL = PollPolicy(initial_delay=0.05, interval=0.2, max_interval=0.2, jitter=0)
REQUESTS = 20
ABANDONED = re.compile(r"WARNING prism_async wait for generation (\S+) ended before")


def abandoned(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The generation ids of the WARNINGs of waits that ended before their generation."""
    return [
        r.prism_generation_ids[0]  # type: ignore[attr-defined]
        for r in caplog.records
        if r.levelno == logging.WARNING and "ended before the generation did" in r.getMessage()
    ]


async def test_closing_the_client_logs_the_id_of_every_wait_still_running(
    server: FakePrismServer, caplog: pytest.LogCaptureFixture
) -> None:
    """aclose() under three waits: each logs its id at WARNING, then raises ClientClosedError."""
    prism = PrismClient(server.api_key, base_url=server.base_url, poll=POLL)
    ids = [(await prism.generations.create(prompt="A cat", model_name="veo-3.1")).ids[0]]
    ids += (await prism.generations.create(prompt="A dog", model_name="veo-3.1", count=2)).ids
    seen: set[str] = set()  # the client has each one's first status (not only the server)
    waits = asyncio.create_task(
        prism.wait_for_generations(
            ids, return_exceptions=True, on_update=lambda g: seen.add(g.id)
        )
    )
    await until(lambda: seen == set(ids), 5)
    with caplog.at_level(logging.WARNING, logger="prism_async"):
        await prism.aclose()
        results = await waits
    assert [type(result) for result in results] == [ClientClosedError] * 3
    assert sorted(abandoned(caplog)) == sorted(ids)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all("the client closed; last status: queued" in r.getMessage() for r in warnings)


async def test_a_wait_cancelled_once_the_hub_closed_logs_its_id_and_stays_cancelled(
    server: FakePrismServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelled while its hub is open: nothing logged. Cancelled after the hub closed (the
    app stops): a WARNING with the id, and the CancelledError, with its message, goes on."""
    hub = WebhookHub(secret=SECRET)
    async with PrismClient(
        server.api_key, base_url=server.base_url, poll=POLL, webhooks=hub
    ) as prism:
        ids = (await prism.generations.create(prompt="A cat", model_name="veo-3.1", count=2)).ids
        waits = [asyncio.create_task(prism.wait_for_generation(i)) for i in ids]
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.WARNING, logger="prism_async"):
            waits[0].cancel()
            await asyncio.gather(waits[0], return_exceptions=True)
            assert abandoned(caplog) == []
            await hub.aclose()  # the app stops (on_shutdown, or close_on_signal at SIGTERM)
            waits[1].cancel("Task cancelled, timeout graceful shutdown exceeded")
            with pytest.raises(asyncio.CancelledError) as info:
                await waits[1]
        assert waits[1].cancelled()
        assert info.value.args == ("Task cancelled, timeout graceful shutdown exceeded",)
        assert abandoned(caplog) == [ids[1]]
        last = [r for r in caplog.records if r.levelno >= logging.WARNING][-1]
        assert "cancelled while shutting down" in last.getMessage()


async def test_uvicorn_graceful_shutdown_timeout_keeps_every_id(
    redis_url: str, tmp_path: Path
) -> None:
    """20 requests wait on slow generations in the README's FastAPI app (uvicorn --workers 2,
    --timeout-graceful-shutdown 2) when SIGTERM comes: uvicorn cancels them after 2 s; every
    generation id is in the ledger, under its key, and in one WARNING line of the app's log."""
    config = tmp_path / "log.json"
    config.write_text(json.dumps(LOG_CONFIG))
    ledger_path = tmp_path / "ledger.db"
    port = free_port()
    lines: list[str] = []
    async with FakePrismServer(generation_seconds=1000) as fake:
        app = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "uvicorn", "tests.apps.fastapi_app:app", "--workers", "2"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-config", str(config)),
            *("--timeout-graceful-shutdown", "2"),
            cwd=ROOT,
            env={
                **os.environ,
                "PRISM_API_KEY": fake.api_key,
                "PRISM_BASE_URL": fake.base_url,
                "PRISM_WEBHOOK_SECRET": SECRET,
                "PRISM_HOOK_URL": f"http://127.0.0.1:{port}/prism/hook",
                "PRISM_LEDGER": str(ledger_path),
                "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/9",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        assert app.stdout is not None

        async def read(stdout: asyncio.StreamReader) -> None:
            async for raw in stdout:
                lines.append(raw.decode(errors="replace").rstrip())

        reader = asyncio.create_task(read(app.stdout))
        writers: list[asyncio.StreamWriter] = []
        try:
            await until(lambda: sum("startup complete" in line for line in lines) == 2, 15)
            for n in range(REQUESTS):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(
                    f"POST /videos?hook=h{n}&key=k{n} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Length: 0\r\n\r\n".encode()
                )
                writers.append(writer)
            await until(lambda: len(fake.generations) == REQUESTS, 10)
            await asyncio.sleep(0.5)  # every request is in its wait now
            stopping = time.monotonic()
            app.send_signal(signal.SIGTERM)
            await asyncio.wait_for(app.wait(), 10)
            stopped = time.monotonic() - stopping
        finally:
            if app.returncode is None:
                os.killpg(app.pid, signal.SIGKILL)
                await app.wait()
            for writer in writers:
                writer.close()
            await asyncio.wait_for(reader, 5)
        by_hook = {json.loads(g.prompt)["hook"]: g.id for g in fake.generations.values()}
        template_posts = len(fake.requests_to("POST", "/api/templates/abc123/generate"))
    print(f"SIGTERM -> app stopped: {stopped:.1f} s")
    assert template_posts == REQUESTS
    async with SQLiteLedger(ledger_path) as ledger:
        for n in range(REQUESTS):
            submission = await ledger.get(f"videos/k{n}")
            assert submission is not None
            assert submission.state == "accepted"
            assert list(submission.generation_ids) == [by_hook[f"h{n}"]]
    warned = [match[1] for line in lines if (match := ABANDONED.search(line))]
    assert sorted(warned) == sorted(by_hook.values()), lines
    cancelled = [re.search(r"Cancel (\d+) running task", line) for line in lines]
    assert sum(int(match[1]) for match in cancelled if match) == REQUESTS  # by uvicorn
    assert 2 <= stopped < 8
