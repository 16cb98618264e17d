"""The fake's control API under ``/_fake/``: the controls of FakePrismServer over plain HTTP.

For tests whose app (or whose fake) runs in another process: read the request log, inject
and clear faults, move the clock, decide outcomes, set credits. Control requests are never
recorded, never faulted and need no key.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from prism_async import InsufficientCreditsError, PollPolicy, PrismClient
from prism_async.testing import FakePrismServer
from tests.conftest import GENERATION_SECONDS, NO_WAIT

FAST = PollPolicy(initial_delay=0.01, interval=0.02, max_interval=0.05)


async def control(
    session: aiohttp.ClientSession,
    server: FakePrismServer,
    method: str,
    path: str,
    body: Any = None,
    expect: int = 200,
) -> Any:
    """One control request; checks the status and returns the decoded answer (or None)."""
    async with session.request(method, f"{server.root}/_fake/{path}", json=body) as response:
        assert response.status == expect, await response.text()
        return None if response.status == 204 else await response.json()


@pytest.fixture
async def prism(server: FakePrismServer) -> Any:
    async with PrismClient(
        server.api_key, base_url=server.base_url, poll=FAST, retry=NO_WAIT
    ) as client:
        yield client


async def test_the_request_log_is_readable_filterable_and_clearable(
    server: FakePrismServer, storage: aiohttp.ClientSession, prism: PrismClient
) -> None:
    batch = await prism.generations.create(prompt="A cat", model_name="veo-3.1")
    await prism.generations.get(batch.ids[0])
    log = await control(storage, server, "GET", "requests")
    assert [(r["method"], r["path"]) for r in log["data"]] == [
        ("POST", "/api/generations"),
        ("GET", f"/api/generations/{batch.ids[0]}"),
    ]
    assert log["data"][0]["json"] == {"prompt": "A cat", "modelName": "veo-3.1"}
    posts = await control(storage, server, "GET", "requests?method=post&path=/api/gen*")
    assert [r["path"] for r in posts["data"]] == ["/api/generations"]
    assert await control(storage, server, "DELETE", "requests", expect=204) is None
    assert server.requests == []
    assert (await control(storage, server, "GET", "requests"))["data"] == []  # not logged


async def test_faults_are_injected_listed_met_and_cleared(
    server: FakePrismServer, storage: aiohttp.ClientSession, prism: PrismClient
) -> None:
    spec = {"method": "post", "path": "/api/generations", "status": 429, "times": 2}
    created = await control(storage, server, "POST", "faults", spec, expect=201)
    assert created["data"]["method"] == "POST"
    assert created["data"]["times"] == 2
    listed = await control(storage, server, "GET", "faults")
    assert [(f["path"], f["status"]) for f in listed["data"]] == [("/api/generations", 429)]
    await prism.generations.create(prompt="A cat", model_name="veo-3.1")  # retried twice
    assert len(server.requests_to("POST", "/api/generations")) == 3
    assert server.faults == []  # both met
    spec = {"method": "*", "path": "/api/*", "status": 503, "times": 5}
    await control(storage, server, "POST", "faults", spec, expect=201)
    assert await control(storage, server, "DELETE", "faults", expect=204) is None
    assert server.faults == []
    batch = await prism.generations.create(prompt="A cat", model_name="veo-3.1")
    assert len(batch.ids) == 1


async def test_a_raw_fault_sends_its_bytes_as_text_over_http(
    server: FakePrismServer, storage: aiohttp.ClientSession
) -> None:
    spec = {"method": "GET", "path": "/api/templates", "raw": "HTTP/1.1 garbage\r\n\r\n"}
    await control(storage, server, "POST", "faults", spec, expect=201)
    assert server.faults[0].raw == b"HTTP/1.1 garbage\r\n\r\n"
    with pytest.raises(aiohttp.ClientResponseError, match="garbage"):
        async with storage.get(f"{server.base_url}/templates") as response:
            await response.read()
    assert server.faults == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"path": "/api/generations"}, "method: required"),
        ({"method": "GET", "path": "/x", "times": "2"}, "times: must be int"),
        ({"method": "GET", "path": "/x", "drop": 1}, "drop: must be bool"),
        ({"method": "GET", "path": "/x", "status": True}, "status: must be int"),
        ({"method": "GET", "path": "/x", "colour": "red"}, "colour: not a fault option"),
        ({"method": "GET", "path": "/x", "drop": True, "raw": "x"}, "one way only"),
        ({"method": "GET", "path": "/x", "raw": "\u2603"}, "latin-1"),
    ],
)
async def test_bad_fault_specs_are_refused_with_the_field_named(
    server: FakePrismServer, storage: aiohttp.ClientSession, spec: dict[str, Any], message: str
) -> None:
    answer = await control(storage, server, "POST", "faults", spec, expect=400)
    assert answer["error"] == "validation_error"
    assert message in answer["message"]
    assert server.faults == []


async def test_the_clock_and_outcomes_are_driven_over_http(
    server: FakePrismServer, storage: aiohttp.ClientSession, prism: PrismClient
) -> None:
    batch = await prism.generations.create(prompt="Three cats", model_name="veo-3.1-fast", count=3)
    first, second, third = batch.ids
    done = await control(storage, server, "POST", f"generations/{first}/complete")
    assert done["data"]["status"] == "completed"
    failed = await control(
        storage, server, "POST", f"generations/{second}/fail", {"reason": "Content policy"}
    )
    assert failed["data"] == {**failed["data"], "status": "failed", "error": "Content policy"}
    assert (await prism.generations.get(third)).status == "queued"
    moved = await control(storage, server, "POST", "advance", {"seconds": GENERATION_SECONDS})
    assert moved["data"] == {"advanced": GENERATION_SECONDS}
    listed = await control(storage, server, "GET", "generations")
    assert {g["id"]: g["status"] for g in listed["data"]} == {
        first: "completed",
        second: "failed",
        third: "completed",
    }
    video = await prism.wait_for_generation(third)
    assert video.is_completed


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "generations/gen_nope/complete", None, 404, "Generation not found"),
        ("POST", "generations/gen_nope/fail", {"reason": "x"}, 404, "Generation not found"),
        ("POST", "advance", {"seconds": -1}, 400, "seconds:"),
        ("POST", "advance", {"seconds": "10"}, 400, "seconds:"),
        ("POST", "advance", [1], 400, "Invalid JSON request body"),
        ("PATCH", "account", {"credits": 1.5}, 400, "credits: must be an integer"),
        ("PATCH", "account", {"free_tier_paused": "yes"}, 400, "free_tier_paused:"),
        ("PATCH", "account", {"history_completed_only": 1}, 400, "history_completed_only:"),
    ],
)
async def test_bad_control_requests_keep_the_documented_error_shape(
    server: FakePrismServer,
    storage: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any,
    status: int,
    message: str,
) -> None:
    answer = await control(storage, server, method, path, body, expect=status)
    assert set(answer) == {"error", "message"}
    assert message in answer["message"]


async def test_a_failed_fail_keeps_the_generation_as_it_was(
    server: FakePrismServer, storage: aiohttp.ClientSession, prism: PrismClient
) -> None:
    batch = await prism.generations.create(prompt="A cat", model_name="veo-3.1")
    path = f"generations/{batch.ids[0]}/fail"
    await control(storage, server, "POST", path, {"reason": ""}, expect=400)
    assert server.generations[batch.ids[0]].forced is None


async def test_credits_and_the_free_tier_pause_are_set_over_http(
    server: FakePrismServer, storage: aiohttp.ClientSession, prism: PrismClient
) -> None:
    account = await control(storage, server, "GET", "account")
    flags = {"free_tier_paused": False, "history_completed_only": False}
    assert account["data"] == {"credits": 10_000, **flags}
    changed = await control(storage, server, "PATCH", "account", {"credits": 100})
    assert changed["data"] == {"credits": 100, **flags}
    with pytest.raises(InsufficientCreditsError):
        await prism.generations.create(prompt="A cat", model_name="veo-3.1")  # costs 120
    await control(storage, server, "PATCH", "account", {"free_tier_paused": True})
    assert server.free_tier_paused is True


async def test_history_completed_only_is_set_over_http(
    server: FakePrismServer, storage: aiohttp.ClientSession, prism: PrismClient
) -> None:
    batch = await prism.generations.create(prompt="A lighthouse at dusk", model_name="veo-3.1")
    assert [a.id for a in (await prism.assets.search("lighthouse", source="history")).data] == [
        batch.ids[0]
    ]
    body = {"history_completed_only": True}
    changed = await control(storage, server, "PATCH", "account", body)
    assert changed["data"]["history_completed_only"] is True
    assert server.history_completed_only is True
    assert (await prism.assets.search("lighthouse", source="history")).data == []
    await control(storage, server, "POST", f"generations/{batch.ids[0]}/complete")
    found = await prism.assets.search("lighthouse", source="history")
    assert [a.id for a in found.data] == batch.ids


async def test_webhook_deliveries_are_listed(
    server: FakePrismServer, storage: aiohttp.ClientSession, prism: PrismClient
) -> None:
    port = 9  # discard: nothing listens, so delivery fails and is recorded
    await prism.templates.generate(
        "abc123",
        variables={"hook": "Hi there", "productImage": "k"},
        webhook_url=f"http://127.0.0.1:{port}/hook",
    )
    server.advance(GENERATION_SECONDS)
    await server.drain_webhooks()
    listed = await control(storage, server, "GET", "webhooks")
    assert [d["url"] for d in listed["data"]] == [f"http://127.0.0.1:{port}/hook"]
    assert listed["data"][0]["status"] is None
    assert listed["data"][0]["payload"]["status"] == "completed"


async def test_control_paths_are_never_faulted_and_need_no_key(
    server: FakePrismServer, storage: aiohttp.ClientSession
) -> None:
    server.inject("*", "*", status=500, times=5)
    account = await control(storage, server, "GET", "account")  # a storage session: no key
    assert account["data"]["credits"] == 10_000
    assert server.faults[0].times == 5
    assert server.requests == []
