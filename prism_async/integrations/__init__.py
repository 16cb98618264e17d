"""prism_async.integrations: the SDK on existing distributed engines.

* :mod:`prism_async.integrations.taskiq` (``pip install "prism-async[taskiq]"``): a fleet of
  taskiq workers on Redis, with submit and download tasks that never pay twice, and the tracker
  (``prism-async track``) that waits on every accepted generation. See the README's "Running a
  fleet".
"""
