"""prism_async.ledger: durable submissions that survive crashes, restarts and job retries.

The API has no idempotency key; a ledger carries the SDK's "never send a paid POST twice"
across processes::

    from prism_async import PrismClient
    from prism_async.ledger import SQLiteLedger

    async with PrismClient(ledger=SQLiteLedger("prism-ledger.db")) as prism:
        batch = await prism.generations.create(
            key="campaign-42/clip-7", prompt="A product demo", model_name="veo-3.1"
        )
        # run it again (after a crash, in a retried job): no second POST, the same batch

See the README's "Durable runs" for the states and what to do with an ambiguous key.
"""

from typing import TYPE_CHECKING, Any

from ._base import Ledger
from ._model import (
    Budget,
    Charge,
    GenerationRecord,
    Reservation,
    SpendRow,
    Submission,
    SubmissionState,
)
from ._prices import Quote

if TYPE_CHECKING:
    from ._redis import RedisLedger
    from ._sqlite import SQLiteLedger


def __getattr__(name: str) -> Any:
    # The backends are imported on first use: ``import prism_async`` stays free of sqlite3,
    # and RedisLedger needs the ``redis`` extra only when it is used.
    if name == "SQLiteLedger":
        from ._sqlite import SQLiteLedger

        return SQLiteLedger
    if name == "RedisLedger":
        from ._redis import RedisLedger

        return RedisLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Budget",
    "Charge",
    "GenerationRecord",
    "Ledger",
    "Quote",
    "RedisLedger",
    "Reservation",
    "SQLiteLedger",
    "SpendRow",
    "Submission",
    "SubmissionState",
]
