"""Shared fixtures: a client on a mocked API (aioresponses), and real loopback servers.

Also the ``processes`` and ``redis`` markers (see :func:`pytest_collection_modifyitems`):
``pytest -m "not processes and not redis"`` is the fast run; plain ``pytest`` runs everything.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aioresponses.core as aioresponses_core
import pytest
from aiohttp import ClientResponse, web
from aioresponses import aioresponses

from prism_async import PollPolicy, PrismClient, RetryPolicy
from prism_async.testing import FakePrismServer, instant_waits
from tests.redis_server import RedisServer


class _NoStreamWriter:
    """Stands in for the request writer aiohttp >= 3.14 hands every ClientResponse."""

    output_size = 0


class _CompatClientResponse(ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's ``stream_writer``: add one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
            kwargs.setdefault("stream_writer", _NoStreamWriter())
        super().__init__(*args, **kwargs)


aioresponses_core.ClientResponse = _CompatClientResponse  # type: ignore[attr-defined]

API = "https://api.prism.test/api"
KEY = "prism_sk_test_0123456789abcdef"
NO_WAIT = RetryPolicy(initial=0.0, max_wait=0.0, jitter=False)
GENERATION_SECONDS = 100.0
"""How long a generation runs on the ``server`` fixture's clock (only ``advance`` moves it)."""


def sent_json(mock: aioresponses, method: str, url: str) -> list[Any]:
    """The JSON bodies the client sent to ``method url``, in order."""
    from yarl import URL

    calls = mock.requests.get((method, URL(url)), [])
    return [json.loads(call.kwargs["data"]) if call.kwargs.get("data") else None for call in calls]


def calls_to(mock: aioresponses, method: str, url: str) -> list[Any]:
    """The recorded calls to ``method url``."""
    from yarl import URL

    return list(mock.requests.get((method, URL(url)), []))


@pytest.fixture
def mock() -> Any:
    """aioresponses, intercepting every aiohttp request of the test."""
    with aioresponses() as mocked:
        yield mocked


@pytest.fixture
async def prism() -> AsyncIterator[PrismClient]:
    """A client on the mocked API, with zero-wait retries."""
    async with PrismClient(KEY, base_url=API, retry=NO_WAIT) as client:
        yield client


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Start aiohttp.web apps on loopback; returns their ``http://127.0.0.1:PORT`` roots."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., Awaitable[tuple[str, list[bytes]]]]]:
    """A bare TCP server on loopback whose behaviour a test scripts (drop, stall, answer)."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []
    handlers: list[asyncio.Task[Any]] = []

    async def start(
        behaviour: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> tuple[str, list[bytes]]:
        received: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            task = asyncio.current_task()
            if task is not None:
                handlers.append(task)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                received.append(head)
                await behaviour(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}", received

    yield start
    for handler in handlers:
        handler.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        await server.wait_closed()


def free_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable_from(exc: BaseException) -> list[object]:
    """Everything an exception holds: its cause/context chain, args, notes and attributes."""
    seen: dict[int, object] = {}
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen or item is None:
            continue
        seen[id(item)] = item
        if isinstance(item, BaseException):
            todo += [item.__cause__, item.__context__, *item.args]
            todo += getattr(item, "__notes__", [])
            todo += list(vars(item).values())
        elif isinstance(item, dict):
            todo += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            todo += list(item)
    return list(seen.values())


def assert_key_free(exc: BaseException, key: str = KEY) -> None:
    """No exception in ``exc``'s chain, nor anything it holds, shows the API key in its repr."""
    for item in reachable_from(exc):
        assert key not in repr(item), f"the key is reachable from {type(exc).__name__}: {item!r}"
        if isinstance(item, BaseException):
            assert key not in str(item)


QUICK_POLL = PollPolicy(initial_delay=0.05, interval=0.1, max_interval=0.2)
"""The command-line tests' poll policy for a fake."""
QUICK_FAKE_SECONDS = (0.1, 0.3)
"""How long a ``--fake`` video takes in the command-line tests."""
QUICK_CLI = [
    sys.executable,
    "-c",
    f"""
import runpy, sys

from prism_async import PollPolicy
from prism_async.cli import _main

_main.PollPolicy = lambda: {QUICK_POLL!r}
_main.FAKE_SECONDS = {QUICK_FAKE_SECONDS!r}
sys.argv = ["prism-async", *sys.argv[1:]]
runpy.run_module("prism_async", run_name="__main__", alter_sys=True)
""",
]
"""``python -m prism_async`` paced as the in-process command-line tests are: for the tests that
run the command line in processes to check what a process does."""


