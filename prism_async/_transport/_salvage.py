"""Generation ids read out of a create or template-generate answer, even a broken one. Pure.

When a paid POST's answer arrives cut short, or does not fit the documented shape, the ids it
holds are the only record of generations that were queued and charged: they go on the error
(``generation_ids``) so that none is lost.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

__all__ = ["generation_ids_in"]

_GENERATIONS = re.compile(r'"generations"\s*:\s*\[')
_ID_FIELD = re.compile(r'"(?:id|generation_id)"\s*:\s*("(?:[^"\\]|\\.)*")')


def _item_id(item: Any) -> str | None:
    if isinstance(item, dict):
        value = item.get("id", item.get("generation_id"))
        if isinstance(value, str) and value:
            return value
    return None


def _ids_in_text(text: str) -> tuple[str, ...]:
    """Ids in the ``generations`` list of a body that is not whole JSON (cut short, say)."""
    match = _GENERATIONS.search(text)
    if match is None:
        return ()
    decoder = json.JSONDecoder()
    ids: list[str] = []
    position = match.end()
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return tuple(ids)
        try:
            item, position = decoder.raw_decode(text, position)
        except ValueError:  # the item the body was cut in: its id may have arrived whole
            break
        if (found := _item_id(item)) is not None:
            ids.append(found)
    field = _ID_FIELD.search(text, position)
    if field is not None:
        with contextlib.suppress(ValueError):
            ids.append(json.loads(field.group(1)))
    return tuple(ids)


def generation_ids_in(body: Any) -> tuple[str, ...]:
    """The generation ids in a create or template-generate answer, even a broken one. Pure.

    ``body`` may be parsed JSON, or the raw bytes or text of a body that is cut short or does not
    fit the documented shape. Ids are read from the ``generations`` list (``id`` or
    ``generation_id``), at the top level or under ``data``; an id cut in half is never returned.
    """
    if isinstance(body, bytes | bytearray):
        body = bytes(body).decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return _ids_in_text(body)
    if not isinstance(body, dict):
        return ()
    data = body.get("data")
    items = (data if isinstance(data, dict) else body).get("generations")
    if not isinstance(items, list):
        return ()
    return tuple(found for item in items if (found := _item_id(item)) is not None)
