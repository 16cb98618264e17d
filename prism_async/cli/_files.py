"""Arguments naming a local file or a storage key (``generate --start-frame F``, ``template
--var KEY=@path``, ``upload FILE``): which one a value is, and every file checked before any
is uploaded.

The rule (:data:`FILE_OR_KEY_RULE`, in ``generate --help``): a value naming an existing file is
that file, uploaded first. Otherwise it is a storage key if it looks like one: a relative path
with folders (``users/.../file_1a2b.png``, ``community/assets/asset_001.png``, as ``upload``
and ``assets`` print them) whose folder is not a folder here. Any other value can only be a
local path (no folder: ``clip.mp4``; ``/``, ``./``, ``../`` or ``~`` first; a backslash; a
folder that exists here: ``frames/start.png``) and names no file: exit 2, ``--start-frame: no
such file: frames/start.png``. A value given as a file (``--var KEY=@path``, ``upload FILE``)
is always a local file.

A local file must also be one the API takes: an image, video or audio file by its name, not
empty, within the size limit of its kind. Every value of a command is checked (one message per
bad value) before anything is uploaded, and a file given twice is uploaded once.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from .. import _rules
from ._registry import UsageError

__all__ = ["FILE_OR_KEY", "FILE_OR_KEY_RULE", "Files", "is_local_path"]

FILE_OR_KEY = "a local file (uploaded first) or a storage key"
"""How the ``--help`` of an option taking either says so."""

FILE_OR_KEY_RULE = """\
F is a local file or a storage key. A file that exists is uploaded first; every
file is checked before any is uploaded. A storage key has folders and is not a
local path: users/.../file_1a2b.png, community/assets/asset_001.png (as `upload`
and `assets` print them). A value that can only be a local path - no folder
(clip.mp4), starting with / ./ ../ or ~, or in a folder that exists here
(frames/start.png) - and names no file is an error (exit 2):
  --start-frame: no such file: frames/start.png"""
"""The rule, for the epilog of a command with such options."""

Item = Path | str
"""A value once checked: a local file to upload (a Path) or a storage key (a str)."""


def is_local_path(value: str) -> bool:
    """Whether a value that names no file can only be a local path, not a storage key."""
    if "/" not in value or value.startswith(("/", "./", "../", "~")):
        return True
    if "\\" in value or (os.altsep is not None and os.altsep in value):
        return True
    return Path(value).parent.is_dir()


class Files:
    """The local files and storage keys one command was given, by the SDK argument each is
    for. Each value is checked as it is added; :meth:`check` then raises one
    :class:`UsageError` naming every bad value, before :meth:`keys` uploads anything."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self._given: dict[str, tuple[Item | list[Item], str | list[str]]] = {}

    def one(self, name: str, option: str, value: str | None, *, file: bool = False) -> None:
        """The value of ``option`` for the SDK argument ``name`` (nothing when None);
        ``file``: a local file, whatever it looks like."""
        if value is not None:
            self._given[name] = (self._item(option, value, file=file), value)

    def many(self, name: str, option: str, values: Sequence[str] | None) -> None:
        """The values of an option taking several (``--ingredient a.png b.png``)."""
        if values is not None:
            items = [self._item(option, value, file=False) for value in values]
            self._given[name] = (items, list(values))

    def check(self) -> None:
        """Raise :class:`UsageError` naming every bad value (one line each), if any."""
        if self.problems:
            raise UsageError("\n".join(self.problems))

    def typed(self) -> dict[str, Any]:
        """Each argument as typed: what the rest of a request is checked with before anything
        is uploaded."""
        return {name: typed for name, (_, typed) in self._given.items()}

    async def keys(self, upload: Callable[[str], Awaitable[str]]) -> dict[str, Any]:
        """Each argument's storage key(s): every local file uploaded with ``upload`` (once,
        even if given twice), in the order given."""
        uploaded: dict[Path, str] = {}

        async def key(item: Item) -> str:
            if isinstance(item, str):
                return item
            where = item.resolve()
            if where not in uploaded:
                uploaded[where] = await upload(str(item))
            return uploaded[where]

        keys: dict[str, Any] = {}
        for name, (items, _) in self._given.items():
            if isinstance(items, list):
                keys[name] = [await key(item) for item in items]
            else:
                keys[name] = await key(items)
        return keys

    def _item(self, option: str, value: str, *, file: bool) -> Item:
        path = Path(value).expanduser()
        if not file and not path.is_file() and not is_local_path(value):
            return value
        problem = _problem(path, value)
        if problem is not None:
            self.problems.append(f"{option}: {problem}")
        return path


def _problem(path: Path, value: str) -> str | None:
    """What makes a local file one the API would refuse (or that cannot be read), if anything."""
    if not value:
        return "no file given"
    if not path.exists():
        return f"no such file: {value}"
    if not path.is_file():
        return f"not a file: {value}"
    if not os.access(path, os.R_OK):
        return f"cannot read {value}: permission denied"
    kind = _rules.media_kind(mimetypes.guess_type(path.name)[0])
    if kind is None:
        return f"{value}: not an image, video or audio file (by its name)"
    size = _rules.size_problem(path.stat().st_size, _rules.UPLOAD_LIMITS[kind], kind)
    return None if size is None else f"{value}: {size}"
