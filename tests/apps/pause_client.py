"""One PrismClient on a shared RedisLedger, in a process of its own, driven line by line.

Run by tests/test_fleet_pauses.py with PRISM_API_KEY, PRISM_BASE_URL (the fake), REDIS_URL,
LEDGER_PREFIX and NAME set. Prints ``{"ready": true}`` once the client is open, then reads
lines of commands from stdin: ``get`` lists templates (``q=NAME``, so the fake's log tells the
processes apart), ``post`` creates a generation (prompt ``clip from NAME``); the commands of one
line run at once. Each prints one JSON line: ``{"command", "error", "seconds"}``. An empty line
or end of input closes the client and exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from prism_async import PrismClient, PrismError
from prism_async.ledger import RedisLedger

NAME = os.environ["NAME"]


async def run(prism: PrismClient, command: str) -> None:
    started = time.monotonic()
    error = None
    try:
        if command == "get":
            await prism.templates.list(q=NAME)
        else:
            await prism.generations.create(prompt=f"clip from {NAME}", model_name="veo-3.1")
    except PrismError as exc:
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.monotonic() - started
    print(json.dumps({"command": command, "error": error, "seconds": seconds}), flush=True)


async def main() -> None:
    ledger = RedisLedger(os.environ["REDIS_URL"], prefix=os.environ["LEDGER_PREFIX"])
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: list[asyncio.Task[None]] = []
    async with PrismClient(ledger=ledger) as prism:
        print(json.dumps({"ready": True}), flush=True)
        while line := (await reader.readline()).decode().strip():
            tasks += [asyncio.create_task(run(prism, command)) for command in line.split()]
        await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
