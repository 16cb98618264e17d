"""FakePrismServer's templates, spoken to in raw HTTP: list, get and generate.

These tests never use the SDK client: they send what the documented API (prism-api.md) receives
and check what it answers, so that tests written against the fake prove something about the real
API. Every server runs with ``generation_seconds=100`` so that only :meth:`advance` moves a
generation along, never real time.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from prism_async.testing import TEMPLATE_PRICE, FakePrismServer
from tests.fake_http import SECONDS, assert_error, call, get_generation, template_generate

# -- list and get ------------------------------------------------------------------------------


async def test_list_templates_shape_and_both_documented_shapes(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """The list is ``{data, pagination}`` with limit 50 by default, holding both template shapes."""
    status, payload = await call(http, "GET", f"{server.base_url}/templates")
    assert status == 200
    assert set(payload) == {"data", "pagination"}
    assert payload["pagination"] == {"offset": 0, "limit": 50, "has_more": False}
    templates = {t["id"]: t for t in payload["data"]}
    assert {"abc123", "featured-ugc-pitch"} <= set(templates)

    older = templates["abc123"]
    assert {
        "id",
        "title",
        "description",
        "category",
        "duration_sec",
        "input_variables",
        "prompt_template",
    } <= set(older)
    optional = {"placeholder", "description", "default_value", "max_length", "min_length", "slot"}
    for variable in older["input_variables"]:
        assert {"key", "label", "type", "required"} <= set(variable)
        assert set(variable) <= {"key", "label", "type", "required"} | optional
        assert variable["type"] in ("text", "image", "video", "audio")
        assert isinstance(variable["required"], bool)

    newer = templates["featured-ugc-pitch"]
    assert set(newer) == {"id", "title", "description", "kind", "model_name"}
    assert newer["kind"] in ("image", "video")
    assert all(t["kind"] in ("image", "video") for t in payload["data"] if "kind" in t)


async def test_list_templates_limit_and_offset(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``limit`` and ``offset`` page through the list; ``has_more`` is false on the last page."""
    _, everything = await call(http, "GET", f"{server.base_url}/templates")
    total = len(everything["data"])
    assert total >= 3
    seen: list[str] = []
    offset = 0
    while True:
        status, page = await call(
            http, "GET", f"{server.base_url}/templates", params={"limit": 2, "offset": offset}
        )
        assert status == 200
        assert page["pagination"]["offset"] == offset
        assert page["pagination"]["limit"] == 2
        assert len(page["data"]) <= 2
        seen.extend(t["id"] for t in page["data"])
        if not page["pagination"]["has_more"]:
            break
        offset += 2
    assert seen == [t["id"] for t in everything["data"]]
    status, beyond = await call(
        http, "GET", f"{server.base_url}/templates", params={"offset": total + 5}
    )
    assert status == 200
    assert beyond["data"] == []
    assert beyond["pagination"]["has_more"] is False
    status, most = await call(http, "GET", f"{server.base_url}/templates", params={"limit": 100})
    assert status == 200
    assert most["pagination"]["limit"] == 100


async def test_list_templates_q_and_category(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """``q`` searches titles and descriptions; ``category`` (older docs) filters by category."""
    url = f"{server.base_url}/templates"
    _, by_q = await call(http, "GET", url, params={"q": "pitch"})
    assert {t["id"] for t in by_q["data"]} == {"abc123", "featured-ugc-pitch"}
    _, by_q_case = await call(http, "GET", url, params={"q": "PITCH"})
    assert by_q_case["data"] == by_q["data"]
    _, by_category = await call(http, "GET", url, params={"category": "ugc"})
    assert [t["id"] for t in by_category["data"]] == ["abc123"]
    _, nothing = await call(http, "GET", url, params={"q": "no such template"})
    assert nothing["data"] == []
    assert nothing["pagination"]["has_more"] is False


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"offset": "-1"},
        {"q": "a"},
        {"q": " a "},
    ],
    ids=repr,
)
async def test_list_templates_validation(
    server: FakePrismServer, http: aiohttp.ClientSession, params: dict[str, str]
) -> None:
    """An out-of-range limit, a negative offset or a one-character ``q`` answers 400."""
    status, payload = await call(http, "GET", f"{server.base_url}/templates", params=params)
    assert_error(status, payload, 400, "validation_error")


async def test_get_template(server: FakePrismServer, http: aiohttp.ClientSession) -> None:
    """GET /api/templates/:id answers ``{"data": template}``, and 404 not_found when unknown."""
    _, listing = await call(http, "GET", f"{server.base_url}/templates")
    for template in listing["data"]:
        status, payload = await call(http, "GET", f"{server.base_url}/templates/{template['id']}")
        assert status == 200
        assert payload == {"data": template}
    status, payload = await call(http, "GET", f"{server.base_url}/templates/no-such-template")
    assert_error(status, payload, 404, "not_found")


