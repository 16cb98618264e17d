"""Dead letters: a message delivered ``max_deliveries`` times is parked in ``<queue>:dead`` with
its last error, and ``prism-async ledger dead-letters`` lists them and puts them back.

With real ``taskiq worker`` processes: a job that kills its worker every time (SIGKILL; taskiq's
manager starts a new one) and a job whose middleware raises (its message is never
acknowledged). Then brokers driven by hand, for what a stopping worker hands back (not counted
as a delivery), and the command's exit codes.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from prism_async.cli import main
from prism_async.integrations.taskiq import PrismStreamBroker
from tests.taskiq_helpers import eventually, unique
from tests.taskiq_workers import Journal, kick, workers

Factory = Callable[..., PrismStreamBroker]


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``prism-async ARGV`` (in a thread: it runs its own event loop): exit code, stdout,
    stderr (never a traceback)."""
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


async def listed(capsys: pytest.CaptureFixture[str], url: str, queue: str) -> list[dict[str, Any]]:
    code, out, _ = await cli(
        capsys, "--json", "ledger", "dead-letters", "--broker", url, "--queue", queue
    )
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


async def test_jobs_that_kill_their_worker_or_fail_unacknowledged_are_parked_and_requeued(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """max_deliveries=2: a job that SIGKILLs its worker and one whose middleware raises are
    each delivered twice, then parked (an ERROR line), with "worker died" and the raised error;
    the command lists them, and ``--requeue ID`` runs the first again (now it completes)."""
    crashing, poisoned = unique("crashing"), unique("poisoned")
    journal = Journal(tmp_path / "journal.log")
    (logs := tmp_path / "logs").mkdir()
    env = {
        **os.environ,
        "DEPLOY_REDIS": redis_url,
        "DEPLOY_JOURNAL": str(journal.path),
        "DEPLOY_IDLE_MS": "1000",
        "DEPLOY_MAX_DELIVERIES": "2",
    }
    clients = [PrismStreamBroker(redis_url, queue_name=q) for q in (crashing, poisoned)]
    with workers(env, logs) as fleet:
        fleet.spawn("crashing", DEPLOY_QUEUE=crashing)
        fleet.spawn("poisoned", DEPLOY_QUEUE=poisoned)
        for client in clients:
            await client.startup()
        await kick(clients[0], "deploy.crash", "crash")
        await kick(clients[1], "deploy.poison", "poison")
        async with Redis.from_url(redis_url) as redis:

            async def parked() -> bool:
                return all([await redis.xlen(f"{q}:dead") for q in (crashing, poisoned)])

            await eventually(parked, timeout=18, what="both dead letters", every=0.2)
            for queue in (crashing, poisoned):
                assert await redis.xlen(queue) == 0  # acknowledged and deleted there
                assert (await redis.xpending(queue, "prism"))["pending"] == 0
        assert len(journal.pids("start", "crash")) == 2
        assert len(journal.pids("start", "poison")) == 2
        assert not journal.pids("done", "poison")
        for name in ("crashing", "poisoned"):
            parked_line = [line for line in fleet.output(name).splitlines() if "parked" in line]
            assert len(parked_line) == 1
            assert "ERROR" in parked_line[0]
            assert ":dead (deliveries: 2, last error: " in parked_line[0]

        (crash,) = await listed(capsys, redis_url, crashing)
        assert crash["task_name"] == "deploy.crash"
        assert crash["args"] == ["crash"]
        assert (crash["deliveries"], crash["error"]) == (2, "worker died")
        (poison,) = await listed(capsys, redis_url, poisoned)
        assert poison["task_name"] == "deploy.poison"
        assert (poison["deliveries"], poison["error"]) == (2, "RuntimeError: poisoned poison")

        code, out, _ = await cli(
            capsys, "ledger", "dead-letters", "--broker", redis_url, "--queue", poisoned
        )
        assert code == 0
        assert "deploy.poison" in out
        assert "RuntimeError: poisoned poison" in out

        Path(f"{journal.path}.healed").touch()
        argv = ("ledger", "dead-letters", "--broker", redis_url, "--queue", crashing)
        code, out, _ = await cli(capsys, *argv, "--requeue", crash["id"])
        assert code == 0
        assert f"requeued {crash['id']} (deploy.crash)" in out

        async def healed() -> bool:
            return bool(journal.pids("done", "crash"))

        await eventually(healed, timeout=10, what="the requeued job to complete")
        assert await listed(capsys, redis_url, crashing) == []
        for client in clients:
            await client.shutdown()


@pytest.fixture
async def make_broker(redis_url: str) -> AsyncIterator[Factory]:
    """Worker brokers driven by hand on one fresh queue (shut down after the test)."""
    queue = unique("dead")
    made: list[PrismStreamBroker] = []

    def make(**options: Any) -> PrismStreamBroker:
        options = {"idle_timeout": 300, "heartbeat_interval": 0.05, "xread_block": 100, **options}
        broker = PrismStreamBroker(redis_url, queue_name=queue, **options)
        broker.is_worker_process = True
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.shutdown()


async def test_a_stopping_workers_messages_come_back_at_once_and_uncounted(
    make_broker: Factory, redis_url: str
) -> None:
    """A worker that stops hands back what it holds: another worker gets it at once (not
    after idle_timeout, 5 s here), and the delivery does not count towards max_deliveries."""
    stopping, other = make_broker(idle_timeout=5000), make_broker(idle_timeout=5000)
    await stopping.startup()
    await other.startup()
    await kick(stopping, "some.task", 1)
    assert await anext(stopping.listen()) is not None
    stopping.request_stop()
    await stopping.shutdown()
    async with asyncio.timeout(2):
        again = await anext(other.listen())
    async with Redis.from_url(redis_url) as redis:
        (entry,) = await redis.xpending_range(other.queue_name, "prism", "-", "+", 10)
    assert entry["times_delivered"] == 1  # the stopped worker's delivery is not counted
    await _ack(again.ack)


async def test_the_command_lists_requeues_and_reports_errors_without_tracebacks(
    make_broker: Factory, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """max_deliveries=1: a dead worker's message is parked at the next reclaim. Then:
    an empty queue says so, ``--requeue`` with no id takes them all, an unknown id is exit 2,
    a URL that is no Redis URL exit 2, a Redis that is not there exit 3."""
    dead, alive = make_broker(max_deliveries=1), make_broker(max_deliveries=1)
    await dead.startup()
    await alive.startup()
    for index in range(2):
        await kick(dead, "some.task", index)
        assert await anext(dead.listen()) is not None
    assert dead._heartbeat is not None
    dead._heartbeat.cancel()  # it dies holding both
    async with Redis.from_url(redis_url) as redis:

        async def parked() -> bool:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await anext(alive.listen())
            return bool(await redis.xlen(f"{alive.queue_name}:dead") == 2)

        await eventually(parked, timeout=5, what="the dead letters")
    queue = alive.queue_name
    letters = await listed(capsys, redis_url, queue)
    assert [(d["args"], d["error"]) for d in letters] == [
        ([0], "worker died"),
        ([1], "worker died"),
    ]

    base = ("ledger", "dead-letters", "--broker", redis_url, "--queue", queue)
    code, _, err = await cli(capsys, *base, "--requeue", "1-1")
    assert code == 2
    assert "--requeue: no dead letter 1-1" in err
    code, out, _ = await cli(capsys, "--json", *base, "--requeue")
    assert code == 0
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["requeued"] * 2
    assert await listed(capsys, redis_url, queue) == []
    code, out, _ = await cli(capsys, *base)
    assert (code, out.strip()) == (0, f"no dead letters in {queue}:dead on {redis_url}")
    async with asyncio.timeout(2):
        back = await anext(alive.listen())
    assert json.loads(back.data)["args"] in ([0], [1])
    await _ack(back.ack)

    code, _, err = await cli(capsys, "ledger", "dead-letters", "--broker", "http://localhost:6379")
    assert code == 2
    assert "--broker: give the workers' redis://... URL" in err
    code, _, err = await cli(capsys, "ledger", "dead-letters", "--broker", "redis://127.0.0.1:1/0")
    assert code == 3
    assert "cannot reach the broker's Redis" in err


async def _ack(ack: Any) -> None:
    result = ack()
    if result is not None:
        await result
