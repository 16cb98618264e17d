"""What a command's handler gets, and the steps several commands share."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import to_dict
from .._client import PrismClient
from .._errors import GenerationFailedError, WaitTimeoutError
from ..models.generations import Generation
from ._registry import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, UsageError
from ._ui import UI

if TYPE_CHECKING:
    from ..testing import FakePrismServer

__all__ = ["Context"]


class Context:
    """One run of one command: its arguments, the UI, the client, and shared steps.

    Args:
        args: the parsed command line (global options and the command's own).
        ui: where output goes.
        prism: the client (None for a command declared with ``client="none"``).
        fake: the embedded fake server the client talks to, if any (``--fake``, ``demo``).
    """

    def __init__(
        self,
        args: argparse.Namespace,
        ui: UI,
        *,
        prism: PrismClient | None = None,
        fake: FakePrismServer | None = None,
    ) -> None:
        self.args = args
        self.ui = ui
        self.fake = fake
        self._prism = prism

    @property
    def prism(self) -> PrismClient:
        """The client; a command declared with ``client="none"`` has none."""
        if self._prism is None:
            raise RuntimeError(f"{self.args.command!r} runs without a client")
        return self._prism

    async def upload(self, path: str) -> str:
        """Upload a local file with a progress bar; return its key (``_files.Files`` checks
        a command's files before it uploads any)."""
        file = Path(path).expanduser()
        size = file.stat().st_size if file.is_file() else None  # the SDK explains a bad file
        with self.ui.transfer(f"upload {file.name}", size) as progress:
            uploaded = await self.prism.uploads.upload(file, on_progress=progress)
        self.ui.print(f"uploaded {file} -> {uploaded.s3_key}")
        self.ui.emit({"event": "upload", "file": str(file), **to_dict(uploaded)})
        return uploaded.s3_key

    async def download(self, generation: Generation | str, destination: str) -> Path:
        """Download a generation's video with a progress bar; return the file written."""
        label = generation.id if isinstance(generation, Generation) else generation
        with self.ui.transfer(f"download {label}", None) as progress:
            return await self.prism.generations.download(
                generation, destination, on_progress=progress
            )

    async def wait_and_report(self, ids: Sequence[str], directory: str | None) -> int:
        """Wait for every id with a live display, download if asked, print a summary."""
        if directory:
            try:
                Path(directory).mkdir(parents=True, exist_ok=True)  # DIR is always a folder
            except OSError as exc:
                raise UsageError(f"--download: cannot make folder {directory!r}: {exc}") from None
        started = time.monotonic()
        finished: dict[str, float] = {}
        async with self.ui.waiting(ids) as live_update:

            def on_update(generation: Generation) -> None:
                if generation.is_done:
                    finished.setdefault(generation.id, time.monotonic() - started)
                live_update(generation)

            results = await self.prism.wait_for_generations(
                ids, timeout=self.args.timeout, on_update=on_update, return_exceptions=True
            )
        failed = timed_out = False
        rows = []
        for generation_id, result in zip(ids, results, strict=True):
            file = None
            seconds = finished.get(generation_id, time.monotonic() - started)
            if isinstance(result, Generation) and directory:
                file = str(await self.download(result, directory))
            record: dict[str, Any]
            if isinstance(result, Generation):
                record = {**to_dict(result), "file": file}
                status = result.status
            elif isinstance(result, GenerationFailedError):
                record = {**to_dict(result.generation), "file": None}
                status = f"failed: {result.generation.error or 'no reason given'}"
                failed = True
            elif isinstance(result, WaitTimeoutError):
                last = result.last.status if result.last is not None else "unknown"
                record = {"id": generation_id, "status": last, "error": "wait timed out"}
                status = f"timed out ({last})"
                timed_out = True
            else:
                raise result
            record["seconds"] = round(seconds, 1)
            rows.append([generation_id, status, f"{seconds:.1f}s", file or ""])
            self.ui.emit(record)
        self.ui.table("Generations", ["id", "status", "seconds", "file"], rows)
        return EXIT_FAILED if failed else EXIT_TIMEOUT if timed_out else EXIT_OK
