"""The worker app of the fleet test: ``taskiq worker tests.taskiq_fleet_app:broker``.

Configured from the environment the test sets (``FLEET_REDIS``, ``FLEET_QUEUE``,
``FLEET_PREFIX``, ``FLEET_DOWNLOADS``, ``FLEET_RECONCILE_WINDOW``, ``FLEET_RECONCILE_INTERVAL``,
``FLEET_BUDGET``: the ledger budget the client spends from, none by default; ``PRISM_API_KEY``,
``PRISM_BASE_URL``), with a short ``idle_timeout`` so that a killed worker's jobs come back within
the test. A journal middleware records in Redis what each process runs (``<prefix>running``:
task id -> pid and arguments; ``<prefix>runs``: every start; ``<prefix>ended``: every end, with
the job's ``state`` or the type of the ``error`` it raised), and each worker adds its pid to
``<prefix>workers`` once started: the test picks the workers it kills from them.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq import TaskiqEvents, TaskiqMessage, TaskiqMiddleware, TaskiqResult, TaskiqState

from prism_async import PollPolicy
from prism_async.integrations.taskiq import PrismStreamBroker, PrismTasks

REDIS = os.environ.get("FLEET_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("FLEET_PREFIX", "fleet:")

broker = PrismStreamBroker(
    REDIS,
    queue_name=os.environ.get("FLEET_QUEUE", "fleet"),
    idle_timeout=2000,
    heartbeat_interval=0.3,
    reclaim_interval=0.5,
    xread_block=300,
)
tasks = PrismTasks(
    broker,
    ledger_url=REDIS,
    ledger_prefix=PREFIX,
    download_dir=os.environ.get("FLEET_DOWNLOADS"),
    lease_seconds=3.0,
    reconcile_window=float(os.environ.get("FLEET_RECONCILE_WINDOW", "1800")),
    reconcile_interval=float(os.environ.get("FLEET_RECONCILE_INTERVAL", "0.3")),
    poll=PollPolicy(initial_delay=0.1, interval=0.2, max_interval=0.3, jitter=0.1, timeout=60),
    budget=os.environ.get("FLEET_BUDGET") or None,
)


class Journal(TaskiqMiddleware):
    """Records which process runs which job."""

    def __init__(self) -> None:
        super().__init__()
        self._redis: Redis | None = None

    def _connection(self) -> Redis:
        if self._redis is None:
            self._redis = Redis.from_url(REDIS, decode_responses=True)
        return self._redis

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        entry = json.dumps(
            {"pid": os.getpid(), "task": message.task_name, "args": message.args}, default=str
        )
        redis = self._connection()
        with contextlib.suppress(RedisError):  # the outage tests stop Redis: best-effort then
            await redis.hset(f"{PREFIX}running", message.task_id, entry)
            await redis.rpush(f"{PREFIX}runs", entry)
        return message

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        value = result.return_value
        entry = json.dumps(
            {
                "pid": os.getpid(),
                "task": message.task_name,
                "args": message.args,
                "state": value.get("state") if isinstance(value, dict) else None,
                "error": type(result.error).__name__ if result.is_err else None,
            },
            default=str,
        )
        with contextlib.suppress(RedisError):
            await self._connection().hdel(f"{PREFIX}running", message.task_id)
            await self._connection().rpush(f"{PREFIX}ended", entry)

    async def shutdown(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


broker.add_middlewares(Journal())


async def _announce(state: TaskiqState) -> None:
    async with Redis.from_url(REDIS) as redis:
        await redis.sadd(f"{PREFIX}workers", os.getpid())


broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, _announce)
