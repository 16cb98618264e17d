"""The ``prism-async`` command line.

Exit codes: 0 success, 1 a generation failed, 2 bad usage or bad input, 3 an API error,
4 a wait timed out, 130 interrupted (Ctrl-C). No traceback reaches the user without ``-v``.

``rich`` (the ``cli`` extra) draws live tables and progress bars when stdout is a terminal;
without it, or when stdout is not a terminal, output is plain lines; ``--json`` prints one JSON
object per line and nothing else on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import struct
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from ._client import PrismClient
from ._converters import converter
from ._errors import (
    APIConnectionError,
    APIStatusError,
    GenerationFailedError,
    InvalidRequestError,
    PrismError,
    WaitTimeoutError,
)
from .models.generations import Generation
from .polling import PollPolicy

__all__ = ["EXIT_API", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_TIMEOUT", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_API = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130

FAKE_POLL = PollPolicy(initial_delay=0.3, interval=0.4, max_interval=1.5, multiplier=1.5)
"""Polling against the embedded fake: its videos take seconds, not minutes."""

# SDK argument names -> the option a command-line user typed.
_OPTION_NAMES = {
    "prompt": "PROMPT",
    "model_name": "--model",
    "aspect_ratio": "--aspect-ratio",
    "duration": "--duration",
    "resolution": "--resolution",
    "count": "--count",
    "template_id": "--template-id",
    "webhook_url": "--webhook-url",
    "variables": "--var",
    "character_variables": "--character",
    "generation_id": "ID",
    "generation_or_id": "ID",
    "timeout": "--timeout",
    "base_url": "--base-url",
    "q": "--q",
    "type": "--type",
    "limit": "--limit",
    "source": "FILE",
}


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def _option(field: str) -> str:
    head = field.split("[", 1)[0]
    return _OPTION_NAMES.get(head, field)


# -- output ----------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    return converter.unstructure(value)


class UI:
    """Where output goes: JSON lines, plain lines, or rich tables and live displays."""

    def __init__(self, *, json_mode: bool, stream: Any = None) -> None:
        self.json_mode = json_mode
        self.stream = stream if stream is not None else sys.stdout
        self.rich: Any = None
        if not json_mode and getattr(self.stream, "isatty", lambda: False)():
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
            print(text, file=self.stream, flush=True)

    def emit(self, record: dict[str, Any]) -> None:
        """One JSON object per line (JSON mode only)."""
        if self.json_mode:
            print(json.dumps(record, default=str), file=self.stream, flush=True)

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
        print(
            "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
            file=self.stream,
        )
        for row in cells:
            print(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
                file=self.stream,
            )
        self.stream.flush()

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


# -- argument parsing ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() owns the exit code."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``prism-async`` argument parser."""
    parser = _Parser(
        prog="prism-async",
        description="Generate videos with the Prism Videos API from the command line.",
        epilog="Try it with no account: prism-async demo",
    )
    parser.add_argument("--version", action="version", version=f"prism-async {__version__}")
    parser.add_argument("--api-key", help="API key (default: $PRISM_API_KEY)")
    parser.add_argument("--base-url", help="API root (default: $PRISM_BASE_URL or the real API)")
    parser.add_argument(
        "--fake", action="store_true", help="run against an embedded FakePrismServer (no network)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    parser.add_argument(
        "--timeout", type=float, help="seconds a wait may take before exit code 4 (default 900)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    generate = commands.add_parser("generate", help="generate videos from a prompt")
    generate.add_argument("prompt", metavar="PROMPT")
    generate.add_argument("--model", required=True, help="model id, e.g. veo-3.1")
    generate.add_argument("--aspect-ratio", help="auto 21:9 16:9 4:3 1:1 3:4 9:16")
    generate.add_argument("--duration", help="e.g. 8s")
    generate.add_argument("--resolution", help="e.g. 1080p")
    generate.add_argument("--count", type=int, help="videos to queue, 1 to 4")
    generate.add_argument("--audio", action="store_true", help="request generated audio")
    refs = "a local file (uploaded first) or a storage key"
    generate.add_argument("--start-frame", metavar="F", help=f"start frame image: {refs}")
    generate.add_argument("--end-frame", metavar="F", help=f"end frame image: {refs}")
    generate.add_argument("--ingredient", metavar="F", nargs="+", help="reference images")
    generate.add_argument("--character-ref", metavar="F", nargs="+", help="character images")
    generate.add_argument("--source-video", metavar="F", help="video to edit")
    generate.add_argument("--reference-video", metavar="F", nargs="+", help="reference videos")
    generate.add_argument("--audio-file", metavar="F", help="driving audio")
    generate.add_argument("--template-id", help="template to associate")
    _wait_options(generate)

    template = commands.add_parser("template", help="generate a video from a template")
    template.add_argument("template_id", metavar="TEMPLATE_ID")
    template.add_argument(
        "--var", action="append", default=[], metavar="KEY=VALUE", help="KEY=@path uploads a file"
    )
    template.add_argument("--character", action="append", default=[], metavar="KEY=ID")
    template.add_argument("--webhook-url", metavar="URL")
    _wait_options(template)

    status = commands.add_parser("status", help="show generations")
    status.add_argument("ids", metavar="ID", nargs="+")

    wait = commands.add_parser("wait", help="wait for generations")
    wait.add_argument("ids", metavar="ID", nargs="+")
    wait.add_argument("--download", metavar="DIR", help="download the videos into DIR")

    download = commands.add_parser("download", help="download a generation's video")
    download.add_argument("id", metavar="ID")
    download.add_argument("-o", "--output", metavar="PATH", help="file or directory")

    upload = commands.add_parser("upload", help="upload reference files, print their keys")
    upload.add_argument("files", metavar="FILE", nargs="+")

    templates = commands.add_parser("templates", help="list templates")
    templates.add_argument("--q", help="search text (2+ characters)")
    templates.add_argument("--category")

    info = commands.add_parser("template-info", help="show a template and its variables")
    info.add_argument("template_id", metavar="ID")

    characters = commands.add_parser("characters", help="list characters")
    characters.add_argument("--q", help="search text (2+ characters)")

    assets = commands.add_parser("assets", help="search assets")
    assets.add_argument("q", metavar="Q")
    assets.add_argument("--type", choices=["all", "image", "video"])
    assets.add_argument("--source", choices=["all", "community", "history"])
    assets.add_argument("--limit", type=int, default=24, help="results to show (default 24)")

    serve = commands.add_parser("serve-fake", help="run FakePrismServer in the foreground")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--generation-seconds", type=float, default=5.0)

    commands.add_parser("demo", help="the main job on the embedded fake, no account needed")
    return parser


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait until the videos are done")
    parser.add_argument("--download", metavar="DIR", help="wait, then download into DIR")


# -- commands --------------------------------------------------------------------------------


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise UsageError(f"{option}: expected KEY=VALUE, got {value!r}")
        pairs[key] = item
    return pairs


class Runner:
    """Runs one command with a client and a UI, and tracks the exit code."""

    def __init__(self, prism: PrismClient, ui: UI, args: argparse.Namespace) -> None:
        self.prism = prism
        self.ui = ui
        self.args = args

    async def upload(self, path: str) -> str:
        """Upload a local file with a progress bar; return its key."""
        file = Path(path).expanduser()
        size = file.stat().st_size if file.is_file() else None  # the SDK explains a bad file
        with self.ui.transfer(f"upload {file.name}", size) as progress:
            uploaded = await self.prism.uploads.upload(file, on_progress=progress)
        self.ui.print(f"uploaded {file} -> {uploaded.s3_key}")
        self.ui.emit({"event": "upload", "file": str(file), **_jsonable(uploaded)})
        return uploaded.s3_key

    async def reference(self, value: str | None) -> str | None:
        """A local file is uploaded and replaced by its key; anything else is a key."""
        if value is None:
            return None
        return await self.upload(value) if Path(value).expanduser().is_file() else value

    async def references(self, values: Sequence[str] | None) -> list[str] | None:
        if values is None:
            return None
        return [key for key in [await self.reference(v) for v in values] if key is not None]

    async def generate(self) -> int:
        args = self.args
        batch = await self.prism.generations.create(
            prompt=args.prompt,
            model_name=args.model,
            aspect_ratio=args.aspect_ratio,
            duration=args.duration,
            resolution=args.resolution,
            count=args.count,
            has_audio=True if args.audio else None,
            start_frame_key=await self.reference(args.start_frame),
            end_frame_key=await self.reference(args.end_frame),
            ingredient_image_keys=await self.references(args.ingredient),
            character_reference_image_keys=await self.references(args.character_ref),
            source_video_key=await self.reference(args.source_video),
            reference_video_keys=await self.references(args.reference_video),
            audio_key=await self.reference(args.audio_file),
            template_id=args.template_id,
        )
        credits = batch.metadata.credits_charged
        self.ui.print(
            f"queued {len(batch.ids)} video(s), {credits:g} credits"
            if credits is not None
            else f"queued {len(batch.ids)} video(s)"
        )
        return await self.after_submit(batch.ids, [_jsonable(g) for g in batch.generations])

    async def template(self) -> int:
        args = self.args
        variables = _pairs(args.var, "--var")
        for key, value in variables.items():
            if value.startswith("@"):
                variables[key] = await self.upload(value[1:])
        batch = await self.prism.templates.generate(
            args.template_id,
            variables=variables,
            character_variables=_pairs(args.character, "--character") or None,
            webhook_url=args.webhook_url,
        )
        self.ui.print(f"queued {len(batch.ids)} video(s) from template {args.template_id}")
        records = [{"id": g.generation_id, "status": g.status} for g in batch.generations]
        return await self.after_submit(batch.ids, records)

    async def after_submit(self, ids: list[str], records: list[dict[str, Any]]) -> int:
        if self.args.wait or self.args.download:
            return await self.wait_and_report(ids, self.args.download)
        self.ui.table("Queued", ["id", "status"], [[r["id"], r["status"]] for r in records])
        for record in records:
            self.ui.emit(record)
        return EXIT_OK

    async def wait_and_report(self, ids: Sequence[str], directory: str | None) -> int:
        """Wait for every id with a live display, download if asked, print a summary."""
        started = time.monotonic()
        finished: dict[str, float] = {}
        async with self.ui.waiting(ids) as live_update:

            def on_update(generation: Generation) -> None:
                if generation.is_done:
                    finished.setdefault(generation.id, time.monotonic() - started)
                live_update(generation)

            results = await self.prism.wait_for_generations(
                ids, timeout=self.args.timeout, on_update=on_update, return_exceptions=True
            )
        failed = timed_out = False
        rows = []
        for generation_id, result in zip(ids, results, strict=True):
            file = None
            seconds = finished.get(generation_id, time.monotonic() - started)
            if isinstance(result, Generation) and directory:
                file = str(await self.download(result, directory))
            record: dict[str, Any]
            if isinstance(result, Generation):
                record = {**_jsonable(result), "file": file}
                status = result.status
            elif isinstance(result, GenerationFailedError):
                record = {**_jsonable(result.generation), "file": None}
                status = f"failed: {result.generation.error or 'no reason given'}"
                failed = True
            elif isinstance(result, WaitTimeoutError):
                last = result.last.status if result.last is not None else "unknown"
                record = {"id": generation_id, "status": last, "error": "wait timed out"}
                status = f"timed out ({last})"
                timed_out = True
            else:
                raise result
            record["seconds"] = round(seconds, 1)
            rows.append([generation_id, status, f"{seconds:.1f}s", file or ""])
            self.ui.emit(record)
        self.ui.table("Generations", ["id", "status", "seconds", "file"], rows)
        return EXIT_FAILED if failed else EXIT_TIMEOUT if timed_out else EXIT_OK

    async def download(self, generation: Generation | str, destination: str) -> Path:
        label = generation.id if isinstance(generation, Generation) else generation
        with self.ui.transfer(f"download {label}", None) as progress:
            return await self.prism.generations.download(
                generation, destination, on_progress=progress
            )

    async def status(self) -> int:
        rows = []
        for generation_id in self.args.ids:
            generation = await self.prism.generations.get(generation_id)
            self.ui.emit(_jsonable(generation))
            rows.append(
                [
                    generation.id,
                    generation.status,
                    generation.error or "",
                    generation.video_url or "",
                ]
            )
        self.ui.table("Generations", ["id", "status", "error", "video_url"], rows)
        return EXIT_OK

    async def wait(self) -> int:
        return await self.wait_and_report(self.args.ids, self.args.download)

    async def download_one(self) -> int:
        path = await self.download(self.args.id, self.args.output or ".")
        self.ui.print(f"saved {path}")
        self.ui.emit({"id": self.args.id, "file": str(path)})
        return EXIT_OK

    async def upload_files(self) -> int:
        for file in self.args.files:
            await self.upload(file)
        return EXIT_OK

    async def templates(self) -> int:
        rows = []
        async for template in self.prism.templates.iter(q=self.args.q, category=self.args.category):
            self.ui.emit(_jsonable(template))
            rows.append([template.id, template.title, template.category or template.kind or ""])
        self.ui.table("Templates", ["id", "title", "category/kind"], rows)
        return EXIT_OK

    async def template_info(self) -> int:
        template = await self.prism.templates.get(self.args.template_id)
        self.ui.emit(_jsonable(template))
        self.ui.print(f"{template.id}: {template.title or ''}")
        if template.description:
            self.ui.print(template.description)
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
            self.ui.table("Variables", ["key", "type", "required", "default", "about"], rows)
        return EXIT_OK

    async def characters(self) -> int:
        rows = []
        async for character in self.prism.characters.iter(q=self.args.q):
            self.ui.emit(_jsonable(character))
            rows.append([character.id, character.name, character.description or ""])
        self.ui.table("Characters", ["id", "name", "description"], rows)
        return EXIT_OK

    async def assets(self) -> int:
        args = self.args
        if args.limit < 1:
            raise UsageError("--limit: must be at least 1")
        rows = []
        async for asset in self.prism.assets.iter_search(
            args.q, type=args.type, source=args.source, limit=min(args.limit, 60)
        ):
            self.ui.emit(_jsonable(asset))
            rows.append([asset.asset_s3_key, asset.asset_type, asset.source, asset.prompt])
            if len(rows) >= args.limit:
                break
        self.ui.table("Assets", ["key", "type", "source", "prompt"], rows)
        return EXIT_OK

    async def demo(self, fake: Any) -> int:
        """Upload a reference, generate several videos and a template video, wait, download."""
        self.ui.print("prism-async demo: the main job, on an embedded fake API (no network)")
        reference = Path("prism-demo") / "reference.png"
        reference.parent.mkdir(parents=True, exist_ok=True)
        reference.write_bytes(_png(64, 36))
        key = await self.upload(str(reference))
        batch = await self.prism.generations.create(
            prompt="A sleek product turntable with soft studio light",
            model_name="veo-3.1",
            aspect_ratio="16:9",
            duration="8s",
            count=3,
            start_frame_key=key,
        )
        self.ui.print(
            f"queued {len(batch.ids)} prompt videos ({batch.metadata.credits_charged:g} credits)"
        )
        from_template = await self.prism.templates.generate(
            "abc123", variables={"hook": "Meet the lamp that follows the sun", "productImage": key}
        )
        self.ui.print(f"queued {len(from_template.ids)} template video")
        code = await self.wait_and_report([*batch.ids, *from_template.ids], "prism-demo")
        self.ui.print(
            f"videos saved in {Path('prism-demo').resolve()}; credits left: {fake.credits}"
        )
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


async def _serve_fake(args: argparse.Namespace, ui: UI) -> int:
    from .testing import FakePrismServer

    server = FakePrismServer(port=args.port, generation_seconds=args.generation_seconds)
    await server.start()
    ui.print(f"FakePrismServer listening on {server.base_url}")
    ui.print(f"  export PRISM_BASE_URL={server.base_url}")
    ui.print(f"  export PRISM_API_KEY={server.api_key}")
    ui.print("Ctrl-C to stop.")
    ui.emit({"base_url": server.base_url, "api_key": server.api_key})
    await server.serve_forever()
    return EXIT_OK


async def _run(args: argparse.Namespace, ui: UI) -> int:
    if args.command == "serve-fake":
        return await _serve_fake(args, ui)
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout: must be a positive number of seconds")
    async with contextlib.AsyncExitStack() as stack:
        fake: Any = None
        if args.fake or args.command == "demo":
            from .testing import FakePrismServer

            fake = await stack.enter_async_context(
                FakePrismServer(generation_seconds=lambda: random.uniform(1.5, 4.0))
            )
            api_key, base_url, poll = fake.api_key, fake.base_url, FAKE_POLL
        else:
            api_key = args.api_key or os.environ.get("PRISM_API_KEY")
            if not api_key:
                raise UsageError(
                    "--api-key: no API key; pass --api-key or set PRISM_API_KEY (or try --fake)"
                )
            base_url, poll = args.base_url, PollPolicy()
        prism = await stack.enter_async_context(PrismClient(api_key, base_url=base_url, poll=poll))
        runner = Runner(prism, ui, args)
        if args.command == "demo":
            return await runner.demo(fake)
        commands = {
            "generate": runner.generate,
            "template": runner.template,
            "status": runner.status,
            "wait": runner.wait,
            "download": runner.download_one,
            "upload": runner.upload_files,
            "templates": runner.templates,
            "template-info": runner.template_info,
            "characters": runner.characters,
            "assets": runner.assets,
        }
        return await commands[args.command]()
    raise AssertionError("unreachable")  # pragma: no cover


_PAID_COMMANDS = frozenset({"generate", "template", "demo"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"prism-async: error: {exc}\nTry 'prism-async --help'.", file=sys.stderr)
        return EXIT_USAGE
    ui = UI(json_mode=args.json)
    if args.verbose:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("prism_async").setLevel(logging.DEBUG)

    def fail(code: int, message: str, exc: BaseException) -> int:
        print(f"prism-async: {message}", file=sys.stderr)
        if isinstance(exc, PrismError) and exc.generation_ids:
            print(
                f"prism-async: generations queued: {', '.join(exc.generation_ids)}", file=sys.stderr
            )
        elif isinstance(exc, PrismError) and exc.maybe_sent and args.command in _PAID_COMMANDS:
            print(
                "prism-async: the request may have been queued (and charged): "
                "check before submitting it again",
                file=sys.stderr,
            )
        if args.verbose:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        return code

    try:
        return asyncio.run(_run(args, ui))
    except KeyboardInterrupt as exc:
        return fail(EXIT_INTERRUPTED, "interrupted", exc)
    except UsageError as exc:
        return fail(EXIT_USAGE, f"error: {exc}", exc)
    except InvalidRequestError as exc:
        return fail(EXIT_USAGE, f"error: {_option(exc.field)}: {exc.reason}", exc)
    except GenerationFailedError as exc:
        return fail(EXIT_FAILED, str(exc), exc)
    except WaitTimeoutError as exc:
        return fail(EXIT_TIMEOUT, str(exc), exc)
    except APIStatusError as exc:
        label = exc.code or f"HTTP {exc.status_code}"
        return fail(EXIT_API, f"{label}: {exc.message}", exc)
    except APIConnectionError as exc:
        return fail(EXIT_API, f"connection error: {exc}", exc)
    except PrismError as exc:
        return fail(EXIT_API, f"error: {exc}", exc)
    except (ValueError, OSError) as exc:
        return fail(EXIT_USAGE, f"error: {exc}", exc)
    except Exception as exc:  # a bug: still no traceback without -v
        return fail(EXIT_FAILED, f"unexpected error: {type(exc).__name__}: {exc} (use -v)", exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
