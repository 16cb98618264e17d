"""The fleet's engine-agnostic half (``prism_async.integrations._fleet``) and its public face for
any job queue (``prism_async.integrations.jobs``): it imports no taskiq, the integrations use
only the SDK's public names, and the jobs' ``defer=True`` hands an unsettled key (or a video
another process is downloading) back to the queue as :class:`RetryLater` instead of waiting,
with the same guarantees: one POST per key, each video downloaded once.

A real Redis (the ledger and the leases) and the fake API, no queue: the jobs are called as a
queue's job would call them, again and again.
"""

from __future__ import annotations

import ast
import asyncio
import pickle
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from prism_async import PrismClient
from prism_async.integrations import jobs, taskiq
from prism_async.integrations.jobs import (
    DownloadLeases,
    RetryLater,
    create_wait_download,
    download,
    submit,
)
from prism_async.ledger import RedisLedger
from prism_async.ledger._model import Owner
from prism_async.testing import FakePrismServer
from tests.conftest import NO_WAIT
from tests.taskiq_helpers import (
    FAST,
    MODEL,
    eventually,
    posts_by_prompt,
    prompt_of,
    request_of,
    unique,
    video_gets,
)

INTEGRATIONS = Path(__file__).resolve().parent.parent / "prism_async" / "integrations"
INTERVAL = 0.1
"""The ledger's ``reconcile_interval``: the delay :class:`RetryLater` asks for."""

# -- the layout --------------------------------------------------------------------------------


