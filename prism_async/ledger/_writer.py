"""Generation records written in groups: what waits and downloads learn, in few transactions."""

from __future__ import annotations

import asyncio

from ._base import Ledger
from ._model import GenerationRecord

__all__ = ["GroupWriter"]


class GroupWriter:
    """Generation records written together: what arrives while one batch is being written
    goes in the next, in one transaction. Each caller still waits for its own record."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._pending: list[tuple[GenerationRecord, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def write(self, record: GenerationRecord) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
        self._pending.append((record, done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await asyncio.shield(done)  # cancelled or not, the record is written

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._ledger.record_many([record for record, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
