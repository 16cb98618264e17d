"""prism_async.testing: a faithful fake of the whole Prism API, in-process on loopback.

What ``moto`` is to AWS users, :class:`FakePrismServer` is to Prism users: run your tests and
demos against it, spend no credits, reach no network::

    from prism_async import PrismClient
    from prism_async.testing import FakePrismServer

    async with FakePrismServer() as server:
        async with PrismClient(server.api_key, base_url=server.base_url) as prism:
            batch = await prism.generations.create(prompt="A cat", model_name="veo-3.1")
            server.advance(10)                      # no sleeping: move the clock
            video = await prism.generations.get(batch.ids[0])
"""

from ._data import MODEL_PRICES, TEMPLATE_PRICE
from ._faults import Fault
from ._instant import Sleeps, instant_waits
from ._prices import PriceTable
from ._server import (
    FakeGeneration,
    FakePrismServer,
    RecordedRequest,
    StoredObject,
    WebhookDelivery,
)

__all__ = [
    "MODEL_PRICES",
    "TEMPLATE_PRICE",
    "FakeGeneration",
    "FakePrismServer",
    "Fault",
    "PriceTable",
    "RecordedRequest",
    "Sleeps",
    "StoredObject",
    "WebhookDelivery",
    "instant_waits",
]
__all__.sort()
