"""Commands on queued generations and on files: ``status``, ``wait``, ``download``, ``upload``."""

from __future__ import annotations

import argparse

from .. import to_dict
from ._context import Context
from ._registry import EXIT_OK, command

__all__ = ["download", "status", "upload", "wait"]


def _status_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", metavar="ID", nargs="+")


@command(
    "status",
    help="show generations",
    options=_status_options,
    option_names={"generation_id": "ID"},
)
async def status(ctx: Context) -> int:
    """Show each generation's current state."""
    rows = []
    for generation_id in ctx.args.ids:
        generation = await ctx.prism.generations.get(generation_id)
        ctx.ui.emit(to_dict(generation))
        rows.append(
            [
                generation.id,
                generation.status,
                generation.error or "",
                generation.video_url or "",
            ]
        )
    ctx.ui.table("Generations", ["id", "status", "error", "video_url"], rows)
    return EXIT_OK


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", metavar="ID", nargs="+")
    parser.add_argument("--download", metavar="DIR", help="download the videos into DIR")


@command(
    "wait",
    help="wait for generations",
    options=_wait_options,
    option_names={"generation_id": "ID", "generation_or_id": "ID"},
)
async def wait(ctx: Context) -> int:
    """Wait for generations with a live display, downloading them if asked."""
    return await ctx.wait_and_report(ctx.args.ids, ctx.args.download)


def _download_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID")
    parser.add_argument("-o", "--output", metavar="PATH", help="file or directory")


@command(
    "download",
    help="download a generation's video",
    options=_download_options,
    option_names={"generation_id": "ID", "generation_or_id": "ID"},
)
async def download(ctx: Context) -> int:
    """Download one generation's video to a file or into a directory."""
    path = await ctx.download(ctx.args.id, ctx.args.output or ".")
    ctx.ui.print(f"saved {path}")
    ctx.ui.emit({"id": ctx.args.id, "file": str(path)})
    return EXIT_OK


def _upload_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", metavar="FILE", nargs="+")


@command(
    "upload",
    help="upload reference files, print their keys",
    options=_upload_options,
    option_names={"source": "FILE"},
)
async def upload(ctx: Context) -> int:
    """Upload files; print (or emit) each storage key."""
    for file in ctx.args.files:
        await ctx.upload(file)
    return EXIT_OK
