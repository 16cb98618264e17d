"""prism_async.integrations: the SDK on existing distributed engines.

* :mod:`prism_async.integrations.jobs` (``pip install "prism-async[redis]"``): the jobs for
  any job queue (arq, Celery, RQ, ...): ``create_wait_download`` (submit, wait, download) and
  its halves ``submit`` and ``download``, safe to run again (one POST per key, each video
  downloaded once); ``defer=True`` raises ``RetryLater`` instead of holding a worker while an
  ambiguous key settles. See the README's "Job queues (arq)".
* :mod:`prism_async.integrations.taskiq` (``pip install "prism-async[taskiq]"``): a fleet of
  taskiq workers on Redis, with submit and download tasks that never pay twice, and the tracker
  (``prism-async track``) that waits on every accepted generation. See the README's "Running a
  fleet".

Importing this package imports neither a job queue nor Redis.
"""
