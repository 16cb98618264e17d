"""``prism-async ledger spend`` and ``prism-async ledger budget``, in-process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prism_async.cli import main
from prism_async.ledger import Charge, SQLiteLedger
from tests.test_cli import json_lines

NOW = datetime.now(UTC)
CHARGES = [
    Charge("spring/1", NOW, 120, "generation", "veo-3.1", "s", 1, {"team": "ads"}, "b"),
    Charge("spring/2", NOW, 240, "generation", "veo-3.1", "s2", 2, {"team": "ads"}, "b"),
    Charge("~x", NOW - timedelta(days=3), 50, "template", "abc123", "t", 1, {}, None),
]


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    path = tmp_path / "l.db"

    async def fill() -> None:
        async with SQLiteLedger(path) as db:
            await db.set_budget("b", 1000)
            for charge in CHARGES:
                await db.add_charge(charge)

    asyncio.run(fill())
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_spend_groups_totals_and_json(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ledger", "spend", "--ledger", ledger)
    assert code == 0
    lines = [line.split() for line in out.splitlines() if line.strip()]
    assert ["spring", "360", "3", "2"] in lines
    assert ["(none)", "50", "1", "1"] in lines
    assert ["total", "410", "4", "3"] in lines
    code, out, _ = run(capsys, "--json", "ledger", "spend", "--by", "model", "--ledger", ledger)
    assert code == 0
    assert {r["group"]: r["credits"] for r in json_lines(out)} == {"veo-3.1": 360, "abc123": 50}
    since = (NOW - timedelta(days=1)).date().isoformat()
    code, out, _ = run(capsys, "--json", "ledger", "spend", "--since", since, "--ledger", ledger)
    assert [r["credits"] for r in json_lines(out)] == [360]
    code, _, err = run(capsys, "ledger", "spend", "--since", "yesterday", "--ledger", ledger)
    assert code == 2
    assert "--since" in err


def test_budget_show_set_and_refuse(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", "ledger", "budget", "b", "--ledger", ledger)
    assert code == 0
    (shown,) = json_lines(out)
    assert (shown["max_credits"], shown["spent"], shown["available"]) == (1000, 360, 640)
    code, out, _ = run(
        capsys, "ledger", "budget", "daily", "--set", "500", "--per", "day", "--ledger", ledger
    )
    assert code == 0
    assert "per day" in out
    assert "cap       500" in out
    code, _, err = run(capsys, "ledger", "budget", "nobody", "--ledger", ledger)
    assert (code, "no budget is named 'nobody'" in err) == (2, True)
    code, _, err = run(capsys, "ledger", "budget", "b", "--set", "-1", "--ledger", ledger)
    assert (code, "max_credits" in err) == (2, True)
    code, _, err = run(capsys, "ledger", "budget", "b", "--per", "day", "--ledger", ledger)
    assert (code, "--per" in err) == (2, True)