# -- generate ----------------------------------------------------------------------------------


async def test_template_generate_response_shape(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Generating answers generation_id/status generating, template_id, credits and an estimate."""
    status, payload = await template_generate(
        http,
        server,
        "abc123",
        {
            "variables": {
                "hook": "Check out this amazing product",
                "productImage": "https://example.com/product.jpg",
                "benefit": "2x faster results",
            }
        },
    )
    assert status == 200, payload
    assert set(payload) == {
        "generations",
        "template_id",
        "credits_charged",
        "latency_estimate_sec",
    }
    assert len(payload["generations"]) == 1
    generation = payload["generations"][0]
    assert set(generation) == {"generation_id", "status"}
    assert generation["status"] == "generating"
    assert payload["template_id"] == "abc123"
    assert payload["credits_charged"] == TEMPLATE_PRICE
    estimate = payload["latency_estimate_sec"]
    assert set(estimate) == {"typical", "busy"}
    assert estimate["typical"] > 0
    assert estimate["busy"] >= estimate["typical"]
    assert server.credits == 10_000 - TEMPLATE_PRICE

    polled = await get_generation(http, server, generation["generation_id"])
    assert polled["status"] == "generating"
    assert polled["template_id"] == "abc123"
    server.advance(SECONDS)
    polled = await get_generation(http, server, generation["generation_id"])
    assert polled["status"] == "completed"
    assert polled["template_id"] == "abc123"


async def test_template_generate_required_variables_and_defaults(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A required variable without default is needed; one with a default or optional may be left."""
    status, payload = await template_generate(
        http, server, "abc123", {"variables": {"benefit": "Saves time"}}
    )
    assert_error(status, payload, 400, "validation_error")
    assert server.credits == 10_000
    status, payload = await template_generate(
        http, server, "abc123", {"variables": {"hook": "Look at this"}}
    )
    assert status == 200, payload
    status, payload = await template_generate(http, server, "product-unboxing", {"variables": {}})
    assert_error(status, payload, 400, "validation_error")
    status, payload = await template_generate(
        http, server, "product-unboxing", {"variables": {"product": "Phone"}}
    )
    assert status == 200, payload
    status, payload = await template_generate(http, server, "featured-ugc-pitch", {"variables": {}})
    assert status == 200, payload
    assert server.credits == 10_000 - 3 * TEMPLATE_PRICE


@pytest.mark.parametrize(
    "body",
    [{}, {"variables": None}, {"variables": ["hook"]}, {"variables": "hook=x"}],
    ids=repr,
)
async def test_template_generate_needs_variables_object(
    server: FakePrismServer, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    """A body without a ``variables`` object answers 400 validation_error."""
    status, payload = await template_generate(http, server, "featured-ugc-pitch", body)
    assert_error(status, payload, 400, "validation_error")
    assert server.credits == 10_000


async def test_template_generate_invalid_json(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Invalid JSON on template generate answers 400 validation_error."""
    status, payload = await call(
        http,
        "POST",
        f"{server.base_url}/templates/abc123/generate",
        data="{oops",
        headers={"Content-Type": "application/json"},
    )
    assert_error(status, payload, 400, "validation_error")


async def test_template_generate_unknown_and_broken_templates(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """An unknown template answers 404 not_found; ``broken-template`` 422 invalid_template."""
    status, payload = await template_generate(http, server, "no-such", {"variables": {}})
    assert_error(status, payload, 404, "not_found")
    status, payload = await template_generate(http, server, "broken-template", {"variables": {}})
    assert_error(status, payload, 422, "invalid_template")
    assert server.credits == 10_000
    assert server.generations == {}


async def test_template_generate_insufficient_credits(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """Template generation with too few credits answers 402 insufficient_credits."""
    server.credits = TEMPLATE_PRICE - 1
    status, payload = await template_generate(http, server, "featured-ugc-pitch", {"variables": {}})
    assert_error(status, payload, 402, "insufficient_credits")
    assert server.credits == TEMPLATE_PRICE - 1


async def test_template_generate_character_variables(
    server: FakePrismServer, http: aiohttp.ClientSession
) -> None:
    """A ``character_variables`` entry naming a saved character is accepted for an image slot."""
    status, created = await call(
        http,
        "POST",
        f"{server.base_url}/characters",
        json={"name": "Ava", "images": ["https://example.com/ava.png"]},
    )
    assert status == 201
    status, payload = await template_generate(
        http,
        server,
        "product-unboxing",
        {
            "variables": {"product": "Phone"},
            "character_variables": {"presenter": created["data"]["id"]},
        },
    )
    assert status == 200, payload
