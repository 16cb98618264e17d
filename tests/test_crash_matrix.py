"""The crash matrix (issue 13): a bulk run killed with SIGKILL at each boundary, then resumed.

A child process (``tests/crash_child.py``) runs ``prism.run`` over :data:`COUNT` requests on a
SQLite ledger file against the fake server, which runs here, in the test's event loop. The test
kills the child by pid with SIGKILL at one boundary, then runs a new child on the same ledger
that must finish the job:

* ``before_post``: the ``sending`` row is committed and the POST has reached the server, which
  has not acted on it (a plain ``delay``). The resumed run finds the dead lease, reconciles
  (0 of 1 in history) until the key's reconciliation window closes, then sends it again
  (attempt 2).
* ``after_queue``: the server queued and charged, the answer is held (``processed=True``). The
  resumed run reconciles the key from history (1 of 1) and downloads its video.
* ``mid_wait``: every POST answered, the generations pending. The resumed run sends nothing.
* ``mid_download``: two downloads stalled with their ``.part`` files on disk. The resumed run
  removes the stale files and downloads those two videos once more, the others not at all.

Whatever the boundary: at most one generation per key (one POST, or two when the first never
reached the API), every generation the fake created is in the ledger, every video is
downloaded to completion exactly once and byte-exact, no temporary file is left, and the
resumed child exits 0 without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from prism_async.ledger import SQLiteLedger, Submission
from prism_async.testing import FakePrismServer, RecordedRequest
from tests.crash_child import key_of, prompt_of

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "crash_child.py"
RUN_ID = "crash-matrix"
COUNT = 8
CONCURRENCY = 3
KEYS = {prompt_of(i): key_of(RUN_ID, i) for i in range(COUNT)}
"""Prompt -> ledger key, to map what the fake saw back to the run's keys."""
VIDEO_BYTES = 16 * 1024
NEVER = 1000.0
"""Seconds of server clock a generation takes when it must not finish during the first run."""
STALL = 600.0
"""A scripted delay no child outlives: it is killed (or the server closed) long before."""
POSTS = "/api/generations"
VIDEOS = "/storage/videos/*"


@attrs.define(repr=False)
class Child:
    """One ``crash_child.py`` process, its stdout events and its stderr, read as they come."""

    process: asyncio.subprocess.Process
    events: list[dict[str, Any]] = attrs.field(factory=list)
    stderr: bytearray = attrs.field(factory=bytearray)
    readers: list[asyncio.Task[None]] = attrs.field(factory=list)
    killed: bool = False

    def __attrs_post_init__(self) -> None:
        self.readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "garbage", "line": line.decode(errors="replace")})

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr += await self.process.stderr.read()

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        """The RunResults it printed, by key."""
        return {e["key"]: e for e in self.events if e["event"] == "result"}

    def kill(self) -> None:
        """SIGKILL, by pid (no clean-up of any kind runs in the child); once."""
        if self.alive and not self.killed:
            self.killed = True
            # it may have exited (and been reaped) before asyncio noticed
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    async def reap(self, timeout: float = 5.0) -> int:
        """Wait for it to exit and for its pipes to be read to the end; its exit status."""
        returncode = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.wait_for(asyncio.gather(*self.readers), timeout)
        return returncode

    async def finish(self, timeout: float = 20.0) -> int:
        """Let it run to its end (killed after ``timeout`` seconds)."""
        try:
            return await self.reap(timeout)
        except TimeoutError:
            self.kill()
            await self.reap()
            raise AssertionError(
                f"the child did not finish in {timeout} s; it printed {self.events}\n"
                f"{self.stderr.decode(errors='replace')}"
            ) from None


