"""Videos already on disk: what a previous run or job downloaded, checked against the ledger."""

from __future__ import annotations

import re
from pathlib import Path

from ._model import GenerationRecord

__all__ = ["already_downloaded", "safe_name"]

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(generation_id: str) -> str:
    """A generation id as a file name (the video is ``<safe_name>.mp4``)."""
    return _UNSAFE_FILENAME.sub("_", generation_id)


def already_downloaded(
    record: GenerationRecord | None, folder: Path, generation_id: str
) -> Path | None:
    """The file a previous run downloaded (present, right size), or None after removing the
    temporary files a process killed mid-download left.

    ``<id>.mp4`` in the folder counts even unrecorded: a download is renamed into place only
    once complete, so it is a process killed between the rename and the ledger's record.
    """
    if record is not None and record.path is not None and record.size is not None:
        done = Path(record.path)
        if done.is_file() and done.stat().st_size == record.size:
            return done
    for stale in folder.glob(f".{safe_name(generation_id)}.mp4.*.part"):
        stale.unlink(missing_ok=True)
    final = folder / f"{safe_name(generation_id)}.mp4"
    return final if final.is_file() and final.stat().st_size > 0 else None
