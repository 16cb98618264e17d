"""prism_async.integrations.jobs: the SDK's jobs for any job queue (arq, Celery, RQ, ...).

``pip install "prism-async[redis]"``. Plain coroutines on a :class:`~prism_async.PrismClient`
with a ledger, each safe when the queue runs it again (a crash, a redelivery, the same key
enqueued twice): one POST per key, ambiguous keys reconciled from the account's history, each
video downloaded once. The taskiq tasks (:class:`~prism_async.integrations.taskiq.PrismTasks`)
are these jobs; with another queue, call them from your own job::

    from arq import Retry
    from prism_async.integrations.jobs import DownloadLeases, RetryLater, create_wait_download

    async def make_video(ctx, key, prompt):
        request = {"prompt": prompt, "model_name": "veo-3.1"}
        try:
            done = await create_wait_download(
                ctx["prism"], ctx["leases"], key, request, "videos", defer=True
            )
        except RetryLater as later:  # not settled yet: come back later, holding no worker
            raise Retry(defer=later.delay) from None
        return done["paths"]

* :func:`create_wait_download` (``prism, leases, key, request, folder, *, timeout=None,
  patience=None, defer=False``): the simple pattern in one job: submit, wait, download.
* :func:`submit` and :func:`download`: its two halves, for a fleet where a tracker waits.
* ``defer=True``: a key not settled yet (a run died mid-POST and the history does not show its
  videos yet, or another live process is sending it) raises :class:`RetryLater` at once instead
  of waiting inside the job (up to the ledger's ``reconcile_window``): the queue runs the job
  again after :attr:`RetryLater.delay` seconds. Without it (taskiq's tasks) the job waits.
* :class:`DownloadLeases` (``DownloadLeases.from_url(redis_url)``): at most one process
  downloads a video at a time, fleet-wide; None instead leaves it to the ledger and the files
  on disk (enough when the same key never runs twice at once).

Each returns a JSON-able dict whose ``state`` says how it ended (see each function).
"""

from ._fleet._jobs import RetryLater, create_wait_download, download, submit
from ._fleet._leases import DownloadLeases, Lease, LeaseLostError

__all__ = [
    "DownloadLeases",
    "Lease",
    "LeaseLostError",
    "RetryLater",
    "create_wait_download",
    "download",
    "submit",
]
