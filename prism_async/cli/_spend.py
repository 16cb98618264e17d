"""``prism-async ledger spend`` and ``prism-async ledger budget``: where the credits went, and
the budgets that cap them. Both read (and ``budget --set`` writes) the ledger only: no API key,
no network."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime

from .._errors import InvalidRequestError
from ..ledger import Budget
from ..ledger._money import SPEND_GROUPS
from ._context import Context
from ._ledger import _existing, _open
from ._registry import EXIT_OK, UsageError, command

__all__ = ["ledger_budget", "ledger_spend"]


def _day(text: str) -> date | datetime:
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date: {text!r} (YYYY-MM-DD or an ISO 8601 time)"
        ) from None


def _spend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--by",
        choices=SPEND_GROUPS,
        default="run",
        help="group by run (a key's prefix), label (key=value), model, UTC day or budget "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--since", type=_day, default=None, help="only charges from this date (YYYY-MM-DD) on"
    )


@command(
    "spend",
    help="what the ledger's submissions were charged, grouped",
    options=_spend_options,
    client="none",
    group="ledger",
)
async def ledger_spend(ctx: Context) -> int:
    """A table of credits, videos and submissions per group, with totals."""
    path = _existing(ctx.args)
    async with _open(path) as ledger:
        rows = await ledger.spend(by=ctx.args.by, since=ctx.args.since)
    for row in rows:
        ctx.ui.emit(
            {
                "by": ctx.args.by,
                "group": row.group,
                "credits": row.credits,
                "generations": row.generations,
                "submissions": row.submissions,
            }
        )
    if not rows:
        ctx.ui.print(f"no charges in {path}")
        return EXIT_OK
    cells = [[r.group, f"{r.credits:g}", r.generations, r.submissions] for r in rows]
    if ctx.args.by != "label":  # a submission with two labels counts in two groups
        total_credits = sum(r.credits for r in rows)
        videos, submissions = sum(r.generations for r in rows), sum(r.submissions for r in rows)
        cells.append(["total", f"{total_credits:g}", videos, submissions])
    columns = [ctx.args.by, "credits", "videos", "submissions"]
    ctx.ui.table(f"Spend by {ctx.args.by}", columns, cells)
    return EXIT_OK


def _budget_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the budget's name")
    parser.add_argument(
        "--set", type=float, default=None, metavar="N", help="create it, or change its cap to N"
    )
    parser.add_argument(
        "--per",
        choices=("day", "hour"),
        default=None,
        help="with --set: a rolling window (default: a lifetime cap)",
    )


def _budget_record(budget: Budget) -> dict[str, object]:
    return {
        "name": budget.name,
        "max_credits": budget.max_credits,
        "per": budget.per,
        "spent": budget.spent,
        "reserved": budget.reserved,
        "available": budget.available,
    }


@command(
    "budget",
    help="show a budget, or create or change it with --set",
    options=_budget_options,
    option_names={"name": "NAME", "set": "--set", "per": "--per"},
    client="none",
    group="ledger",
)
async def ledger_budget(ctx: Context) -> int:
    """A budget's cap, spent, reserved and what is left; ``--set N`` writes it first."""
    args = ctx.args
    if args.per is not None and args.set is None:
        raise UsageError("--per: give it with --set N")
    path = _existing(args)
    async with _open(path) as ledger:
        if args.set is not None:
            try:
                budget = await ledger.set_budget(args.name, args.set, per=args.per)
            except InvalidRequestError as exc:
                raise UsageError(f"--set: {exc}") from None
        else:
            found = await ledger.budget(args.name)
            if found is None:
                raise UsageError(f"NAME: no budget is named {args.name!r} in {path}")
            budget = found
    ctx.ui.emit(_budget_record(budget))
    window = f"per {budget.per} (rolling)" if budget.per else "lifetime"
    now = datetime.now(UTC)
    ctx.ui.print(f"budget    {budget.name} ({window}, as of {now:%Y-%m-%d %H:%M} UTC)")
    ctx.ui.print(f"cap       {budget.max_credits:g}")
    ctx.ui.print(f"spent     {budget.spent:g}")
    ctx.ui.print(f"reserved  {budget.reserved:g}")
    ctx.ui.print(f"available {budget.available:g}")
    return EXIT_OK
