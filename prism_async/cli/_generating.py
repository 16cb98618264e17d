"""Commands that queue videos (and spend credits): ``generate`` and ``template``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .. import to_dict
from ._context import Context
from ._registry import EXIT_OK, UsageError, command

__all__ = ["generate", "template"]

_REFERENCE = "a local file (uploaded first) or a storage key"


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait until the videos are done")
    parser.add_argument("--download", metavar="DIR", help="wait, then download into DIR")


async def _after_submit(ctx: Context, ids: list[str], records: list[dict[str, Any]]) -> int:
    """Wait (and download) when asked; otherwise show what was queued."""
    if ctx.args.wait or ctx.args.download:
        return await ctx.wait_and_report(ids, ctx.args.download)
    ctx.ui.table("Queued", ["id", "status"], [[r["id"], r["status"]] for r in records])
    for record in records:
        ctx.ui.emit(record)
    return EXIT_OK


def _generate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", metavar="PROMPT")
    parser.add_argument("--model", required=True, help="model id, e.g. veo-3.1")
    parser.add_argument("--aspect-ratio", help="auto 21:9 16:9 4:3 1:1 3:4 9:16")
    parser.add_argument("--duration", help="e.g. 8s")
    parser.add_argument("--resolution", help="e.g. 1080p")
    parser.add_argument("--count", type=int, help="videos to queue, 1 to 4")
    parser.add_argument("--audio", action="store_true", help="request generated audio")
    parser.add_argument("--start-frame", metavar="F", help=f"start frame image: {_REFERENCE}")
    parser.add_argument("--end-frame", metavar="F", help=f"end frame image: {_REFERENCE}")
    parser.add_argument("--ingredient", metavar="F", nargs="+", help="reference images")
    parser.add_argument("--character-ref", metavar="F", nargs="+", help="character images")
    parser.add_argument("--source-video", metavar="F", help="video to edit")
    parser.add_argument("--reference-video", metavar="F", nargs="+", help="reference videos")
    parser.add_argument("--audio-file", metavar="F", help="driving audio")
    parser.add_argument("--template-id", help="template to associate")
    _wait_options(parser)


@command(
    "generate",
    help="generate videos from a prompt",
    options=_generate_options,
    option_names={
        "prompt": "PROMPT",
        "model_name": "--model",
        "aspect_ratio": "--aspect-ratio",
        "duration": "--duration",
        "resolution": "--resolution",
        "count": "--count",
        "template_id": "--template-id",
        "source": "FILE",
    },
    paid=True,
)
async def generate(ctx: Context) -> int:
    """Queue videos from a prompt, uploading local reference files first."""
    args = ctx.args
    batch = await ctx.prism.generations.create(
        prompt=args.prompt,
        model_name=args.model,
        aspect_ratio=args.aspect_ratio,
        duration=args.duration,
        resolution=args.resolution,
        count=args.count,
        has_audio=True if args.audio else None,
        start_frame_key=await ctx.reference(args.start_frame),
        end_frame_key=await ctx.reference(args.end_frame),
        ingredient_image_keys=await ctx.references(args.ingredient),
        character_reference_image_keys=await ctx.references(args.character_ref),
        source_video_key=await ctx.reference(args.source_video),
        reference_video_keys=await ctx.references(args.reference_video),
        audio_key=await ctx.reference(args.audio_file),
        template_id=args.template_id,
    )
    credits = batch.metadata.credits_charged
    ctx.ui.print(
        f"queued {len(batch.ids)} video(s), {credits:g} credits"
        if credits is not None
        else f"queued {len(batch.ids)} video(s)"
    )
    return await _after_submit(ctx, batch.ids, [to_dict(g) for g in batch.generations])


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise UsageError(f"{option}: expected KEY=VALUE, got {value!r}")
        pairs[key] = item
    return pairs


def _template_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("template_id", metavar="TEMPLATE_ID")
    parser.add_argument(
        "--var", action="append", default=[], metavar="KEY=VALUE", help="KEY=@path uploads a file"
    )
    parser.add_argument("--character", action="append", default=[], metavar="KEY=ID")
    parser.add_argument("--webhook-url", metavar="URL")
    _wait_options(parser)


@command(
    "template",
    help="generate a video from a template",
    options=_template_options,
    option_names={
        "template_id": "TEMPLATE_ID",
        "variables": "--var",
        "character_variables": "--character",
        "webhook_url": "--webhook-url",
        "source": "FILE",
    },
    paid=True,
)
async def template(ctx: Context) -> int:
    """Queue a template video; ``--var KEY=@path`` uploads the file and passes its key."""
    args = ctx.args
    variables = _pairs(args.var, "--var")
    for key, value in variables.items():
        if value.startswith("@"):
            variables[key] = await ctx.upload(value[1:])
    batch = await ctx.prism.templates.generate(
        args.template_id,
        variables=variables,
        character_variables=_pairs(args.character, "--character") or None,
        webhook_url=args.webhook_url,
    )
    ctx.ui.print(f"queued {len(batch.ids)} video(s) from template {args.template_id}")
    records = [{"id": g.generation_id, "status": g.status} for g in batch.generations]
    return await _after_submit(ctx, batch.ids, records)
