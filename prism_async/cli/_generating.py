"""Commands that queue videos (and spend credits): ``generate`` and ``template``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .. import to_dict
from ..models.requests import GenerationRequest, TemplateRequest
from ._context import Context
from ._files import FILE_OR_KEY, FILE_OR_KEY_RULE, Files
from ._registry import EXIT_OK, UsageError, command

__all__ = ["generate", "template"]


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
    parser.add_argument("prompt", metavar="PROMPT", help="what the video shows")
    parser.add_argument("--model", required=True, help="model id, e.g. veo-3.1")
    parser.add_argument("--aspect-ratio", help="auto 21:9 16:9 4:3 1:1 3:4 9:16")
    parser.add_argument("--duration", help="e.g. 8s")
    parser.add_argument("--resolution", help="e.g. 1080p")
    parser.add_argument("--count", type=int, help="videos to queue, 1 to 4")
    parser.add_argument("--audio", action="store_true", help="request generated audio")
    parser.add_argument("--start-frame", metavar="F", help=f"start frame image: {FILE_OR_KEY}")
    parser.add_argument("--end-frame", metavar="F", help=f"end frame image: {FILE_OR_KEY}")
    parser.add_argument(
        "--ingredient", metavar="F", nargs="+", help=f"reference images: {FILE_OR_KEY}"
    )
    parser.add_argument(
        "--character-ref", metavar="F", nargs="+", help=f"character images: {FILE_OR_KEY}"
    )
    parser.add_argument("--source-video", metavar="F", help=f"video to edit: {FILE_OR_KEY}")
    parser.add_argument(
        "--reference-video", metavar="F", nargs="+", help=f"reference videos: {FILE_OR_KEY}"
    )
    parser.add_argument("--audio-file", metavar="F", help=f"driving audio: {FILE_OR_KEY}")
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
        "start_frame_key": "--start-frame",
        "end_frame_key": "--end-frame",
        "ingredient_image_keys": "--ingredient",
        "character_reference_image_keys": "--character-ref",
        "source_video_key": "--source-video",
        "reference_video_keys": "--reference-video",
        "audio_key": "--audio-file",
    },
    paid=True,
    epilog=FILE_OR_KEY_RULE,
)
async def generate(ctx: Context) -> int:
    """Queue videos from a prompt, uploading local reference files first: every argument is
    checked before anything is uploaded."""
    args = ctx.args
    files = Files()
    files.one("start_frame_key", "--start-frame", args.start_frame)
    files.one("end_frame_key", "--end-frame", args.end_frame)
    files.many("ingredient_image_keys", "--ingredient", args.ingredient)
    files.many("character_reference_image_keys", "--character-ref", args.character_ref)
    files.one("source_video_key", "--source-video", args.source_video)
    files.many("reference_video_keys", "--reference-video", args.reference_video)
    files.one("audio_key", "--audio-file", args.audio_file)
    files.check()
    request: dict[str, Any] = {
        "prompt": args.prompt,
        "model_name": args.model,
        "aspect_ratio": args.aspect_ratio,
        "duration": args.duration,
        "resolution": args.resolution,
        "count": args.count,
        "has_audio": True if args.audio else None,
        "template_id": args.template_id,
    }
    GenerationRequest(**request, **files.typed())  # the rest is checked before any upload
    request.update(await files.keys(ctx.upload))
    batch = await ctx.prism.generations.create(**request)
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
    parser.add_argument("template_id", metavar="TEMPLATE_ID", help="the template's id")
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a template variable (repeat it); KEY=@path uploads the local file and passes its "
        "storage key",
    )
    parser.add_argument(
        "--character",
        action="append",
        default=[],
        metavar="KEY=ID",
        help="a character variable (repeat it)",
    )
    parser.add_argument(
        "--webhook-url", metavar="URL", help="where the API reports the videos' outcome"
    )
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
    epilog="Every argument is checked (a --var KEY=@path file must exist and be an image,\n"
    "video or audio file) before any file is uploaded.",
)
async def template(ctx: Context) -> int:
    """Queue a template video; ``--var KEY=@path`` uploads the file and passes its key. Every
    argument is checked before anything is uploaded."""
    args = ctx.args
    variables = _pairs(args.var, "--var")
    characters = _pairs(args.character, "--character") or None
    files = Files()
    for key, value in variables.items():
        if value.startswith("@"):
            files.one(key, f"--var {key}", value[1:], file=True)
    files.check()
    TemplateRequest(args.template_id, variables, characters, args.webhook_url)  # before uploads
    variables.update(await files.keys(ctx.upload))
    batch = await ctx.prism.templates.generate(
        args.template_id,
        variables=variables,
        character_variables=characters,
        webhook_url=args.webhook_url,
    )
    ctx.ui.print(f"queued {len(batch.ids)} video(s) from template {args.template_id}")
    records = [{"id": g.generation_id, "status": g.status} for g in batch.generations]
    return await _after_submit(ctx, batch.ids, records)
