"""The input of ``prism-async run``: a JSONL file of requests, and the run id it implies.

One JSON object per line (blank lines skipped): the fields of
:class:`~prism_async.GenerationRequest`, or of :class:`~prism_async.TemplateRequest` when it
has ``template_id`` and no ``prompt``. Every line is checked before anything is sent; bad ones
are one :class:`UsageError` naming, for every bad line, the file, the line and the field
(``batch.jsonl:3: duration: ...``), and two lines giving the same ``key``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .._errors import InvalidRequestError
from ..ledger import Ledger
from ..runs import GenerationRequest, TemplateRequest
from ..runs import run_keys as derive_keys
from ._registry import UsageError

__all__ = ["BatchLine", "default_run_id", "load_batch", "run_keys"]

Request = GenerationRequest | TemplateRequest


@attrs.frozen
class BatchLine:
    """One request of a batch file, with its line number (from 1)."""

    line: int
    request: Request


def _fields(kind: type[Request]) -> dict[str, bool]:
    """A request class's field names -> whether the field is required."""
    return {f.name: f.default is attrs.NOTHING for f in attrs.fields(kind)}


def _request(record: dict[str, Any]) -> Request:
    """The request a line's object describes (InvalidRequestError naming the field if bad)."""
    is_template = "template_id" in record and "prompt" not in record
    kind: type[Request] = TemplateRequest if is_template else GenerationRequest
    fields = _fields(kind)
    for name in record:
        if name not in fields:
            known = ", ".join(fields)
            what = "a template request" if is_template else "a generation request"
            raise InvalidRequestError(name, f"unknown field for {what} (fields: {known})")
    for name, required in fields.items():
        if required and name not in record:
            hint = " (or template_id, for a template request)" if name == "prompt" else ""
            raise InvalidRequestError(name, f"required{hint}")
    return kind(**record)


def _parse(line: str) -> Request:
    """The request of one line (UsageError saying what is wrong with it)."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise UsageError(f"expected a JSON object, got {type(record).__name__}")
    try:
        return _request(record)
    except InvalidRequestError as exc:
        raise UsageError(f"{exc.field}: {exc.reason}") from None


def load_batch(file: str) -> list[BatchLine]:
    """Every request of a JSONL file, checked; one UsageError (exit 2) naming every bad line
    (one line of its message each), then how many there are."""
    path = Path(file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"FILE: cannot read {file}: {reason}") from None
    batch: list[BatchLine] = []
    problems: list[str] = []
    keys: dict[str, int] = {}  # a key given on a line -> that line
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            request = _parse(line)
        except UsageError as exc:
            problems.append(f"{file}:{number}: {exc}")
            continue
        if request.key is not None and request.key in keys:
            first = keys[request.key]
            what = f"key: {request.key!r} is also the key of line {first}"
            problems.append(f"{file}:{number}: {what}")
            continue
        if request.key is not None:
            keys[request.key] = number
        batch.append(BatchLine(number, request))
    if len(problems) > 1:
        problems.append(f"FILE: {len(problems)} bad lines in {file}; nothing was sent")
    if problems:
        raise UsageError("\n".join(problems))
    if not batch:
        raise UsageError(f"FILE: no requests in {file}")
    return batch


def default_run_id(file: str) -> str:
    """The run id of a file: its name without ``.jsonl``, never its folder, so the same file
    run from another checkout, container or CI workspace on the same ledger resumes."""
    name = Path(file).name
    stem = name[: -len(".jsonl")] if name.lower().endswith(".jsonl") else name
    return stem.strip() or "run"


async def run_keys(file: str, batch: Sequence[BatchLine], run_id: str, ledger: Ledger) -> list[str]:
    """Each request's ledger key, as ``prism.run`` makes them on ``ledger`` (its ``key``, or
    one derived from the request itself); UsageError when two lines would share one."""
    lines: dict[str, int] = {}
    for item in batch:
        key = item.request.key
        if key is None:
            continue
        if key in lines:
            raise UsageError(
                f"{file}:{item.line}: key: {key!r} is also the key of line {lines[key]}"
            )
        lines[key] = item.line
    try:
        return await derive_keys(ledger, [item.request for item in batch], run_id)
    except InvalidRequestError as exc:
        raise UsageError(f"{file}: {exc.field}: {exc.reason}") from None