def imported(path: Path) -> list[tuple[str, list[str]]]:
    """Each import of a module: (the absolute module, the names it takes), all but those under
    ``if TYPE_CHECKING:``."""
    package = ".".join(path.relative_to(INTEGRATIONS.parent.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if not node.level:
                found.append((str(node.module), names))
                continue
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1]
            found.append((".".join([*base, node.module] if node.module else base), names))
    return found


def test_the_fleet_half_imports_no_job_queue() -> None:
    modules = [*(INTEGRATIONS / "_fleet").glob("*.py"), INTEGRATIONS / "jobs.py"]
    modules.append(INTEGRATIONS / "__init__.py")
    assert len(modules) >= 6
    for path in modules:
        for module, _ in imported(path):
            assert not module.startswith(("taskiq", "arq")), f"{path.name} imports {module}"
    # And for real: with taskiq (and taskiq-redis) impossible to import.
    code = (
        "import sys\n"
        "sys.modules['taskiq'] = sys.modules['taskiq_redis'] = None\n"
        "import prism_async.integrations._fleet, prism_async.integrations.jobs\n"
        "print(sorted(m for m in sys.modules if 'taskiq' in m and sys.modules[m] is not None))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_integrations_use_only_public_names() -> None:
    """No ``prism_async._client``, ``_errors``, ``_waiting``, ``runs._x``...: the names of
    ``prism_async`` and its public modules, or of the ledger package (private modules too)."""
    for path in INTEGRATIONS.rglob("*.py"):
        for module, names in imported(path):
            if not module.startswith("prism_async"):
                continue
            parts = module.split(".")
            if parts[1:2] in (["ledger"], ["integrations"]):
                continue
            where = f"{path.relative_to(INTEGRATIONS)} imports {module}"
            assert not any(part.startswith("_") for part in parts), where
            assert not any(name.startswith("_") for name in names), f"{where}: {names}"


def test_the_public_names_are_the_same_objects() -> None:
    for name in ("create_wait_download", "download", "submit", "DownloadLeases", "Lease"):
        assert getattr(jobs, name) is getattr(taskiq, name)
    assert set(jobs.__all__) <= {*taskiq.__all__, "RetryLater"}


def test_retry_later_says_when_and_survives_pickling() -> None:
    later = RetryLater(30.0, "clip-1", "a live process is sending it")
    assert str(later) == "clip-1: a live process is sending it; run the job again in 30 s"
    copy = pickle.loads(pickle.dumps(later))
    assert (copy.delay, copy.key, copy.reason) == (30.0, "clip-1", later.reason)


# -- defer=True --------------------------------------------------------------------------------


@attrs.define
class World:
    fake: FakePrismServer
    prism: PrismClient
    leases: DownloadLeases
    folder: Path


@pytest.fixture
async def world(redis_url: str, tmp_path: Path) -> AsyncIterator[World]:
    prefix = f"{unique('jobs')}:"
    ledger = RedisLedger(
        redis_url, prefix=prefix, reconcile_window=3.0, reconcile_interval=INTERVAL
    )
    async with FakePrismServer(generation_seconds=0.3) as fake:
        leases = DownloadLeases.from_url(redis_url, prefix=prefix, ttl=1.0)
        async with PrismClient(
            fake.api_key, base_url=fake.base_url, ledger=ledger, poll=FAST, retry=NO_WAIT
        ) as prism:
            try:
                yield World(fake, prism, leases, tmp_path / "videos")
            finally:
                await leases.aclose()


async def test_an_ambiguous_key_is_deferred_until_the_history_lists_it(world: World) -> None:
    """Its answer lost and the history listing finished work only: each run reconciles once
    and asks to come back in ``reconcile_interval``; once the video is listed the job waits,
    downloads it, and a run after that fetches nothing."""
    world.fake.history_completed_only = True
    world.fake.generation_seconds = 60
    world.fake.inject("POST", "/api/generations", status=502, processed=True, times=1)
    request = request_of("late", 1)
    for _ in range(3):
        with pytest.raises(RetryLater) as later:
            await create_wait_download(
                world.prism, world.leases, "late-1", request, world.folder, defer=True
            )
        assert later.value.delay == pytest.approx(INTERVAL)
        assert later.value.key == "late-1"
    (generation_id,) = world.fake.generations
    world.fake.complete_generation(generation_id)
    out = await create_wait_download(
        world.prism, world.leases, "late-1", request, world.folder, defer=True
    )
    assert out["state"] == "downloaded"
    assert out["generation_ids"] == [generation_id]
    assert [Path(p).name for p in out["paths"]] == [f"{generation_id}.mp4"]
    again = await create_wait_download(
        world.prism, None, "late-1", request, world.folder, defer=True
    )
    assert again["paths"] == out["paths"]
    assert posts_by_prompt(world.fake)[prompt_of("late", 1)] == 1
    assert video_gets(world.fake)[generation_id] == 1


async def test_a_key_that_queued_nothing_is_sent_again_once_its_window_closed(
    world: World,
) -> None:
    world.fake.inject("POST", "/api/generations", status=502, times=1)
    request = request_of("never", 1)
    with pytest.raises(RetryLater):
        await submit(world.prism, "never-1", request, defer=True)
    await asyncio.sleep(3.2)  # the ledger's reconcile_window
    out = await submit(world.prism, "never-1", request, defer=True)
    assert out["state"] == "accepted"
    assert posts_by_prompt(world.fake)[prompt_of("never", 1)] == 2


async def test_a_key_another_process_is_sending_is_deferred(world: World) -> None:
    world.fake.inject("POST", "/api/generations", delay=1.0, times=1)
    sending = asyncio.create_task(
        world.prism.generations.create(key="busy", prompt=prompt_of("busy", 1), model_name=MODEL)
    )

    async def in_flight() -> bool:
        row = await world.prism.ledger.get("busy") if world.prism.ledger else None
        return row is not None and row.state == "sending"

    await eventually(in_flight, timeout=5, what="the row to be sending")
    with pytest.raises(RetryLater) as later:
        await submit(world.prism, "busy", request_of("busy", 1), defer=True)
    assert later.value.delay == pytest.approx(INTERVAL)
    assert "sending" in later.value.reason
    batch = await sending
    out = await submit(world.prism, "busy", request_of("busy", 1), defer=True)
    assert (out["state"], out["generation_ids"]) == ("accepted", batch.ids)
    assert posts_by_prompt(world.fake)[prompt_of("busy", 1)] == 1


async def test_a_video_another_process_is_downloading_is_deferred(world: World) -> None:
    out = await submit(world.prism, "dl", request_of("dl", 1))
    (generation_id,) = out["generation_ids"]
    world.fake.complete_generation(generation_id)
    holder = f"{Owner.me()}|t0ken"
    await world.leases.redis.set(world.leases.key(generation_id), holder, px=5000)
    with pytest.raises(RetryLater) as later:
        await download(
            world.prism, world.leases, generation_id, world.folder, patience=0.2, defer=True
        )
    assert later.value.delay == 1.0  # the lease's life
    busy = await download(world.prism, world.leases, generation_id, world.folder, patience=0.2)
    assert busy["state"] == "busy"
    assert video_gets(world.fake)[generation_id] == 0
    await world.leases.redis.delete(world.leases.key(generation_id))
    got = await download(world.prism, world.leases, generation_id, world.folder, defer=True)
    assert got["state"] == "downloaded"


async def test_without_leases_the_ledger_alone_keeps_a_video_from_a_second_download(
    world: World,
) -> None:
    out = await submit(world.prism, "plain", request_of("plain", 1))
    (generation_id,) = out["generation_ids"]
    world.fake.complete_generation(generation_id)
    first = await download(world.prism, None, generation_id, world.folder)
    again = await download(world.prism, None, generation_id, world.folder)
    assert (first["state"], again["state"]) == ("downloaded", "already_downloaded")
    assert first["path"] == again["path"]
    assert video_gets(world.fake)[generation_id] == 1
