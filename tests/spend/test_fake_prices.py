"""The fake's price table: configurable per model, duration, resolution, audio, count and
template, changed mid-run in-process or through the control API; quotes follow it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from prism_async import GenerationRequest, PrismClient, TemplateRequest
from prism_async.ledger import SQLiteLedger
from prism_async.testing import FakePrismServer, PriceTable
from tests.conftest import NO_WAIT

VARIABLES = {"hook": "Hello there", "benefit": "Saves time"}


async def test_the_table_sets_what_each_submission_costs(tmp_path: Path) -> None:
    table = PriceTable(
        models={"veo-3.1": 100}, durations={"10s": 1.5}, resolutions={"1080p": 2}, audio=1.25
    )
    async with (
        FakePrismServer(prices=table) as fake,
        PrismClient(
            fake.api_key, base_url=fake.base_url, retry=NO_WAIT, ledger=SQLiteLedger(tmp_path / "l")
        ) as prism,
    ):
        cases: list[tuple[dict[str, Any], int]] = [
            ({}, 100),
            ({"count": 3}, 300),
            ({"duration": "10s"}, 150),
            ({"duration": 10, "resolution": "1080p", "has_audio": True}, 375),
            ({"duration": "10s", "count": 2, "has_audio": True}, 376),  # round(187.5) * 2
        ]
        for options, cost in cases:
            batch = await prism.generations.create(prompt="p", model_name="veo-3.1", **options)
            assert batch.metadata.credits_charged == cost, options
            seen = await prism.quote(GenerationRequest(prompt="q", model_name="veo-3.1", **options))
            assert (seen.credits, seen.basis) == (cost, "seen")
        # "estimated": the per-video price of the same settings, times count
        four = GenerationRequest(prompt="q", model_name="veo-3.1", duration="10s", count=4)
        estimated = await prism.quote(four)
        assert (estimated.credits, estimated.basis) == (600, "estimated")
        batch = await prism.generations.create(
            prompt="p", model_name="veo-3.1", duration="10s", count=4
        )
        assert batch.metadata.credits_charged == estimated.credits
        # changed mid-run: the next charge teaches the ledger the new price
        fake.prices.models["veo-3.1"] = 80
        await prism.generations.create(prompt="p", model_name="veo-3.1")
        assert (
            await prism.quote(GenerationRequest(prompt="q", model_name="veo-3.1"))
        ).credits == 80
        fake.prices.templates["abc123"] = 70
        await prism.templates.generate("abc123", variables=VARIABLES)
        template = await prism.quote(TemplateRequest("abc123"))
        assert (template.credits, template.basis) == (70, "seen")


async def test_the_control_api_changes_prices() -> None:
    async with FakePrismServer() as fake, aiohttp.ClientSession() as http:
        url = f"{fake.base_url.removesuffix('/api')}/_fake/prices"
        async with http.post(url, json={"models": {"kling-2.5": 90}, "audio": 2}) as answer:
            assert answer.status == 200
            table = (await answer.json())["data"]
        assert table["models"]["kling-2.5"] == 90
        assert table["models"]["veo-3.1"] == 120  # the rest is kept
        assert fake.prices.audio == 2
        async with http.post(url, json={"colour": 1}) as refused:
            assert refused.status == 400
        async with http.post(url, json={"models": {"x": "cheap"}}) as refused:
            assert refused.status == 400


def test_a_bad_table_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="audio"):
        PriceTable().update({"audio": "loud"})
