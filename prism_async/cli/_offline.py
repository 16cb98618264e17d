"""Commands that need no account: ``serve-fake`` and ``demo`` (both run FakePrismServer)."""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from ._context import Context
from ._registry import EXIT_OK, UsageError, command

if TYPE_CHECKING:
    from ..testing import FakePrismServer

__all__ = ["demo", "serve_fake"]


def _serve_fake_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=8765,
        metavar="N",
        help="port on 127.0.0.1 to listen on; 0 picks a free one (default 8765)",
    )
    parser.add_argument(
        "--generation-seconds",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds each video takes to generate (default 5)",
    )
    parser.add_argument(
        "--credits",
        type=int,
        default=10_000,
        metavar="N",
        help="starting credit balance (default 10000)",
    )


@command(
    "serve-fake",
    help="run FakePrismServer in the foreground",
    options=_serve_fake_options,
    client="none",
)
async def serve_fake(ctx: Context) -> int:
    """Serve a FakePrismServer until Ctrl-C, after printing how to point the SDK at it."""
    from ..testing import FakePrismServer

    args, ui = ctx.args, ctx.ui
    if args.credits < 0:
        raise UsageError("--credits: must be 0 or more")
    server = FakePrismServer(
        port=args.port, generation_seconds=args.generation_seconds, credits=args.credits
    )
    await server.start()
    control_url = f"{server.root}/_fake/"
    ui.print(f"FakePrismServer listening on {server.base_url}")
    ui.print(f"  export PRISM_BASE_URL={server.base_url}")
    ui.print(f"  export PRISM_API_KEY={server.api_key}")
    ui.print("Ctrl-C to stop.")
    ui.print(f'control API: {control_url} (see README "Testing your code")')
    ui.emit({"base_url": server.base_url, "api_key": server.api_key, "control_url": control_url})
    await server.serve_forever()
    return EXIT_OK


@command(
    "demo",
    help="the main job and a durable run on the embedded fake, no account needed",
    client="fake",
)
async def demo(ctx: Context) -> int:
    """Upload a reference, generate several videos and a template video, wait, download;
    then a durable run of a JSONL file with a ledger, and its re-run, which sends nothing."""
    ui, prism = ctx.ui, ctx.prism
    ui.print("prism-async demo: the main job, on an embedded fake API (no network)")
    reference = Path("prism-demo") / "reference.png"
    reference.parent.mkdir(parents=True, exist_ok=True)
    reference.write_bytes(_png(64, 36))
    key = await ctx.upload(str(reference))
    batch = await prism.generations.create(
        prompt="A sleek product turntable with soft studio light",
        model_name="veo-3.1",
        aspect_ratio="16:9",
        duration="8s",
        count=3,
        start_frame_key=key,
    )
    ui.print(f"queued {len(batch.ids)} prompt videos ({batch.metadata.credits_charged:g} credits)")
    from_template = await prism.templates.generate(
        "abc123", variables={"hook": "Meet the lamp that follows the sun", "productImage": key}
    )
    ui.print(f"queued {len(from_template.ids)} template video")
    code = await ctx.wait_and_report([*batch.ids, *from_template.ids], "prism-demo")
    credits = ctx.fake.credits if ctx.fake is not None else "unknown"
    ui.print(f"videos saved in {Path('prism-demo').resolve()}; credits left: {credits}")
    durable = await _durable_run(ctx, key)
    return code or durable


_DEMO_BATCH = [
    {"prompt": "A lighthouse at dawn, slow drone orbit", "model_name": "veo-3.1-fast"},
    {"prompt": "Rain on a neon street at night", "model_name": "kling-2.5", "aspect_ratio": "9:16"},
]


async def _durable_run(ctx: Context, image_key: str) -> int:
    """``prism-async run``'s job on the same fake: a JSONL file run with a ledger, then run
    again to show that a re-run sends and downloads nothing."""
    from .._client import PrismClient
    from ..ledger import SQLiteLedger
    from ._batch import default_run_id, load_batch, run_keys
    from ._main import FAKE_POLL
    from ._running import RunReport, run_batch

    fake, ui = ctx.fake, ctx.ui
    assert fake is not None  # the demo always runs on the embedded fake
    folder = Path("prism-demo")
    ledger, videos = folder / "ledger.db", folder / "run"
    for stale in (ledger, Path(f"{ledger}-wal"), Path(f"{ledger}-shm")):
        stale.unlink(missing_ok=True)  # a previous demo's, of another fake
    shutil.rmtree(videos, ignore_errors=True)
    file = folder / "batch.jsonl"
    template = {
        "template_id": "abc123",
        "variables": {"hook": "Built to last", "productImage": image_key},
    }
    lines = [json.dumps(request) for request in [*_DEMO_BATCH, template]]
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ui.print("")
    ui.print(f"a durable run, as `prism-async run {file} --ledger {ledger} --download {videos}`:")
    batch = load_batch(str(file))
    run_id = default_run_id(str(file))
    async with PrismClient(
        fake.api_key, base_url=fake.base_url, poll=FAKE_POLL, ledger=SQLiteLedger(ledger)
    ) as prism:
        assert prism.ledger is not None
        keys = await run_keys(str(file), batch, run_id, prism.ledger)
        run_ctx = Context(ctx.args, ui, prism=prism, fake=fake)

        async def run() -> RunReport:
            return await run_batch(
                run_ctx,
                batch,
                keys,
                run_id=run_id,
                source=str(file),
                ledger_label=str(ledger),
                download=str(videos),
            )

        first = await run()
        posts, downloads = _paid_posts(fake), _video_downloads(fake)
        ui.print("")
        ui.print("the same run again (as after a crash): it resumes from the ledger")
        again = await run()
        sent = _paid_posts(fake) - posts
        fetched = _video_downloads(fake) - downloads
    ui.print(f"re-run: {sent} new submissions, {fetched} downloads")
    return first.exit_code or again.exit_code


def _paid_posts(fake: FakePrismServer) -> int:
    return len(fake.requests_to("POST", "/api/generations")) + len(
        fake.requests_to("POST", "/api/templates/*/generate")
    )


def _video_downloads(fake: FakePrismServer) -> int:
    return len(fake.requests_to("GET", "/storage/videos/*"))


def _png(width: int, height: int) -> bytes:
    """A small gradient PNG, made here so the demo needs no files."""
    raw = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 4 % 256, y * 7 % 256, 160))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
