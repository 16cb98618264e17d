"""What every resource namespace shares: the HTTP layer, and walking pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from .. import _rules
from .._rules import Paging
from .._validation import check
from ..models.common import Page

if TYPE_CHECKING:
    from .._client import PrismClient

__all__ = ["Resource", "page_params", "paginate"]

T = TypeVar("T")


class Resource:
    """Base of the namespaces (``prism.generations`` and the like)."""

    def __init__(self, client: PrismClient) -> None:
        self._client = client
        self._http = client._http


def page_params(
    limit: int | None, offset: int | None, paging: Paging, **extra: str | None
) -> dict[str, str]:
    """Query parameters of a listing, checked and with unset values left out.

    ``paging`` is the endpoint's :class:`~prism_async._rules.Paging`.
    """
    max_limit = paging.max_limit
    params = {key: value for key, value in extra.items() if value is not None}
    if limit is not None:
        check("limit", _rules.int_range_problem(limit, 1, max_limit))
        params["limit"] = str(limit)
    if offset is not None:
        check("offset", _rules.offset_problem(offset))
        params["offset"] = str(offset)
    return params


async def paginate(fetch: Callable[[int], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    """Yield every item of every page, fetching the next page only when it is needed."""
    offset = 0
    while True:
        page = await fetch(offset)
        for item in page.data:
            yield item
        if not page.pagination.has_more or not page.data:
            return
        offset += len(page.data)
