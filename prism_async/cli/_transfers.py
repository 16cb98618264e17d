"""Commands on queued generations and on files: ``status``, ``wait``, ``download``, ``upload``."""

from __future__ import annotations

import argparse

from .. import to_dict
from ._context import Context
from ._files import Files
from ._registry import EXIT_OK, command

__all__ = ["download", "status", "upload", "wait"]


def _status_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", metavar="ID", nargs="+", help="generation ids")


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
    parser.add_argument("ids", metavar="ID", nargs="+", help="generation ids")
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
    parser.add_argument("id", metavar="ID", help="a generation id")
    parser.add_argument(
        "-o", "--output", metavar="PATH", help="file or directory (default: this directory)"
    )


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
    parser.add_argument(
        "files", metavar="FILE", nargs="+", help="local image, video or audio files"
    )


@command(
    "upload",
    help="upload reference files, print their keys",
    options=_upload_options,
    option_names={"source": "FILE"},
)
async def upload(ctx: Context) -> int:
    """Upload files (every one checked before the first is uploaded); print (or emit) each
    storage key."""
    files = Files()
    for index, file in enumerate(ctx.args.files):
        files.one(str(index), "FILE", file, file=True)
    files.check()
    await files.keys(ctx.upload)
    return EXIT_OK
