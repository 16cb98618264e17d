"""Generation records written in groups: what waits and downloads learn, in few transactions."""

from __future__ import annotations

import asyncio
import logging

from ._base import Ledger
from ._model import GenerationRecord

__all__ = ["GroupWriter"]

logger = logging.getLogger("prism_async.ledger")


class GroupWriter:
    """Generation records written together: what arrives while one batch is being written
    goes in the next, in one transaction. Each caller still waits for its own record."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._pending: list[tuple[GenerationRecord, asyncio.Future[None] | None]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def write(self, record: GenerationRecord) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
        self._pending.append((record, done))
        self._start()
        await asyncio.shield(done)  # cancelled or not, the record is written

    def add(self, records: list[GenerationRecord]) -> None:
        """Write ``records`` with the next group, without waiting (best effort: a failure is
        logged at DEBUG)."""
        self._pending.extend((record, None) for record in records)
        self._start()

    async def drain(self) -> None:
        """Wait until what was added so far is written (or failed)."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.wait({self._flushing})

    def _start(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._ledger.record_many([record for record, _ in batch])
            except Exception as exc:
                logger.debug("could not write %d generation records: %s", len(batch), exc)
                for _, done in batch:
                    if done is not None and not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if done is not None and not done.done():
                        done.set_result(None)
