"""The engine-agnostic half of the SDK's fleet: nothing here imports a job queue.

* :mod:`._jobs`: the jobs (:func:`submit`, :func:`download`, :func:`create_wait_download`),
  plain coroutines on a :class:`~prism_async.PrismClient` with a ledger, safe to run again;
  :class:`RetryLater` when a job should come back later (``defer=True``).
* :mod:`._leases`: :class:`DownloadLeases`, one download of a generation at a time fleet-wide.
* :mod:`._tracker`: :class:`Tracker`, waits on every accepted generation of a ledger and hands
  each finished one to a callable that enqueues its download.
* :mod:`._weather`: Redis outages as weather (backoff, one WARNING per outage).

Public homes: :mod:`prism_async.integrations.jobs` (any queue) and
:mod:`prism_async.integrations.taskiq` (taskiq's broker and tasks on top of these).
"""

from ._jobs import RetryLater, as_request, create_wait_download, download, submit
from ._leases import DownloadLeases, Lease, LeaseLostError
from ._tracker import Checkpoint, RedisCheckpoint, Tracker, TrackerStats, TrackEvent
from ._weather import OUTAGE_ERRORS, Backoff, Outage

__all__ = [
    "OUTAGE_ERRORS",
    "Backoff",
    "Checkpoint",
    "DownloadLeases",
    "Lease",
    "LeaseLostError",
    "Outage",
    "RedisCheckpoint",
    "RetryLater",
    "TrackEvent",
    "Tracker",
    "TrackerStats",
    "as_request",
    "create_wait_download",
    "download",
    "submit",
]
