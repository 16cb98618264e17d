"""The worker app of the fleet benchmark: ``taskiq worker benchmarks._fleet_app:broker``.

The README's fleet as a user would run it: a :class:`PrismStreamBroker` with its production
defaults (``idle_timeout`` 20 minutes, heartbeats, reclaiming) and :class:`PrismTasks` with a
``RedisLedger`` on the same Redis. Configured from the environment ``fleet.py`` sets
(``FLEET_REDIS``, ``FLEET_QUEUE``, ``FLEET_PREFIX``, ``FLEET_DOWNLOADS``, ``PRISM_API_KEY``,
``PRISM_BASE_URL``; ``fleet_outage.py`` also sets ``FLEET_IDLE_TIMEOUT_MS``,
``FLEET_RECLAIM_INTERVAL``, ``FLEET_RECONCILE_WINDOW`` and ``FLEET_RECONCILE_INTERVAL``, so
that a killed worker's jobs and an ambiguous key come back within the run); each
worker adds its pid to ``<prefix>bench:workers`` once started, so the benchmark knows when
the fleet is up. Nothing else is added to the tasks' path.
"""

from __future__ import annotations

import os
from typing import Any

from redis.asyncio import Redis
from taskiq import TaskiqEvents, TaskiqState

from prism_async.integrations.taskiq import PrismStreamBroker, PrismTasks

REDIS = os.environ.get("FLEET_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("FLEET_PREFIX", "bench:")

_options: dict[str, Any] = {}
if os.environ.get("FLEET_IDLE_TIMEOUT_MS"):
    _options["idle_timeout"] = int(os.environ["FLEET_IDLE_TIMEOUT_MS"])
if os.environ.get("FLEET_RECLAIM_INTERVAL"):
    _options["reclaim_interval"] = float(os.environ["FLEET_RECLAIM_INTERVAL"])

broker = PrismStreamBroker(REDIS, queue_name=os.environ.get("FLEET_QUEUE", "bench"), **_options)
_reconcile: dict[str, Any] = {}
if os.environ.get("FLEET_RECONCILE_WINDOW"):
    _reconcile["reconcile_window"] = float(os.environ["FLEET_RECONCILE_WINDOW"])
    _reconcile["reconcile_interval"] = float(os.environ["FLEET_RECONCILE_INTERVAL"])
tasks = PrismTasks(
    broker,
    ledger_url=REDIS,
    ledger_prefix=PREFIX,
    download_dir=os.environ.get("FLEET_DOWNLOADS"),
    **_reconcile,
)


async def _announce(state: TaskiqState) -> None:
    async with Redis.from_url(REDIS) as redis:
        await redis.sadd(f"{PREFIX}bench:workers", os.getpid())


broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, _announce)