@pytest.fixture(autouse=True)
def _quick_fake_videos(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the in-process command-line tests, a ``--fake`` video takes 0.1-0.3 s (the demo's
    1.5-4 s adds nothing to what they check) and waits on another server are paced for a fake."""
    if request.module.__name__.rpartition(".")[2].startswith("test_cli"):
        monkeypatch.setattr("prism_async.cli._main.FAKE_SECONDS", QUICK_FAKE_SECONDS)
        monkeypatch.setattr("prism_async.cli._main.PollPolicy", lambda: QUICK_POLL)


@pytest.fixture
def sleeps() -> Iterator[list[float]]:
    """A fake clock for waits: record every poll delay instead of sleeping it."""
    with instant_waits() as skipped:
        yield skipped.polls


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Everything the event loop's exception handler receives during the test."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: seen.append(context))
    yield seen
    loop.set_exception_handler(previous)


@pytest.fixture
async def server() -> AsyncIterator[FakePrismServer]:
    """A started fake whose generations take 100 s of server clock (none finishes in a test)."""
    async with FakePrismServer(generation_seconds=GENERATION_SECONDS) as fake:
        yield fake


@pytest.fixture
async def http(server: FakePrismServer) -> AsyncIterator[aiohttp.ClientSession]:
    """A session that sends the fake's API key on every request."""
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


@pytest.fixture
async def storage() -> AsyncIterator[aiohttp.ClientSession]:
    """A session with no API key, as a storage client must be."""
    async with aiohttp.ClientSession() as session:
        yield session


async def cancel_in_flight(
    raw_server: Callable[..., Awaitable[tuple[str, list[bytes]]]],
    call: Callable[[PrismClient], Coroutine[Any, Any, Any]],
) -> tuple[asyncio.CancelledError, list[bytes]]:
    """Start ``call`` against a server that never answers and cancel it once it arrived.

    Returns the CancelledError and the request heads the server received.
    """
    arrived = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.set()
        await asyncio.sleep(5)

    root, received = await raw_server(stall)
    async with PrismClient(KEY, base_url=f"{root}/api") as prism:
        task = asyncio.create_task(call(prism))
        await arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await task
    return info.value, received


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server for the session (AOF on, fsync always), on a free loopback port."""
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.stop()


# -- markers: which tests start processes or use a real Redis --------------------------------

TESTS = Path(__file__).resolve().parent
EVERY_TEST = frozenset({"*"})

REDIS_FIXTURES = frozenset({"redis_url", "redis"})
"""Fixtures that start a real Redis: the session's ``redis_url`` (so every fixture built on it:
``fixturenames`` is the closure) and test_webhook_outage's restartable ``redis``. The ledger's
``store`` fixture marks only its ``redis`` parameter."""

PROCESS_FIXTURES = frozenset({"workers", "children", "fleets"})
"""Fixtures that start processes: arq workers (test_arq_recipe), pause clients
(test_fleet_pauses), uvicorn and aiohttp web workers (test_web_workers)."""

PROCESS_TESTS: dict[str, frozenset[str]] = {
    # a child for a dead pid (ledger_helpers.dead_owner), or contenders racing in processes
    "ledger/test_backend_races.py": frozenset({"test_race_of_4_processes"}),
    "ledger/test_backend_resolve.py": frozenset(
        {"test_resolve_settles_a_sending_row_with_a_dead_lease"}
    ),
    "ledger/test_leases.py": frozenset(
        {"test_a_sending_row_and_its_lease", "test_reconcile_settles_a_crash_after_the_post"}
    ),
    "ledger/test_records.py": frozenset({"test_an_owner_names_host_pid_and_start"}),
    "test_taskiq_tasks.py": frozenset({"test_a_dead_holders_lease_is_taken_over_at_once"}),
    # python -c probes of what an import pulls in
    "test_taskiq_jobs.py": frozenset({"test_the_fleet_half_imports_no_job_queue"}),
    # the CLI (python -m prism_async) and the README's quick start as subprocesses
    "test_cli.py": frozenset(
        {
            "test_ctrl_c_exits_130_without_traceback",
            "test_importing_the_sdk_does_not_import_rich",
            "test_module_entry_point_json",
            "test_serve_fake_in_the_foreground",
        }
    ),
    "test_cli_commands.py": frozenset(
        {
            "test_a_fake_in_another_process_is_driven_through_its_control_api",
            "test_serve_fake_credits_and_control_api_line",
            "test_serve_fake_json_includes_the_control_url",
        }
    ),
    "test_cli_process.py": frozenset(
        {
            "test_a_missing_extra_says_which_to_install",
            "test_a_pipe_to_head_ends_quietly",
            "test_a_stopped_run_names_the_paid_requests_in_flight_and_how_to_settle_them",
            "test_stdout_closed_by_its_reader_ends_quietly",
        }
    ),
    "test_cli_run.py": frozenset(
        {
            "test_ctrl_c_exits_130",
            "test_edited_and_moved_files_in_real_processes",
            "test_warnings_are_not_printed_raw_without_v",
        }
    ),
    "test_readme.py": EVERY_TEST,
    "spend/test_readme_spend.py": EVERY_TEST,
    # crash children, taskiq workers and trackers, uvicorn, hub processes, benchmark servers
    "test_benchmarks.py": EVERY_TEST,
    "spend/test_budget_fleet.py": EVERY_TEST,
    "spend/test_budget_processes.py": EVERY_TEST,
    "test_crash_matrix.py": EVERY_TEST,
    "test_taskiq_dead_letters.py": frozenset(
        {"test_jobs_that_kill_their_worker_or_fail_unacknowledged_are_parked_and_requeued"}
    ),
    "test_taskiq_delivery.py": EVERY_TEST,
    "test_taskiq_deploys.py": EVERY_TEST,
    "test_taskiq_fleet.py": EVERY_TEST,
    "test_taskiq_outage.py": EVERY_TEST,
    "test_taskiq_tracker.py": frozenset(
        {"test_track_command_enqueues_download_tasks_on_the_broker"}
    ),
    "test_web_shutdown.py": frozenset({"test_uvicorn_graceful_shutdown_timeout_keeps_every_id"}),
    "test_webhook_bus.py": frozenset(
        {"test_a_webhook_received_by_another_process_wakes_a_wait_here"}
    ),
    "test_webhook_outage.py": frozenset({"test_waits_in_two_processes_ride_out_a_redis_restart"}),
}
"""Tests that start processes in their own body (no fixture does), by file under tests/."""

REDIS_TESTS: dict[str, frozenset[str]] = {
    "ledger/test_backend_races.py": frozenset({"test_redis_warns_when_the_server_may_lose_writes"}),
    "test_benchmarks.py": frozenset({"test_fleet_case_runs_workers_and_a_tracker"}),
    "test_taskiq_deploys.py": frozenset({"test_a_worker_rides_out_a_redis_outage"}),
    "test_taskiq_outage.py": EVERY_TEST,
}
"""Tests that start a Redis server of their own (``RedisServer``, ``RestartableRedis``)."""

_checked: set[str] = set()


def _listed(table: dict[str, frozenset[str]], where: str, name: str) -> bool:
    names = table.get(where, frozenset())
    return "*" in names or name in names


def _check_listed_names(item: pytest.Function, where: str) -> None:
    """Fail the run when a table above names a test its file no longer defines (renamed)."""
    if where in _checked:
        return
    _checked.add(where)
    for table in (PROCESS_TESTS, REDIS_TESTS):
        for name in sorted(table.get(where, frozenset()) - EVERY_TEST):
            if not hasattr(item.module, name):
                raise pytest.UsageError(
                    f"tests/conftest.py lists {name} of tests/{where} (processes/redis marker), "
                    "which that file does not define: update the list"
                )


def markers_of(item: pytest.Function, where: str) -> set[str]:
    """``processes`` and/or ``redis``, as the item (in ``tests/<where>``) starts processes or
    uses a real Redis. A Redis server the tests start counts as ``redis`` only."""
    _check_listed_names(item, where)
    fixtures = set(item.fixturenames)
    callspec = getattr(item, "callspec", None)
    params: dict[str, object] = callspec.params if callspec is not None else {}
    found = set()
    if fixtures & PROCESS_FIXTURES or _listed(PROCESS_TESTS, where, item.originalname):
        found.add("processes")
    if (
        fixtures & REDIS_FIXTURES
        or params.get("store") == "redis"
        or _listed(REDIS_TESTS, where, item.originalname)
    ):
        found.add("redis")
    return found


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts processes or uses a real Redis (see the tables above)."""
    for item in items:
        path = item.path.resolve()
        if isinstance(item, pytest.Function) and path.is_relative_to(TESTS):
            for marker in sorted(markers_of(item, path.relative_to(TESTS).as_posix())):
                item.add_marker(marker)
