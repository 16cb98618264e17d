"""``prism.assets``: search community and history assets."""

from __future__ import annotations

from collections.abc import AsyncIterator

from .._converters import structure
from .._rules import ASSET_PAGING, ASSET_SOURCES, ASSET_TYPES
from .._validation import check_choice, check_query
from ..models.assets import Asset
from ..models.common import Page
from ._base import Resource, page_params, paginate

__all__ = ["Assets"]


class Assets(Resource):
    """Endpoints under ``/api/assets``."""

    def _params(
        self, q: str, type: str | None, source: str | None, limit: int | None, offset: int | None
    ) -> dict[str, str]:
        return page_params(
            limit,
            offset,
            ASSET_PAGING,
            q=check_query("q", q, required=True),
            type=check_choice("type", type, ASSET_TYPES),
            source=check_choice("source", source, ASSET_SOURCES),
        )

    async def search(
        self,
        q: str,
        *,
        type: str | None = None,
        source: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[Asset]:
        """One page of assets matching ``q``.

        Args:
            q: search text, at least 2 characters.
            type: ``all``, ``image`` or ``video``.
            source: ``all``, ``community`` or ``history``.
            limit: page size, 1 to 60 (server default 24).
            offset: index of the first result.
        """
        params = self._params(q, type, source, limit, offset)
        payload = await self._http.request("GET", ("assets", "search"), params=params)
        return structure(payload, Page[Asset])

    def iter_search(
        self,
        q: str,
        *,
        type: str | None = None,
        source: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Asset]:
        """Every asset matching ``q``, page after page (``limit`` is the page size)."""
        self._params(q, type, source, limit, None)
        return paginate(
            lambda offset: self.search(q, type=type, source=source, limit=limit, offset=offset)
        )
