"""Models for ``/api/assets/search``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from attrs import frozen

__all__ = ["Asset"]


@frozen
class Asset:
    """An image or video found by ``assets.search``."""

    id: str
    """Search result id."""
    asset_id: str | None = None
    """Asset record id."""
    asset_s3_key: str | None = None
    """Storage key: usable as a key input of ``generations.create``."""
    asset_url: str | None = None
    """URL of the asset."""
    asset_type: str | None = None
    """``image`` or ``video``."""
    prompt: str | None = None
    """The prompt it was made from."""
    model_name: str | None = None
    """The model that made it."""
    published_at: datetime | None = None
    """When it was published (timezone-aware)."""
    created_at: datetime | None = None
    """When it was created (timezone-aware)."""
    metadata: dict[str, Any] | None = None
    """Free-form metadata, as received."""
    source: str | None = None
    """``community`` or ``history``."""
