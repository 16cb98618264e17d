"""The fake's price table: what each generation and template submission costs (tests may change
it mid-run, in-process or through the control API)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import define, field

from ._data import MODEL_PRICES, TEMPLATE_PRICE

__all__ = ["PriceTable"]


def _factors(value: Mapping[str, float]) -> dict[str, float]:
    return {str(k): float(v) for k, v in value.items()}


@define
class PriceTable:
    """Credits per video: a model's price, times the factors of the request's duration,
    resolution and audio, rounded, times ``count``; a template's price per submission.

    The defaults are the fake's catalogue (:data:`MODEL_PRICES`, :data:`TEMPLATE_PRICE`), with
    every factor 1: ``PriceTable(durations={"10s": 1.5}, audio=1.25)`` makes a 10 s video with
    audio cost 1.875 times its model's price.
    """

    models: dict[str, float] = field(factory=lambda: dict(MODEL_PRICES), converter=_factors)
    """Credits per video of each model; any other model is a ``pricing_error``."""
    durations: dict[str, float] = field(factory=dict, converter=_factors)
    """Factor by duration (``"8s"``); 1 for any other."""
    resolutions: dict[str, float] = field(factory=dict, converter=_factors)
    """Factor by resolution (``"1080p"``); 1 for any other."""
    audio: float = field(default=1.0, converter=float)
    """Factor when ``hasAudio`` is true."""
    templates: dict[str, float] = field(factory=dict, converter=_factors)
    """Credits per submission of a template, by id; ``template_price`` for any other."""
    template_price: float = field(default=float(TEMPLATE_PRICE), converter=float)

    def generation(self, body: Mapping[str, Any]) -> int | None:
        """What ``POST /api/generations`` with ``body`` costs, or None for an unknown model."""
        per_video = self.models.get(body.get("modelName"))  # type: ignore[arg-type]
        if per_video is None:
            return None
        per_video *= self.durations.get(str(body.get("duration")), 1.0)
        per_video *= self.resolutions.get(str(body.get("resolution")), 1.0)
        if body.get("hasAudio") is True:
            per_video *= self.audio
        return round(per_video) * int(body.get("count") or 1)

    def template(self, template_id: str) -> int:
        """What one submission of a template costs."""
        return round(self.templates.get(template_id, self.template_price))

    def update(self, changes: Mapping[str, Any]) -> None:
        """Change some of the table (the control API's ``POST /_fake/prices``): a mapping
        merges into its mapping, a number replaces its number.

        Raises:
            ValueError: an unknown entry, or a value of the wrong kind.
        """
        for name, value in changes.items():
            if name in ("models", "durations", "resolutions", "templates"):
                if not isinstance(value, Mapping) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
                ):
                    raise ValueError(f"{name}: must be an object of numbers")
                getattr(self, name).update(_factors(value))
            elif name in ("audio", "template_price"):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{name}: must be a number")
                setattr(self, name, float(value))
            else:
                raise ValueError(f"unknown price entry {name!r}")