@attrs.define(repr=False)
class World:
    """The fake server, the ledger file and the download folder one test shares with its
    children, and a ledger object on that file for the test's own reads."""

    server: FakePrismServer
    ledger_path: Path
    folder: Path
    ledger: SQLiteLedger
    children: list[Child] = attrs.field(factory=list)

    async def start(self, reconcile_window: float = 1.0) -> Child:
        """A child running the job; an ambiguous key it finds waits ``reconcile_window`` s
        for its video to show up in the history before it is sent again."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-W",
            "error",
            str(CHILD),
            "--ledger",
            str(self.ledger_path),
            "--base-url",
            self.server.base_url,
            "--api-key",
            self.server.api_key,
            "--download",
            str(self.folder),
            "--run-id",
            RUN_ID,
            "--count",
            str(COUNT),
            "--reconcile-window",
            str(reconcile_window),
            "--concurrency",
            str(CONCURRENCY),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        child = Child(process)
        self.children.append(child)
        return child

    async def states(self) -> dict[str, str]:
        return {s.key: s.state async for s in self.ledger.list()}

    async def submissions(self) -> dict[str, Submission]:
        return {s.key: s async for s in self.ledger.list()}

    async def downloads_recorded(self) -> set[str]:
        """The generations whose download the ledger records."""
        done = set()
        for generation_id in self.server.generations:
            record = await self.ledger.generation(generation_id)
            if record is not None and record.path is not None:
                done.add(generation_id)
        return done

    def parts(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.name.endswith(".part"))

    def posts(self) -> list[RecordedRequest]:
        return self.server.requests_to("POST", POSTS)

    def video_gets(self) -> list[RecordedRequest]:
        return self.server.requests_to("GET", VIDEOS)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    folder = tmp_path / "videos"
    ledger_path = tmp_path / "ledger.db"
    async with FakePrismServer(generation_seconds=NEVER, video_bytes=VIDEO_BYTES) as server:
        world = World(server, ledger_path, folder, SQLiteLedger(ledger_path))
        try:
            yield world
        finally:
            for child in world.children:
                child.kill()
            for child in world.children:
                with contextlib.suppress(Exception):
                    await child.reap()
            await world.ledger.aclose()


async def until(child: Child, what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` (the fake keeps serving meanwhile) until it holds; fail if the child
    exits first or nothing happens within 15 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15.0
    while not await check():
        if not child.alive:
            await child.reap()
            raise AssertionError(
                f"the child exited ({child.process.returncode}) before {what}: {child.events}\n"
                f"{child.stderr.decode(errors='replace')}"
            )
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


def key_of_request(request: RecordedRequest) -> str:
    assert isinstance(request.json, dict)
    return KEYS[request.json["prompt"]]


def generation_of_get(request: RecordedRequest) -> str:
    return request.path.rsplit("/", 1)[1].removesuffix(".mp4")


# -- the four boundaries ----------------------------------------------------------------------


@attrs.define
class Kill:
    """What one boundary left behind when its child was killed."""

    posts: int
    """POSTs the fake had received."""
    video_gets: int
    """Video GETs the fake had received."""
    stalled_gets: list[RecordedRequest] = attrs.field(factory=list)
    """Video GETs in flight when the child died (they never completed)."""
    faulted_key: str | None = None
    """The key whose POST the fault held."""


async def kill_before_post(world: World, child: Child) -> Kill:
    """``sending`` committed, POST received, the server has not acted: kill."""
    world.server.inject("POST", POSTS, delay=STALL)

    async def reached() -> bool:
        posts = world.posts()
        if len(posts) < COUNT:
            return False
        held = key_of_request(posts[0])
        expected = {k: ("sending" if k == held else "accepted") for k in KEYS.values()}
        return await world.states() == expected

    await until(child, "all other keys are accepted, one POST held", reached)
    child.kill()
    return Kill(len(world.posts()), 0, faulted_key=key_of_request(world.posts()[0]))


async def kill_after_queue(world: World, child: Child) -> Kill:
    """The server queued and charged; its answer is held: kill."""
    world.server.inject("POST", POSTS, processed=True, delay=STALL)

    async def reached() -> bool:
        posts = world.posts()
        if len(posts) < COUNT or len(world.server.generations) < COUNT:
            return False
        held = key_of_request(posts[0])
        expected = {k: ("sending" if k == held else "accepted") for k in KEYS.values()}
        return await world.states() == expected

    await until(child, "every generation is queued, one answer held", reached)
    child.kill()
    return Kill(len(world.posts()), 0, faulted_key=key_of_request(world.posts()[0]))


async def kill_mid_wait(world: World, child: Child) -> Kill:
    """Every POST answered and recorded, every generation polled, none finished: kill."""

    async def reached() -> bool:
        if len(world.server.generations) < COUNT:
            return False
        polled = {r.path for r in world.server.requests_to("GET", "/api/generations/*")}
        if not polled >= {f"/api/generations/{g}" for g in world.server.generations}:
            return False
        return await world.states() == dict.fromkeys(KEYS.values(), "accepted")

    await until(child, "every key is accepted and waited on", reached)
    child.kill()
    return Kill(len(world.posts()), len(world.video_gets()))


async def kill_mid_download(world: World, child: Child) -> Kill:
    """Two downloads stalled with their ``.part`` files on disk, the others done: kill."""
    world.server.generation_seconds = 0.2
    world.server.inject("GET", VIDEOS, delay=STALL, times=2)

    async def reached() -> bool:
        if len(world.video_gets()) < 2 or not world.folder.is_dir() or len(world.parts()) < 2:
            return False
        return len(await world.downloads_recorded()) == COUNT - 2

    await until(child, "two downloads stall, the others are recorded", reached)
    child.kill()
    stalled = world.video_gets()[:2]  # a fault scripts the first matching requests, in order
    # the stalled downloads' temporary files were on disk when it died
    assert {p.name.split(".")[1] for p in world.parts()} == {generation_of_get(r) for r in stalled}
    return Kill(len(world.posts()), len(world.video_gets()), stalled_gets=stalled)


BOUNDARIES: dict[str, Callable[[World, Child], Awaitable[Kill]]] = {
    "before_post": kill_before_post,
    "after_queue": kill_after_queue,
    "mid_wait": kill_mid_wait,
    "mid_download": kill_mid_download,
}


@pytest.mark.parametrize("boundary", list(BOUNDARIES))
async def test_a_run_killed_at_a_boundary_is_finished_by_the_next_run(
    world: World, boundary: str
) -> None:
    server = world.server
    first = await world.start()
    try:
        kill = await BOUNDARIES[boundary](world, first)
    finally:
        first.kill()
    assert await first.reap() == -signal.SIGKILL
    downloaded_before = await world.downloads_recorded()
    # every generation queued so far finishes now (not by moving the server's clock: the waits
    # would learn that a generation takes NEVER seconds and sleep that long on a new one)
    for generation in list(server.generations.values()):
        if generation.status_at(server.now()) not in ("completed", "failed"):
            server.complete_generation(generation.id)
    server.generation_seconds = 0.2  # and one sent again would finish (and be seen) at once

    second = await world.start()
    assert await second.finish() == 0, second.stderr.decode(errors="replace")
    assert b"Traceback" not in second.stderr, second.stderr.decode(errors="replace")
    results = second.results
    assert set(results) == set(KEYS.values())
    assert second.events[-1] == {"event": "finished", "results": COUNT}
    submissions = await world.submissions()

    # every key was sent once before the kill; the one whose POST never left (before_post) is
    # sent once more after its reconciliation window closed with nothing in the history
    assert kill.posts == COUNT
    assert len(world.posts()) == COUNT + (boundary == "before_post")
    assert {r["state"] for r in results.values()} == {"downloaded"}
    assert len(server.generations) == COUNT
    if boundary == "before_post":
        assert kill.faulted_key is not None
        assert submissions[kill.faulted_key].state == "accepted"
        assert submissions[kill.faulted_key].attempt == 2
    if boundary == "after_queue":
        assert kill.faulted_key is not None
        (queued,) = (g for g in server.generations.values() if KEYS[g.prompt] == kill.faulted_key)
        assert submissions[kill.faulted_key].state == "reconciled"
        assert submissions[kill.faulted_key].generation_ids == (queued.id,)
        assert results[kill.faulted_key]["ids"] == [queued.id]
    for key, result in results.items():
        assert result["ids"] == list(submissions[key].generation_ids)

    # downloads: the killed run's completed ones are not repeated, the stalled ones are redone
    stalled = {generation_of_get(r) for r in kill.stalled_gets}
    first_run = Counter(generation_of_get(r) for r in world.video_gets()[: kill.video_gets])
    assert set(first_run) == downloaded_before | stalled
    second_run = Counter(generation_of_get(r) for r in world.video_gets()[kill.video_gets :])
    assert set(second_run) == set(server.generations) - downloaded_before
    if boundary == "mid_download":
        assert len(stalled) == 2
        assert set(second_run) == stalled
    check_invariants(world, submissions, results, kill)
    await check_recorded_downloads(world)


async def test_a_key_not_yet_in_history_waits_for_it_in_the_next_run(world: World) -> None:
    """The API may list a generation in history only once it has finished: the run after the
    kill keeps the key waiting (ambiguous, reconciled again and again, never sent), finishes
    the other keys, and once the generation has finished reconciles it and downloads its
    video, still without a POST."""
    server = world.server
    first = await world.start()
    try:
        kill = await kill_after_queue(world, first)
    finally:
        first.kill()
    assert await first.reap() == -signal.SIGKILL
    assert kill.faulted_key is not None
    (held,) = (g for g in server.generations.values() if KEYS[g.prompt] == kill.faulted_key)
    server.history_completed_only = True
    server.generation_seconds = 0.2  # one sent again would finish (and be seen) at once
    for generation_id in server.generations:
        if generation_id != held.id:
            server.complete_generation(generation_id)

    second = await world.start(reconcile_window=60.0)
    others = set(KEYS.values()) - {kill.faulted_key}

    async def others_done() -> bool:
        return set(second.results) == others

    await until(second, "the other keys finished", others_done)
    assert {r["state"] for r in second.results.values()} == {"downloaded"}
    searches = len(server.requests_to("GET", "/api/assets/search"))
    await asyncio.sleep(0.5)
    assert len(server.requests_to("GET", "/api/assets/search")) > searches  # still trying
    assert (await world.states())[kill.faulted_key] == "ambiguous"
    assert len(world.posts()) == kill.posts == COUNT
    assert len(world.video_gets()) == COUNT - 1

    server.complete_generation(held.id)
    assert await second.finish() == 0, second.stderr.decode(errors="replace")
    assert b"Traceback" not in second.stderr
    assert second.results[kill.faulted_key]["state"] == "downloaded"
    assert generation_of_get(world.video_gets()[-1]) == held.id
    submissions = await world.submissions()
    assert submissions[kill.faulted_key].state == "reconciled"
    assert submissions[kill.faulted_key].generation_ids == (held.id,)
    assert len(world.posts()) == kill.posts == COUNT
    check_invariants(world, submissions, second.results, kill)
    await check_recorded_downloads(world)


async def test_a_rerun_after_a_clean_finish_does_nothing(world: World) -> None:
    server = world.server
    server.generation_seconds = 0.2
    first = await world.start()
    assert await first.finish() == 0, first.stderr.decode(errors="replace")
    assert {r["state"] for r in first.results.values()} == {"downloaded"}
    before = list(server.requests)
    recorded = await world.submissions()

    second = await world.start()
    assert await second.finish() == 0, second.stderr.decode(errors="replace")
    assert b"Traceback" not in second.stderr
    assert len(world.posts()) == COUNT
    assert len(world.video_gets()) == COUNT  # all from the first run
    assert all(r.method == "GET" for r in server.requests[len(before) :])
    assert {r["state"] for r in second.results.values()} == {"downloaded"}
    assert {k: r["paths"] for k, r in second.results.items()} == {
        k: r["paths"] for k, r in first.results.items()
    }
    assert await world.submissions() == recorded  # not one submission row changed
    nothing_killed = Kill(len(world.posts()), len(world.video_gets()))
    check_invariants(world, recorded, second.results, nothing_killed)
    await check_recorded_downloads(world)


def check_invariants(
    world: World,
    submissions: dict[str, Submission],
    results: dict[str, dict[str, Any]],
    kill: Kill,
) -> None:
    """What must hold after any resumed run, whatever the boundary."""
    server = world.server
    # one video per key, from at most one POST per key, but the POST the server never acted
    # on (before_post), sent once more when its window closed with nothing in the history
    posts = Counter(key_of_request(r) for r in world.posts())
    assert all(n == 1 or (key == kill.faulted_key and n == 2) for key, n in posts.items()), posts
    made = Counter(KEYS[g.prompt] for g in server.generations.values())
    assert max(made.values()) == 1, made
    # every generation the fake created is in the ledger, or its key was reported ambiguous
    for generation in server.generations.values():
        key = KEYS[generation.prompt]
        in_ledger = generation.id in submissions[key].generation_ids
        assert in_ledger or results[key]["state"] == "ambiguous", (generation.id, key)
    # every video was downloaded to completion exactly once (a GET stalled when its child was
    # killed never completed), byte-exact, where the results say, and nothing partial is left
    stalled = {id(r) for r in kill.stalled_gets}
    completed = Counter(generation_of_get(r) for r in world.video_gets() if id(r) not in stalled)
    assert completed == dict.fromkeys(server.generations, 1)
    files = {p.name for p in world.folder.iterdir()}
    assert files == {f"{g}.mp4" for g in server.generations}
    for name in files:
        assert (world.folder / name).read_bytes() == server.video
    paths = {p for r in results.values() for p in r["paths"]}
    assert paths == {str(world.folder / name) for name in files}


async def check_recorded_downloads(world: World) -> None:
    """The ledger records every download: the final path and its size."""
    for generation_id in world.server.generations:
        record = await world.ledger.generation(generation_id)
        assert record is not None
        assert record.path == str(world.folder / f"{generation_id}.mp4")
        assert record.size == len(world.server.video)
