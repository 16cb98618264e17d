"""The fake's account: its state, its clock and the documented rules of every endpoint.

Like a moto ``models.py``: plain Python, no HTTP. Each method takes what a request carries
(a JSON body, a query, a path id), applies the rules of prism-api.md with the shared input
rules of :mod:`prism_async._rules`, and returns the JSON to answer, or raises
:class:`FakeAPIError` with the documented status, code and message.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .. import _rules
from .._rules import ASPECT_RATIOS
from . import _data
from ._catalog import Catalog
from ._data import INVALID_TEMPLATES, TEMPLATES
from ._prices import PriceTable
from ._records import FakeAPIError, FakeGeneration, check, invalid, json_object, matches, page
from ._storage import FakeStorage

__all__ = ["PrismBackend"]

_KEY_FIELDS = ("startFrameKey", "endFrameKey", "sourceVideoKey", "audioKey")
_KEY_LIST_FIELDS = ("ingredientImageKeys", "characterReferenceImageKeys", "referenceVideoKeys")
_HISTORY_PREFIX = "users/user_fake/generations/"
_TERMINAL = ("completed", "failed")
JSON = dict[str, Any]


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class PrismBackend:
    """One fake Prism account: key, credits, generations on a clock, storage and catalogue."""

    def __init__(
        self,
        *,
        api_key: str,
        credits: int,
        generation_seconds: float | Callable[[], float],
        url_ttl: float,
        video: bytes,
        fail_marker: str,
        scopes: tuple[str, ...],
        history_completed_only: bool = False,
        prices: PriceTable | None = None,
    ) -> None:
        self.api_key = api_key
        self.prices = prices if prices is not None else PriceTable()
        self.credits = credits
        self.generation_seconds = generation_seconds
        self.fail_marker = fail_marker
        self.scopes = scopes
        self.free_tier_paused = False
        self.history_completed_only = history_completed_only
        """When True, assets search lists a generation in ``history`` only once completed."""
        self.generations: dict[str, FakeGeneration] = {}
        self.templates: list[JSON] = [dict(t) for t in TEMPLATES]
        self.catalog = Catalog(clock=lambda: self.wall(self.now()))
        self.storage = FakeStorage(clock=self.now, url_ttl=url_ttl, video=video)
        self.changed: Callable[[], None] = lambda: None
        """Called whenever a generation may have changed status (the webhook sender listens)."""
        self._offset = 0.0
        self._wall0 = time.time() - time.monotonic()

    # -- the clock ---------------------------------------------------------------------------

    def now(self) -> float:
        """The server clock: monotonic seconds plus everything :meth:`advance` added."""
        return time.monotonic() + self._offset

    def wall(self, clock: float) -> float:
        """Wall-clock time of a server-clock moment (advanced time included)."""
        return self._wall0 + clock

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds
        self.changed()

    def finish(self, generation_id: str, reason: str | None) -> None:
        """End a generation now: failed with ``reason``, or completed when it is None."""
        generation = self.generations[generation_id]
        generation.forced = "completed" if reason is None else "failed"
        generation.forced_at = self.now()
        generation.fail_reason = reason
        self.changed()

    # -- auth --------------------------------------------------------------------------------

    def authorize(self, header: str) -> None:
        """Check an ``Authorization`` header and the key's scope."""
        if not hmac.compare_digest(header.encode(), f"Bearer {self.api_key}".encode()):
            raise FakeAPIError(401, "unauthorized", "Missing or invalid API key")
        if "templates:read" not in self.scopes:
            raise FakeAPIError(403, "forbidden", "API key lacks templates:read scope")

    def _charge(self, cost: int, message: str) -> None:
        if self.credits < cost:
            raise FakeAPIError(402, "insufficient_credits", message)
        self.credits -= cost

    # -- generations -------------------------------------------------------------------------

    def _new_generation(self, **kwargs: Any) -> FakeGeneration:
        seconds = self.generation_seconds
        generation = FakeGeneration(
            id=f"gen_{secrets.token_hex(6)}",
            created=self.now(),
            duration=float(seconds() if callable(seconds) else seconds),
            **kwargs,
        )
        self.generations[generation.id] = generation
        self.changed()
        return generation

    def create_generation(self, body: Any) -> JSON:
        """``POST /api/generations``."""
        body = json_object(body)
        self._check_create(body)
        model = body["modelName"]
        cost = self.prices.generation(body)
        if cost is None:
            raise FakeAPIError(400, "pricing_error", f"No pricing found for model {model!r}")
        if self.free_tier_paused:
            raise FakeAPIError(
                503, "free_tier_paused", "Free tier generation is temporarily paused"
            )
        count = body.get("count") or 1
        self._charge(cost, "Not enough credits")
        fail = self.fail_marker and self.fail_marker in body["prompt"]
        generations = [
            self._new_generation(
                prompt=body["prompt"],
                model_name=model,
                fail_reason="Generation failed" if fail else None,
            )
            for _ in range(count)
        ]
        return _data.queued_generations(
            [g.id for g in generations],
            model=model,
            credits_charged=cost,
            variant="image-to-video" if body.get("startFrameKey") else "text-to-video",
        )

    def _check_create(self, body: JSON) -> None:
        def optional(name: str, problem: Callable[[Any], str | None]) -> str | None:
            return None if body.get(name) is None else problem(body[name])

        count = body.get("count")
        if isinstance(count, float) and count.is_integer():
            body["count"] = int(count)  # JSON has one number type: 2.0 is 2
        check(
            {
                "prompt": _rules.text_problem(body.get("prompt")),
                "modelName": _rules.text_problem(body.get("modelName")),
                "aspectRatio": optional(
                    "aspectRatio", lambda value: _rules.choice_problem(value, ASPECT_RATIOS)
                ),
                "duration": optional("duration", _rules.duration_problem),
                "count": optional("count", _rules.count_problem),
            }
        )
        if "hasAudio" in body and not isinstance(body["hasAudio"], bool):
            raise invalid("hasAudio must be a boolean")
        for name in ("resolution", "templateId"):
            if name in body and not isinstance(body[name], str):
                raise invalid(f"{name} must be a string")
        keys: list[tuple[str, Any]] = [(name, body[name]) for name in _KEY_FIELDS if name in body]
        for name in _KEY_LIST_FIELDS:
            if name in body:
                if not isinstance(body[name], list):
                    raise invalid(f"{name} must be an array of S3 keys")
                keys.extend((name, key) for key in body[name])
        for name, key in keys:
            if not isinstance(key, str) or not self._known_key(key):
                raise invalid(f"{name}: unknown S3 key {key!r}; upload the file first")

    def _known_key(self, key: str) -> bool:
        if key in self.storage.objects or any(
            a["asset_s3_key"] == key for a in self.catalog.assets
        ):
            return True
        generation_id = key.removeprefix(_HISTORY_PREFIX).removesuffix(".mp4")
        generation = self.generations.get(generation_id)
        return (
            generation is not None
            and key == f"{_HISTORY_PREFIX}{generation_id}.mp4"
            and generation.status_at(self.now()) == "completed"
        )

    def get_generation(self, generation_id: str) -> JSON:
        """``GET /api/generations/{id}``."""
        generation = self.generations.get(generation_id)
        if generation is None:
            raise FakeAPIError(404, "not_found", "Generation not found")
        status = generation.status_at(self.now())
        completed = status == "completed"
        return _data.generation(
            generation.id,
            status,
            template_id=generation.template_id,
            video_url=self.storage.video_url(generation.id) if completed else None,
            share_url=f"{self.storage.root}/share/{generation.id}" if completed else None,
            created_at=_iso(self.wall(generation.created)),
            completed_at=_iso(self.wall(generation.finished_at())) if completed else None,
            error=generation.fail_reason if status == "failed" else None,
        )

    # -- templates ---------------------------------------------------------------------------

    def get_template(self, template_id: str) -> JSON:
        """``GET /api/templates/{id}`` (the template itself)."""
        template = next((t for t in self.templates if t["id"] == template_id), None)
        if template is None:
            raise FakeAPIError(404, "not_found", "No template exists with the given ID")
        return template

    def list_templates(self, query: Mapping[str, str]) -> JSON:
        """``GET /api/templates``."""
        q, category = query.get("q"), query.get("category")
        items = [
            t
            for t in self.templates
            if category in (None, t.get("category"))
            and matches(q, t["title"], t.get("description"))
        ]
        checks = {"q": None if q is None else _rules.query_problem(q)}
        return page(items, query, _rules.TEMPLATE_PAGING, **checks)

    def generate_from_template(self, template_id: str, body: Any) -> JSON:
        """``POST /api/templates/{id}/generate``."""
        template = self.get_template(template_id)
        body = json_object(body)
        variables = body.get("variables")
        if not isinstance(variables, dict):
            raise invalid("variables is required")
        if template_id in INVALID_TEMPLATES:
            raise FakeAPIError(422, "invalid_template", "Template has invalid configuration")
        webhook_url = body.get("webhook_url")
        if webhook_url is not None and (problem := _rules.http_url_problem(webhook_url)):
            raise invalid(f"webhook_url: {problem}")
        characters = body.get("character_variables") or {}
        if not isinstance(characters, dict):
            raise invalid("character_variables must be an object")
        known = {c["id"] for c in self.catalog.characters}
        for key, character_id in characters.items():
            if character_id not in known:
                raise invalid(f"Unknown character for {key!r}")
        for variable in template.get("input_variables", []):
            key = variable["key"]
            value = characters.get(key, variables.get(key))
            if value is None and variable.get("default_value") is None and variable["required"]:
                raise invalid(f"Missing required variable: {key}")
            if value is not None and not isinstance(value, str):
                raise invalid(f"Variable {key} must be a string")
        cost = self.prices.template(template_id)
        self._charge(cost, "Not enough credits for generation")
        prompt = json.dumps(variables)
        fail = self.fail_marker and self.fail_marker in prompt
        generation = self._new_generation(
            prompt=prompt,
            model_name=template.get("model_name"),
            template_id=template_id,
            webhook_url=webhook_url,
            fail_reason="Generation timed out" if fail else None,
        )
        typical = max(1.0, round(generation.duration, 1))
        return _data.template_generations(
            [generation.id], template_id=template_id, typical=typical, credits_charged=cost
        )

    # -- history -----------------------------------------------------------------------------

    def _history(self) -> list[JSON]:
        """The account's generations as ``history`` assets, in creation order.

        Every generation is listed whatever its status (``asset_url`` only once completed),
        unless :attr:`history_completed_only` keeps the unfinished and failed ones out.
        """
        now, items = self.now(), []
        for g in self.generations.values():
            status = g.status_at(now)
            completed = status == "completed"
            if self.history_completed_only and not completed:
                continue
            items.append(
                _data.asset(
                    g.id,
                    asset_id=f"asset_{g.id.removeprefix('gen_')}",
                    s3_key=f"{_HISTORY_PREFIX}{g.id}.mp4",
                    url=self.storage.video_url(g.id) if completed else None,
                    kind="video",
                    prompt=g.prompt,
                    model_name=g.model_name,
                    published_at=None,
                    created_at=int(self.wall(g.created) * 1000),
                    metadata={"status": status},
                    source="history",
                )
            )
        return items

    def search_assets(self, query: Mapping[str, str]) -> JSON:
        """``GET /api/assets/search``: community assets and this account's history."""
        return self.catalog.search(query, self._history())

    # -- webhooks ----------------------------------------------------------------------------

    def due_webhooks(self) -> list[tuple[str, JSON]]:
        """Mark every finished generation's pending webhook as sent; ``(url, payload)`` pairs."""
        now, due = self.now(), []
        for generation in list(self.generations.values()):
            status = generation.status_at(now)
            if generation.webhook_url is None or generation.webhook_sent or status not in _TERMINAL:
                continue
            generation.webhook_sent = True
            payload = {
                "generation_id": generation.id,
                "status": status,
                "template_id": generation.template_id,
                "video_url": self.storage.video_url(generation.id)
                if status == "completed"
                else None,
                "error": generation.fail_reason if status == "failed" else None,
            }
            due.append((generation.webhook_url, payload))
        return due

    def webhooks_due(self) -> bool:
        """Whether some finished generation's webhook has not been sent yet."""
        now = self.now()
        return any(
            g.webhook_url is not None and not g.webhook_sent and g.status_at(now) in _TERMINAL
            for g in self.generations.values()
        )
