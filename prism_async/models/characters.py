"""Models for ``/api/characters``."""

from __future__ import annotations

from datetime import datetime

from attrs import frozen

__all__ = ["Character"]


@frozen
class Character:
    """A saved character, usable as a template ``character_variables`` value."""

    id: str
    """Character id (a UUID)."""
    name: str | None = None
    """Display name."""
    description: str | None = None
    """Optional description."""
    created_at: datetime | None = None
    """When it was created (timezone-aware)."""
