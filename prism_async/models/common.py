"""Models shared by every paginated endpoint."""

from __future__ import annotations

from typing import Generic, TypeVar

from attrs import field, frozen

__all__ = ["Page", "Pagination"]

T = TypeVar("T")


@frozen
class Pagination:
    """Where a page sits in a listing."""

    offset: int = 0
    """Index of the first item of this page."""
    limit: int | None = None
    """Page size the server applied."""
    has_more: bool = False
    """Whether another page follows."""


@frozen
class Page(Generic[T]):
    """One page of a listing: ``data`` plus ``pagination``."""

    data: list[T] = field(factory=list)
    """The items on this page."""
    pagination: Pagination = field(factory=Pagination)
    """Offset, limit and whether more pages follow."""
