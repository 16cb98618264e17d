"""prism_async.integrations.taskiq: a fleet of taskiq workers on Redis that never pays twice.

``pip install "prism-async[taskiq]"`` (taskiq, taskiq-redis, redis). The pieces, each safe when
a queue runs a job twice (redelivery) or a worker dies mid-job::

    # app.py: imported by the workers (taskiq worker app:broker) and by whoever enqueues
    from prism_async.integrations.taskiq import PrismStreamBroker, PrismTasks

    broker = PrismStreamBroker("redis://redis:6379/0")
    prism = PrismTasks(broker, ledger_url="redis://redis:6379/0", download_dir="/videos")

    # in your web app (after ``await broker.startup()``):
    await prism.submit.kiq("campaign-42/clip-7", {"prompt": "...", "model_name": "veo-3.1"})

    # one tracker process: waits on every accepted generation, enqueues its download
    # prism-async track --ledger redis://redis:6379/0 --broker redis://redis:6379/0

* :class:`PrismStreamBroker`: taskiq-redis's ``RedisStreamBroker`` that never redelivers a
  live job (heartbeats; ``idle_timeout`` above the longest job), reclaims a dead worker's jobs
  even with no new traffic, and expires its reclaim lock; its workers exit within
  ``shutdown_timeout`` of SIGTERM (handing unfinished jobs back at once), park a message
  delivered ``max_deliveries`` times in ``<queue>:dead`` (:class:`DeadLetter`,
  :func:`read_dead_letters`, :func:`requeue_dead_letters`; ``prism-async ledger
  dead-letters``) and ride out Redis outages.
* :class:`PrismTasks`: one ``PrismClient`` (with a ``RedisLedger``) per worker process, made at
  worker startup and closed at shutdown; the ``submit`` task (ledger-guarded, short), the
  ``download`` task (at most once per generation: leased, recorded in the ledger) and the simple
  pattern ``create_wait_download`` (one job: submit, wait, download).
* :class:`Tracker` (the ``prism-async track`` command): follows the ledger's change feed, waits
  on every accepted generation not yet downloaded and enqueues its download task.

The jobs, leases and tracker do not depend on taskiq: :mod:`prism_async.integrations.jobs`
offers the jobs to any other queue (arq, ...). See the README's "Running a fleet".
"""

from .._fleet import (
    Checkpoint,
    DownloadLeases,
    Lease,
    LeaseLostError,
    RedisCheckpoint,
    Tracker,
    TrackerStats,
    TrackEvent,
    create_wait_download,
    download,
    submit,
)
from ._broker import PrismStreamBroker
from ._streams import DeadLetter, read_dead_letters, requeue_dead_letters
from ._tasks import (
    CREATE_WAIT_DOWNLOAD_TASK,
    DOWNLOAD_TASK,
    SUBMIT_TASK,
    TASK_LABELS,
    PrismTasks,
    kick_download,
    prism_client,
)

__all__ = [
    "CREATE_WAIT_DOWNLOAD_TASK",
    "DOWNLOAD_TASK",
    "SUBMIT_TASK",
    "TASK_LABELS",
    "Checkpoint",
    "DeadLetter",
    "DownloadLeases",
    "Lease",
    "LeaseLostError",
    "PrismStreamBroker",
    "PrismTasks",
    "RedisCheckpoint",
    "TrackEvent",
    "Tracker",
    "TrackerStats",
    "create_wait_download",
    "download",
    "kick_download",
    "prism_client",
    "read_dead_letters",
    "requeue_dead_letters",
    "submit",
]
