"""Commands that show what the API has: ``templates``, ``template-info``, ``characters``,
``assets``."""

from __future__ import annotations

import argparse

from .. import to_dict
from ._context import Context
from ._registry import EXIT_OK, UsageError, command

__all__ = ["assets", "characters", "template_info", "templates"]


def _templates_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--q", help="search text (2+ characters)")
    parser.add_argument("--category", help="only this category, e.g. ugc")


@command(
    "templates",
    help="list templates",
    options=_templates_options,
    option_names={"q": "--q"},
)
async def templates(ctx: Context) -> int:
    """Every template (of a search or category)."""
    rows = []
    async for template in ctx.prism.templates.iter(q=ctx.args.q, category=ctx.args.category):
        ctx.ui.emit(to_dict(template))
        rows.append([template.id, template.title, template.category or template.kind or ""])
    ctx.ui.table("Templates", ["id", "title", "category/kind"], rows)
    return EXIT_OK


def _template_info_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("template_id", metavar="ID", help="the template's id")


@command(
    "template-info",
    help="show a template and its variables",
    options=_template_info_options,
    option_names={"template_id": "ID"},
)
async def template_info(ctx: Context) -> int:
    """One template with its variables (type, required, default)."""
    template = await ctx.prism.templates.get(ctx.args.template_id)
    ctx.ui.emit(to_dict(template))
    ctx.ui.print(f"{template.id}: {template.title or ''}")
    if template.description:
        ctx.ui.print(template.description)
    rows = [
        [
            v.key,
            v.type or "",
            "yes" if v.required else "no",
            v.default_value or "",
            v.description or v.label or "",
        ]
        for v in template.input_variables
    ]
    if rows:
        ctx.ui.table("Variables", ["key", "type", "required", "default", "about"], rows)
    return EXIT_OK


def _characters_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--q", help="search text (2+ characters)")


@command(
    "characters",
    help="list characters",
    options=_characters_options,
    option_names={"q": "--q"},
)
async def characters(ctx: Context) -> int:
    """Every character (of a search)."""
    rows = []
    async for character in ctx.prism.characters.iter(q=ctx.args.q):
        ctx.ui.emit(to_dict(character))
        rows.append([character.id, character.name, character.description or ""])
    ctx.ui.table("Characters", ["id", "name", "description"], rows)
    return EXIT_OK


def _assets_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("q", metavar="Q", help="search text (2+ characters)")
    parser.add_argument(
        "--type", choices=["all", "image", "video"], help="only images or videos (all: both)"
    )
    parser.add_argument(
        "--source",
        choices=["all", "community", "history"],
        help="community assets, your history (your generations), or all",
    )
    parser.add_argument("--limit", type=int, default=24, help="results to show (default 24)")


@command(
    "assets",
    help="search assets",
    options=_assets_options,
    option_names={
        "q": "Q",
        "type": "--type",
        "source": "--source",
        "limit": "--limit",
    },
)
async def assets(ctx: Context) -> int:
    """Up to ``--limit`` assets matching a search."""
    args = ctx.args
    if args.limit < 1:
        raise UsageError("--limit: must be at least 1")
    rows = []
    async for asset in ctx.prism.assets.iter_search(
        args.q, type=args.type, source=args.source, limit=min(args.limit, 60)
    ):
        ctx.ui.emit(to_dict(asset))
        rows.append([asset.asset_s3_key, asset.asset_type, asset.source, asset.prompt])
        if len(rows) >= args.limit:
            break
    ctx.ui.table("Assets", ["key", "type", "source", "prompt"], rows)
    return EXIT_OK
