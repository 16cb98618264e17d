"""Where the command line's output goes: JSON lines, plain lines, or rich live displays.

``rich`` (the ``cli`` extra) draws tables, a live table of generations and progress bars when
stdout is a terminal; without it, or when stdout is not a terminal, output is plain lines;
``--json`` prints one JSON object per line and nothing else on stdout.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..models.generations import Generation

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["UI", "OutputClosed", "RowUpdate"]


class OutputClosed(Exception):
    """stdout was closed by the program reading it (``prism-async templates | head -1``):
    nothing more can be shown, so the command stops (``main``: exit 141, nothing on stderr)."""


class RowUpdate(Protocol):
    """``update(key, cells, mark=None)`` of :meth:`UI.live_rows`: a row's new cells; ``mark``
    None while it is in progress (a spinner), else what to show instead (``"✔"``)."""

    def __call__(self, key: str, cells: Sequence[str], mark: str | None = None) -> None: ...


class UI:
    """Where output goes: JSON lines, plain lines, or rich tables and live displays.

    Args:
        json_mode: print JSON lines (:meth:`emit`) and nothing else.
        stream: where lines go (default stdout); a terminal gets rich output when rich is
            installed.
        console: a rich ``Console`` to draw on instead of one made for ``stream`` (tests pass
            a recording console); ignored in JSON mode.
    """

    def __init__(
        self, *, json_mode: bool, stream: Any = None, console: Console | None = None
    ) -> None:
        self.json_mode = json_mode
        if stream is None:
            stream = console.file if console is not None and not json_mode else sys.stdout
        self.stream = stream
        self.rich: Console | None = None
        if json_mode:
            return
        if console is not None:
            self.rich = console
        elif getattr(self.stream, "isatty", lambda: False)():
            with contextlib.suppress(ImportError):
                from rich.console import Console

                self.rich = Console(file=self.stream)

    def print(self, text: str) -> None:
        """A line of human output (never in JSON mode)."""
        if self.json_mode:
            return
        if self.rich is not None:
            self.rich.print(text, highlight=False, markup=False)
        else:
            self._write([text])

    def emit(self, record: dict[str, Any]) -> None:
        """One JSON object per line (JSON mode only)."""
        if self.json_mode:
            self._write([json.dumps(record, default=str)])

    def _write(self, lines: Sequence[str]) -> None:
        """Plain lines on the stream, flushed; :class:`OutputClosed` once its reader is gone."""
        try:
            for line in lines:
                print(line, file=self.stream)
            self.stream.flush()
        except BrokenPipeError:
            raise OutputClosed from None

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A table for humans: rich when available, aligned text otherwise."""
        if self.json_mode:
            return
        cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
        if self.rich is not None:
            from rich.table import Table

            table = Table(title=title)
            for column in columns:
                table.add_column(column)
            for row in cells:
                table.add_row(*row)
            self.rich.print(table)
            return
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        self._write(
            [
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                for row in [list(columns), *cells]
            ]
        )

    @contextlib.contextmanager
    def transfer(
        self, label: str, total: int | None
    ) -> Iterator[Callable[[int, int | None], None]]:
        """A progress bar (bytes, speed) for an upload or download; plain mode stays quiet."""
        if self.rich is None:
            yield lambda done, size: None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.rich,
            transient=True,
        ) as progress:
            task = progress.add_task(label, total=total)

            def update(done: int, size: int | None) -> None:
                progress.update(task, completed=done, total=size)

            yield update

    @contextlib.asynccontextmanager
    async def waiting(self, ids: Sequence[str]) -> AsyncIterator[Callable[[Generation], None]]:
        """A live table of generations while they are awaited; yields the on_update callback."""
        started = time.monotonic()
        states: dict[str, tuple[str, float | None]] = dict.fromkeys(ids, ("waiting", None))

        def on_update(generation: Generation) -> None:
            finished = time.monotonic() - started if generation.is_done else None
            previous = states.get(generation.id, ("", None))[0]
            states[generation.id] = (generation.status, finished)
            if self.rich is None and generation.status != previous:
                elapsed = time.monotonic() - started
                self.print(f"{generation.id}  {generation.status}  {elapsed:.1f}s")

        if self.rich is None:
            yield on_update
            return
        from rich.live import Live
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        spinners = {i: Spinner("dots") for i in ids}
        colours = {"completed": "green", "failed": "red", "generating": "yellow"}

        def render() -> Table:
            table = Table(title="Waiting for videos")
            for column in ("", "generation", "status", "elapsed"):
                table.add_column(column)
            now = time.monotonic() - started
            for generation_id, (status, finished) in states.items():
                done = finished is not None
                mark: Any = (
                    Text("✔" if status == "completed" else "✘")
                    if done
                    else (spinners[generation_id])
                )
                seconds = finished if finished is not None else now
                table.add_row(
                    mark,
                    generation_id,
                    Text(status, style=colours.get(status, "cyan")),
                    f"{seconds:.1f}s",
                )
            return table

        with Live(get_renderable=render, console=self.rich, refresh_per_second=10):
            yield on_update

    @contextlib.contextmanager
    def live_rows(
        self,
        title: str,
        columns: Sequence[str],
        rows: Mapping[str, Sequence[str]],
        *,
        styles: Mapping[str, str] | None = None,
    ) -> Iterator[RowUpdate]:
        """A live table of rows by key while something runs; yields ``update(key, cells,
        mark)``. The key is the first column, ``cells`` the others; a cell equal to a key of
        ``styles`` gets that style. Plain mode prints a line when a row changes (not the first
        rows); JSON mode shows nothing."""
        table_rows: dict[str, tuple[list[str], str | None]] = {
            key: (list(cells), None) for key, cells in rows.items()
        }

        def update(key: str, cells: Sequence[str], mark: str | None = None) -> None:
            previous = table_rows.get(key, ([], None))[0]
            table_rows[key] = (list(cells), mark)
            if self.rich is None and list(cells) != previous:
                self.print("  ".join([key, *(c for c in cells if c)]))

        if self.rich is None:
            yield update
            return
        from rich.live import Live
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        spinners: dict[str, Spinner] = {}
        style = dict(styles or {})

        def render() -> Table:
            table = Table(title=title)
            for column in ("", *columns):
                table.add_column(column)
            for key, (cells, mark) in table_rows.items():
                if mark is None:
                    shown: Any = spinners.setdefault(key, Spinner("dots"))
                else:
                    shown = Text(mark)
                table.add_row(shown, key, *(Text(c, style=style.get(c, "")) for c in cells))
            return table

        with Live(get_renderable=render, console=self.rich, refresh_per_second=10):
            yield update
