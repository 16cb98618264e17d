"""One process of the budget race: ``python -m tests.spend.budget_child LEDGER BASE_URL KEY
BUDGET NAME COUNT``. Sends COUNT keyed submissions (``NAME/i``, prompt ``NAME clip i``), four
at a time, on a client spending from BUDGET, and prints one JSON line per submission:
``{"key": ..., "outcome": "accepted" | "refused" | "<error type>"}``."""

from __future__ import annotations

import asyncio
import json
import sys

from prism_async import BudgetExceededError, PrismClient, RetryPolicy
from prism_async.ledger import Ledger, RedisLedger, SQLiteLedger


async def main(
    ledger_url: str, base_url: str, api_key: str, budget: str, name: str, count: int
) -> None:
    ledger: Ledger = (
        RedisLedger(ledger_url) if ledger_url.startswith("redis://") else SQLiteLedger(ledger_url)
    )
    slots = asyncio.Semaphore(4)
    retry = RetryPolicy(max_retries=0)
    async with PrismClient(
        api_key, base_url=base_url, ledger=ledger, budget=budget, retry=retry
    ) as prism:

        async def one(index: int) -> None:
            key = f"{name}/{index}"
            async with slots:
                try:
                    await prism.generations.create(
                        prompt=f"{name} clip {index}", model_name="veo-3.1", key=key
                    )
                    outcome = "accepted"
                except BudgetExceededError:
                    outcome = "refused"
                except Exception as exc:
                    outcome = type(exc).__name__
            print(json.dumps({"key": key, "outcome": outcome}), flush=True)

        await asyncio.gather(*(one(index) for index in range(count)))


if __name__ == "__main__":
    ledger_url, base_url, api_key, budget, name, count = sys.argv[1:7]
    asyncio.run(main(ledger_url, base_url, api_key, budget, name, int(count)))
