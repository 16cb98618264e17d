"""Commands that need no account: ``serve-fake`` and ``demo`` (both run FakePrismServer)."""

from __future__ import annotations

import argparse
import struct
import zlib
from pathlib import Path

from ._context import Context
from ._registry import EXIT_OK, UsageError, command

__all__ = ["demo", "serve_fake"]


def _serve_fake_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--generation-seconds", type=float, default=5.0)
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


@command("demo", help="the main job on the embedded fake, no account needed", client="fake")
async def demo(ctx: Context) -> int:
    """Upload a reference, generate several videos and a template video, wait, download."""
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
    return code


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
