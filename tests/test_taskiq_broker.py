"""PrismStreamBroker on a real redis-server: live jobs are never redelivered (heartbeats), a dead
worker's jobs are reclaimed with no new traffic, the reclaim lock expires, acked messages go.

A "worker" here is a broker object whose ``listen()`` the test drives by hand; a dead one is
one that stops (no heartbeat, no ack, nothing handed back) without a word, as ``kill -9``
leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from taskiq import AckableMessage, BrokerMessage

from prism_async.integrations.taskiq import PrismStreamBroker
from tests.taskiq_helpers import unique

Factory = Callable[..., PrismStreamBroker]


@pytest.fixture
async def make_broker(redis_url: str) -> AsyncIterator[Factory]:
    """Brokers on one fresh queue (shut down after the test); worker ones by default."""
    queue = unique("queue")
    made: list[PrismStreamBroker] = []

    def make(*, worker: bool = True, **options: Any) -> PrismStreamBroker:
        options.setdefault("idle_timeout", 400)
        options.setdefault("heartbeat_interval", 0.05)
        options.setdefault("xread_block", 100)
        broker = PrismStreamBroker(redis_url, queue_name=queue, **options)
        broker.is_worker_process = worker
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.shutdown()


async def send(broker: PrismStreamBroker, payload: bytes) -> None:
    message = BrokerMessage(task_id=uuid.uuid4().hex, task_name="t", message=payload, labels={})
    await broker.kick(message)


async def receive(
    listening: AsyncGenerator[AckableMessage, None], timeout: float
) -> AckableMessage | None:
    """The next message a worker gets within ``timeout`` seconds, or None."""
    try:
        async with asyncio.timeout(timeout):
            return await anext(listening)
    except TimeoutError:
        return None


async def die(broker: PrismStreamBroker) -> None:
    """What ``kill -9`` leaves of a worker: its heartbeat stops, nothing is acknowledged or
    handed back (the fixture's shutdown at the end of the test hands back what is left)."""
    beating = broker._heartbeat
    assert beating is not None
    beating.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beating


async def ack(message: AckableMessage) -> None:
    result = message.ack()
    if result is not None:
        await result


async def test_a_dead_workers_message_is_reclaimed_with_no_new_traffic(
    make_broker: Factory,
) -> None:
    """A worker takes a job and dies; with nothing new sent, another worker gets the job once
    it has been idle for ``idle_timeout`` (taskiq-redis 1.2.4 never gave it back)."""
    dead, alive = make_broker(), make_broker()
    await dead.startup()
    await alive.startup()
    await send(dead, b"job-1")
    taken = await receive(dead.listen(), 2.0)
    assert taken is not None
    assert taken.data == b"job-1"
    await die(dead)  # killed: no heartbeat, no ack, nothing handed back
    started = time.monotonic()
    again = await receive(alive.listen(), 5.0)
    assert again is not None
    assert again.data == b"job-1"
    assert time.monotonic() - started >= 0.3  # not before it was idle for idle_timeout
    await ack(again)
    assert alive.held == 0


async def test_a_live_workers_long_job_is_not_redelivered(
    make_broker: Factory, redis_url: str
) -> None:
    """A job held far longer than ``idle_timeout`` by a worker that is alive (its heartbeat
    beats) never reaches another worker; once acked it is deleted from the stream."""
    busy, idle = make_broker(), make_broker()
    await busy.startup()
    await idle.startup()
    await send(busy, b"long-job")
    taken = await receive(busy.listen(), 2.0)
    assert taken is not None
    assert busy.held == 1
    assert await receive(idle.listen(), 1.5) is None  # 1.5 s > 3x idle_timeout
    await ack(taken)
    assert busy.held == 0
    async with Redis.from_url(redis_url) as redis:
        assert await redis.xlen(busy.queue_name) == 0


async def test_without_heartbeats_a_long_job_goes_to_another_worker(make_broker: Factory) -> None:
    """The failure the heartbeat prevents: with it off, a job running past ``idle_timeout`` is
    handed to a second worker while the first still runs it."""
    busy, idle = make_broker(heartbeat_interval=0), make_broker(heartbeat_interval=0)
    await busy.startup()
    await idle.startup()
    await send(busy, b"long-job")
    assert await receive(busy.listen(), 2.0) is not None
    again = await receive(idle.listen(), 3.0)
    assert again is not None
    assert again.data == b"long-job"


async def test_a_stale_reclaim_lock_expires(make_broker: Factory, redis_url: str) -> None:
    """The reclaim lock of a worker killed while holding it blocks reclaiming only until its
    finite timeout."""
    dead, alive = make_broker(), make_broker(unacknowledged_lock_timeout=1.0)
    await dead.startup()
    await alive.startup()
    await send(dead, b"job")
    assert await receive(dead.listen(), 2.0) is not None
    await die(dead)
    async with Redis.from_url(redis_url) as redis:
        lock = f"autoclaim:{alive.consumer_group_name}:{alive.queue_name}"
        await redis.set(lock, "a killed worker's token", px=1500)
    started = time.monotonic()
    again = await receive(alive.listen(), 6.0)
    assert again is not None
    assert time.monotonic() - started >= 1.0


async def test_every_message_is_delivered_once_among_workers(make_broker: Factory) -> None:
    """Jobs spread over three live workers: each comes once, none is reclaimed."""
    workers = [make_broker() for _ in range(3)]
    for worker in workers:
        await worker.startup()
    for index in range(30):
        await send(workers[0], f"job-{index}".encode())
    seen: list[bytes] = []

    async def work(broker: PrismStreamBroker) -> None:
        listening = broker.listen()
        while (message := await receive(listening, 1.0)) is not None:
            seen.append(message.data)
            await asyncio.sleep(0.02)
            await ack(message)

    await asyncio.gather(*(work(worker) for worker in workers))
    assert sorted(seen) == sorted(f"job-{index}".encode() for index in range(30))


def test_unsafe_settings_are_refused(redis_url: str) -> None:
    """``maxlen`` (trims unread jobs) and a heartbeat no shorter than ``idle_timeout``."""
    with pytest.raises(ValueError, match="maxlen"):
        PrismStreamBroker(redis_url, maxlen=1000)
    with pytest.raises(ValueError, match="heartbeat"):
        PrismStreamBroker(redis_url, idle_timeout=1000, heartbeat_interval=1.0)
    with pytest.raises(ValueError, match="positive"):
        PrismStreamBroker(redis_url, unacknowledged_lock_timeout=0)


def test_the_defaults_rule_out_redelivering_a_15_minute_job(redis_url: str) -> None:
    """``idle_timeout`` above a 15-minute wait and its download, heartbeats well inside it, a
    finite reclaim lock, and the URL (it may hold a password) kept out of the repr."""
    broker = PrismStreamBroker(redis_url)
    assert broker.idle_timeout > 15 * 60 * 1000
    assert 0 < broker.heartbeat_interval * 1000 < broker.idle_timeout / 2
    assert broker.unacknowledged_lock_timeout is not None
    assert broker.maxlen is None
    assert redis_url not in repr(broker)
