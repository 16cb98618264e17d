"""PrismTasks: the SDK's tasks on a taskiq broker, and one PrismClient per worker process.

The client (with a :class:`~prism_async.ledger.RedisLedger`) is made when a worker process
starts (``TaskiqEvents.WORKER_STARTUP``) and closed when it stops, never at import time: an
aiohttp session belongs to a running loop. Tasks reach it through :attr:`PrismTasks.client`,
``broker.state.prism`` or the :func:`prism_client` dependency.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

from redis.asyncio import Redis
from taskiq import AsyncBroker, TaskiqDepends, TaskiqEvents, TaskiqState
from taskiq.kicker import AsyncKicker
from taskiq_redis import RedisStreamBroker

from prism_async import InvalidRequestError, PrismClient
from prism_async.ledger import RedisLedger
from prism_async.ledger._base import check_reconciliation

from .._fleet import DownloadLeases, as_request, create_wait_download, download, submit
from ._broker import PrismStreamBroker

__all__ = [
    "CREATE_WAIT_DOWNLOAD_TASK",
    "DOWNLOAD_TASK",
    "SUBMIT_TASK",
    "TASK_LABELS",
    "PrismTasks",
    "kick_download",
    "prism_client",
]

logger = logging.getLogger("prism_async.taskiq")

SUBMIT_TASK = "prism_async.submit"
DOWNLOAD_TASK = "prism_async.download"
CREATE_WAIT_DOWNLOAD_TASK = "prism_async.create_wait_download"
TASK_LABELS: dict[str, Any] = {"ack_type": "when_executed"}
"""The labels of the SDK's tasks: acknowledged once run (a killed worker's job runs again)."""

Result = dict[str, Any]


def prism_client(state: Annotated[TaskiqState, TaskiqDepends()]) -> PrismClient:
    """A taskiq dependency: the worker's client, for your own tasks.

    ``async def my_task(prism: Annotated[PrismClient, TaskiqDepends(prism_client)]) -> ...``
    """
    client = getattr(state, "prism", None)
    if not isinstance(client, PrismClient):
        raise RuntimeError("no PrismClient: the worker did not start PrismTasks")
    return client


async def kick_download(broker: AsyncBroker, generation_id: str, folder: str | None) -> None:
    """Enqueue the download task from any process, without PrismTasks (the tracker does)."""
    kicker: AsyncKicker[Any, Any] = AsyncKicker(DOWNLOAD_TASK, broker, dict(TASK_LABELS))
    await kicker.kiq(generation_id, folder)


class PrismTasks:
    """The SDK's tasks, registered on ``broker``, with one client per worker process::

        broker = PrismStreamBroker("redis://redis:6379/0")
        prism = PrismTasks(broker, ledger_url="redis://redis:6379/0", download_dir="/videos")
        # taskiq worker myapp:broker        (workers)
        await prism.submit.kiq("campaign-42/clip-7", {"prompt": "...", "model_name": "veo-3.1"})

    Attributes:
        submit: ``submit(key, request)``: sends ``request`` (the keyword arguments of
            ``generations.create``, or of ``templates.generate`` with ``template_id`` and no
            ``prompt``) under the ledger key; short, and never sent twice. Returns
            ``{"key", "state", "generation_ids", "error"}``.
        download: ``download(generation_id, folder=None)``: downloads a completed generation at
            most once fleet-wide (leased; recorded in the ledger). The tracker enqueues it.
        create_wait_download: ``create_wait_download(key, request, folder=None)``: the simple
            pattern in one job (submit, wait, download), safe under redelivery; for modest
            volumes (its wait holds a worker slot for the whole generation).

    Args:
        broker: the taskiq broker (a :class:`PrismStreamBroker` for a fleet).
        ledger_url: the Redis of the :class:`~prism_async.ledger.RedisLedger` (download leases
            live there too).
        ledger_prefix: the ledger's key prefix.
        download_dir: where downloads go when a task names no folder.
        lease_seconds: the life of a download lease (renewed while the download runs).
        wait_timeout: seconds the simple pattern's wait may take (default: the poll policy's).
        reconcile_window: the ledger's ``reconcile_window``: how long an ambiguous key waits
            for its videos to show up in the history before it is sent again (default 30
            minutes; keep it longer than the longest generation).
        reconcile_interval: the ledger's ``reconcile_interval`` (default 30 s).
        **client_options: keyword arguments of each worker's ``PrismClient`` (``api_key``,
            ``base_url``, ``poll``, ``timeout``, ``webhooks``, ...); by default the key and URL
            come from ``PRISM_API_KEY`` and ``PRISM_BASE_URL``.
    """

    def __init__(
        self,
        broker: AsyncBroker,
        *,
        ledger_url: str,
        ledger_prefix: str = "prism:ledger:",
        download_dir: str | os.PathLike[str] | None = None,
        lease_seconds: float = 60.0,
        wait_timeout: float | None = None,
        reconcile_window: float = 1800.0,
        reconcile_interval: float = 30.0,
        **client_options: Any,
    ) -> None:
        if "ledger" in client_options:
            raise InvalidRequestError("ledger", "PrismTasks makes the ledger from ledger_url")
        if lease_seconds <= 0:
            raise InvalidRequestError("lease_seconds", "must be positive")
        _check_broker(broker, wait_timeout, client_options)
        self.broker = broker
        self.ledger_url = ledger_url
        self.ledger_prefix = ledger_prefix
        self.download_dir = None if download_dir is None else os.fspath(download_dir)
        self.lease_seconds = float(lease_seconds)
        self.wait_timeout = wait_timeout
        check_reconciliation(reconcile_window, reconcile_interval)  # now, not in every worker
        self.reconcile = {
            "reconcile_window": reconcile_window,
            "reconcile_interval": reconcile_interval,
        }
        self._client_options = client_options
        self._client: PrismClient | None = None
        self._leases: DownloadLeases | None = None
        broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, self.startup)
        broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, self.shutdown)
        # Plain functions, not bound methods: taskiq renames what it registers.
        me = self

        async def submit_task(key: str, request: dict[str, Any]) -> Result:
            return await me._submit(key, request)

        async def download_task(generation_id: str, folder: str | None = None) -> Result:
            return await me._download(generation_id, folder)

        async def create_wait_download_task(
            key: str, request: dict[str, Any], folder: str | None = None
        ) -> Result:
            return await me._create_wait_download(key, request, folder)

        self.submit = broker.register_task(submit_task, SUBMIT_TASK, **TASK_LABELS)
        self.download = broker.register_task(download_task, DOWNLOAD_TASK, **TASK_LABELS)
        self.create_wait_download = broker.register_task(
            create_wait_download_task, CREATE_WAIT_DOWNLOAD_TASK, **TASK_LABELS
        )

    def __repr__(self) -> str:
        state = "started" if self._client is not None else "not started"
        return f"<PrismTasks prefix={self.ledger_prefix!r} {state}>"

    @property
    def client(self) -> PrismClient:
        """This worker process's client (for your own tasks).

        Raises:
            RuntimeError: outside a started worker.
        """
        if self._client is None:
            raise RuntimeError("PrismTasks has no client: the worker has not started")
        return self._client

    @property
    def leases(self) -> DownloadLeases:
        """This worker process's download leases."""
        if self._leases is None:
            raise RuntimeError("PrismTasks has no leases: the worker has not started")
        return self._leases

    # -- the worker's life -------------------------------------------------------------------

    async def startup(self, state: TaskiqState) -> None:
        """Make this process's client (and its ledger); a worker calls it when it starts."""
        if self._client is not None:
            return
        ledger = RedisLedger(self.ledger_url, prefix=self.ledger_prefix, **self.reconcile)
        client = PrismClient(ledger=ledger, **self._client_options)
        await client.__aenter__()
        redis = Redis.from_url(self.ledger_url, decode_responses=True)
        self._leases = DownloadLeases(redis, prefix=self.ledger_prefix, ttl=self.lease_seconds)
        self._client = client
        state.prism = client

    async def shutdown(self, state: TaskiqState) -> None:
        """Close this process's client, ledger and lease connection."""
        client, self._client = self._client, None
        leases, self._leases = self._leases, None
        if client is not None:
            await client.aclose()
        if leases is not None:
            await leases.aclose()
        state.pop("prism", None)

    # -- the tasks ---------------------------------------------------------------------------

    async def _submit(self, key: str, request: dict[str, Any]) -> Result:
        return await submit(self.client, key, request)

    async def _download(self, generation_id: str, folder: str | None = None) -> Result:
        where = folder or self.download_dir
        if where is None:
            raise InvalidRequestError("folder", "give a folder, or PrismTasks(download_dir=...)")
        return await download(self.client, self.leases, generation_id, where)

    async def _create_wait_download(
        self, key: str, request: dict[str, Any], folder: str | None = None
    ) -> Result:
        as_request(request)  # a bad request fails before anything else
        where = folder or self.download_dir
        return await create_wait_download(
            self.client, self.leases, key, request, where, timeout=self.wait_timeout
        )


def _check_broker(
    broker: AsyncBroker, wait_timeout: float | None, client_options: dict[str, Any]
) -> None:
    """Refuse a broker that would redeliver the simple pattern's live jobs."""
    if not isinstance(broker, RedisStreamBroker):
        return
    if not isinstance(broker, PrismStreamBroker):
        logger.warning(
            "PrismTasks on a plain RedisStreamBroker: live jobs are redelivered after its "
            "idle_timeout and a dead worker's jobs wait for new traffic; use PrismStreamBroker"
        )
        return
    poll = client_options.get("poll")
    longest = wait_timeout or getattr(poll, "timeout", None) or 900.0
    if broker.heartbeat_interval == 0 and longest * 1000 >= broker.idle_timeout:
        raise InvalidRequestError(
            "broker",
            f"idle_timeout ({broker.idle_timeout / 1000:g} s) is shorter than a wait "
            f"({longest:g} s) and heartbeats are off: live jobs would run twice",
        )
