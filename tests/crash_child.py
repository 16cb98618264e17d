"""One bulk run in a process of its own, for the crash matrix (``test_crash_matrix.py``).

Run as ``python tests/crash_child.py --ledger PATH --base-url URL --download DIR ...``: it runs
``prism.run`` over ``--count`` generation requests on a :class:`SQLiteLedger` file against a
fake server in the parent process and prints, one JSON object a line (flushed at once):

* ``{"event": "started", "pid": ...}`` once the client is open;
* ``{"event": "result", "key": ..., "state": ..., "ids": [...], "paths": [...], "error": ...}``
  for every :class:`RunResult` as it comes;
* ``{"event": "finished", "results": n}`` after the last one.

The parent kills it with SIGKILL wherever it likes, then runs it again on the same ledger: the
second run must finish the job. The requests are the same in every run (prompts and keys are
derived from the index), so a re-run is the same script run again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from prism_async import GenerationRequest, PollPolicy, PrismClient, RunResult
from prism_async.ledger import SQLiteLedger
from prism_async.ledger._durable import fingerprint
from prism_async.ledger._intent import intent_of

MODEL = "veo-3.1-fast"
FAST_POLL = PollPolicy(initial_delay=0.05, interval=0.1, max_interval=0.2, timeout=60.0)


def prompt_of(index: int) -> str:
    """The prompt of request ``index``: distinct, and none a substring of another."""
    return f"crash matrix clip <{index:03d}>: a lighthouse at dusk"


def request_of(index: int) -> GenerationRequest:
    """Request ``index`` of every run."""
    return GenerationRequest(prompt=prompt_of(index), model_name=MODEL)


def key_of(run_id: str, index: int) -> str:
    """The ledger key ``prism.run`` gives request ``index`` (no explicit ``key``): the run id
    and the first 16 hex digits of the request's fingerprint."""
    return f"{run_id}/{fingerprint(*intent_of(request_of(index)))[:16]}"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def describe(result: RunResult) -> dict[str, Any]:
    return {
        "key": result.key,
        "state": result.state,
        "ids": [generation.id for generation in result.generations],
        "paths": [str(path) for path in result.paths],
        "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
    }


async def main(args: argparse.Namespace) -> int:
    requests = [request_of(i) for i in range(args.count)]
    ledger = SQLiteLedger(
        args.ledger,
        reconcile_window=args.reconcile_window,
        reconcile_interval=args.reconcile_interval,
    )
    async with PrismClient(
        args.api_key, base_url=args.base_url, timeout=args.timeout, poll=FAST_POLL, ledger=ledger
    ) as prism:
        emit("started", pid=os.getpid())
        seen = 0
        async for result in prism.run(
            requests,
            run_id=args.run_id,
            download_to=args.download,
            concurrency=args.concurrency,
            poll=FAST_POLL,
        ):
            seen += 1
            emit("result", **describe(result))
        emit("finished", results=seen)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="prism_sk_test")
    parser.add_argument("--download", required=True)
    parser.add_argument("--run-id", default="crash-matrix")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--reconcile-window", type=float, default=1800.0)
    parser.add_argument("--reconcile-interval", type=float, default=0.1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
