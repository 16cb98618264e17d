"""The fake's catalogue: characters and community assets, and the asset search.

Rules only, no HTTP: methods return the JSON to answer or raise ``FakeAPIError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .. import _rules
from ._data import character, seed_assets
from ._records import check, invalid, matches, page

__all__ = ["Catalog"]

JSON = dict[str, Any]


class Catalog:
    """Characters (newest first) and the seeded community assets."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.characters: list[JSON] = []
        self.assets: list[JSON] = seed_assets()
        self._clock = clock
        """Wall-clock seconds now (the server's clock, advanced time included)."""

    def create_character(self, name: Any, description: Any, images: Any) -> JSON:
        """``POST /api/characters``: ``images`` are URLs (JSON) or a count of files (form)."""
        problems: dict[str, str | None] = {}
        if not isinstance(images, int | list):
            raise invalid("images: must be a list of image URLs")
        if isinstance(images, list):
            problems = {f"images[{i}]": _rules.http_url_problem(u) for i, u in enumerate(images)}
        problems["name"] = _rules.text_problem(name, max_length=_rules.CHARACTER_NAME_MAX)
        problems["description"] = _rules.character_description_problem(description)
        count = len(images) if isinstance(images, list) else images
        problems["images"] = _rules.character_images_problem(count)
        check(problems)
        created = character(str(uuid.uuid4()), name, description, int(self._clock() * 1000))
        self.characters.insert(0, created)
        return created

    def list_characters(self, query: Mapping[str, str]) -> JSON:
        """``GET /api/characters``."""
        q = query.get("q")
        items = [c for c in self.characters if matches(q, c["name"], c.get("description"))]
        checks = {"q": None if q is None else _rules.query_problem(q)}
        return page(items, query, _rules.CHARACTER_PAGING, **checks)

    def search(self, query: Mapping[str, str], history: list[JSON]) -> JSON:
        """``GET /api/assets/search`` over the community assets and the account's ``history``."""
        q = query.get("q", "")
        kind, source = query.get("type", "all"), query.get("source", "all")
        items = [
            a
            for a in [*self.assets, *history]
            if matches(q, a.get("prompt"))
            and kind in ("all", a["asset_type"])
            and source in ("all", a["source"])
        ]
        return page(
            items,
            query,
            _rules.ASSET_PAGING,
            q=_rules.query_problem(query.get("q")),
            type=_rules.choice_problem(kind, _rules.ASSET_TYPES),
            source=_rules.choice_problem(source, _rules.ASSET_SOURCES),
        )
