"""Optional dependencies the command line reaches: a missing one is bad usage (exit 2) saying
which extra to install, never a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ._registry import UsageError

__all__ = ["EXTRAS", "missing_extra", "needs_extra"]

EXTRAS = {"redis": "redis", "taskiq": "taskiq", "taskiq_redis": "taskiq", "rich": "cli"}
"""A top-level package of an optional dependency -> the extra that installs it."""


def missing_extra(exc: ImportError, what: str, extra: str | None = None) -> str | None:
    """What to tell the user when ``what`` failed with ``exc``: the package of an extra is
    not installed (``extra``: the extra to name, default the package's own); None for any
    other ImportError (a bug, not a missing extra)."""
    package = (exc.name or "").partition(".")[0]
    if package not in EXTRAS:
        return None
    install = f"prism-async[{extra or EXTRAS[package]}]"
    if isinstance(exc, ModuleNotFoundError):
        return f"{what}: needs the {package!r} package, not installed: pip install '{install}'"
    return f"{what}: cannot import {package!r} ({exc}): pip install --upgrade '{install}'"


@contextlib.contextmanager
def needs_extra(what: str, extra: str) -> Iterator[None]:
    """Turn the ImportError of a missing optional package inside the block into a
    :class:`UsageError` naming ``what`` needs it and the ``extra`` that installs it."""
    try:
        yield
    except ImportError as exc:
        message = missing_extra(exc, what, extra)
        if message is None:
            raise
        raise UsageError(message) from None
