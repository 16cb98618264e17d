"""FakePrismServer: the whole documented Prism API, in-process on loopback (aiohttp.web)."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import hmac
import json
import mimetypes
import random
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from attrs import define, frozen

from .. import _rules
from .._rules import ASPECT_RATIOS, MB, UPLOAD_LIMITS, Paging
from ._data import INVALID_TEMPLATES, MODEL_PRICES, TEMPLATE_PRICE, TEMPLATES, seed_assets
from ._faults import Fault, Handler

__all__ = [
    "FakeGeneration",
    "FakePrismServer",
    "RecordedRequest",
    "StoredObject",
    "WebhookDelivery",
]

_KEY_FIELDS = ("startFrameKey", "endFrameKey", "sourceVideoKey", "audioKey")
_KEY_LIST_FIELDS = ("ingredientImageKeys", "characterReferenceImageKeys", "referenceVideoKeys")
_HISTORY_PREFIX = "users/user_fake/generations/"


@frozen
class RecordedRequest:
    """One request the fake received."""

    method: str
    """HTTP method."""
    path: str
    """Decoded path, e.g. ``/api/generations``."""
    query: dict[str, str]
    """Query parameters."""
    headers: dict[str, str]
    """Request headers."""
    json: Any
    """The JSON body, or None when there was none (or it was not JSON)."""
    raw_path: str = ""
    """The path exactly as sent (still percent-encoded)."""


@frozen
class StoredObject:
    """A file uploaded through a presigned URL."""

    content_type: str
    """The Content-Type it was stored with."""
    data: bytes
    """Its bytes."""


@frozen
class WebhookDelivery:
    """One webhook POST the fake made (or tried to make)."""

    url: str
    """Where it was sent."""
    payload: dict[str, Any]
    """The JSON body."""
    status: int | None
    """The receiver's status, or None when delivery failed."""
    error: str | None = None
    """Why delivery failed, if it did."""


@define
class FakeGeneration:
    """A generation inside the fake, and the clock times that decide its status."""

    id: str
    created: float
    duration: float
    prompt: str
    model_name: str | None = None
    template_id: str | None = None
    webhook_url: str | None = None
    fail_reason: str | None = None
    forced: str | None = None
    forced_at: float | None = None
    webhook_sent: bool = False

    def status_at(self, now: float) -> str:
        if self.forced is not None:
            return self.forced
        elapsed = now - self.created
        if elapsed >= self.duration:
            return "failed" if self.fail_reason else "completed"
        if self.template_id is not None or elapsed >= self.duration * 0.1:
            return "generating"
        return "queued"

    def finished_at(self) -> float:
        return self.forced_at if self.forced_at is not None else self.created + self.duration


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _invalid(problems: Mapping[str, str | None]) -> web.Response | None:
    """``400 validation_error`` for the first field a shared rule found a problem with."""
    for name, problem in problems.items():
        if problem is not None:
            return _error(400, "validation_error", f"{name}: {problem}")
    return None


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _page_params(
    query: Mapping[str, str], paging: Paging, **checks: str | None
) -> tuple[int, int] | web.Response:
    """``(limit, offset)`` of a listing, or the 400 for them or for another failed check."""
    try:
        limit = int(query.get("limit", paging.default_limit))
        offset = int(query.get("offset", 0))
    except ValueError:
        return _error(400, "validation_error", "limit and offset must be integers")
    checks["limit"] = _rules.limit_problem(limit, paging)
    checks["offset"] = _rules.offset_problem(offset)
    invalid = _invalid(checks)
    return (limit, offset) if invalid is None else invalid


def _page(items: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    return {
        "data": items[offset : offset + limit],
        "pagination": {"offset": offset, "limit": limit, "has_more": offset + limit < len(items)},
    }


def _fake_video(size: int) -> bytes:
    """Deterministic bytes that start like an MP4 file."""
    header = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    body = random.Random(size).randbytes(max(0, size - len(header)))
    return (header + body)[:size]


class FakePrismServer:
    """The Prism Videos API on loopback, for tests, demos and local development.

    ``async with FakePrismServer() as server:`` starts it; point a client at
    ``server.base_url`` with ``server.api_key``. Generations move ``queued`` ->
    ``generating`` -> ``completed`` (or ``failed``) on the server's clock: real time plus
    whatever :meth:`advance` added, so tests need not sleep.

    Args:
        api_key: the only key accepted (``Authorization: Bearer <key>``).
        credits: starting balance; each video costs its model's price.
        generation_seconds: seconds a video takes, or a callable returning them.
        host: interface to bind (keep it loopback).
        port: port to bind; 0 picks a free one.
        url_ttl: seconds a presigned video or upload URL stays valid.
        video_bytes: size of each fake video.
        fail_marker: a prompt containing this text makes its generation fail when it finishes.
        scopes: the key's scopes; without ``templates:read`` every endpoint answers 403.
    """

    def __init__(
        self,
        *,
        api_key: str = "prism_sk_test",
        credits: int = 10_000,
        generation_seconds: float | Callable[[], float] = 2.0,
        host: str = "127.0.0.1",
        port: int = 0,
        url_ttl: float = 3600.0,
        video_bytes: int = 256 * 1024,
        fail_marker: str = "[fail]",
        scopes: tuple[str, ...] = ("templates:read",),
    ) -> None:
        self.api_key = api_key
        """The accepted API key."""
        self.credits = credits
        """The current credit balance (tests may set it)."""
        self.generation_seconds = generation_seconds
        self.url_ttl = url_ttl
        self.fail_marker = fail_marker
        self.scopes = scopes
        self.free_tier_paused = False
        """When True, creating a generation answers ``503 free_tier_paused``."""
        self.requests: list[RecordedRequest] = []
        """Every request received, in order."""
        self.objects: dict[str, StoredObject] = {}
        """Uploaded files, by storage key."""
        self.generations: dict[str, FakeGeneration] = {}
        """Every generation, by id."""
        self.webhook_deliveries: list[WebhookDelivery] = []
        """Every webhook POST made (failures included, never raised)."""
        self.templates: list[dict[str, Any]] = [dict(t) for t in TEMPLATES]
        self.characters: list[dict[str, Any]] = []
        self.assets: list[dict[str, Any]] = seed_assets()
        self.video = _fake_video(video_bytes)
        self._host = host
        self._port = port
        self._faults: list[Fault] = []
        self._uploads: dict[str, dict[str, Any]] = {}
        self._secret = secrets.token_bytes(16)
        self._offset = 0.0
        self._wall0 = time.time() - time.monotonic()
        self._runner: web.AppRunner | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._webhook_session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._webhooks_in_flight = 0
        self.root = ""
        """``http://host:port`` once started."""

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API root to give ``PrismClient(base_url=...)``; ends in ``/api``."""
        if not self.root:
            raise RuntimeError("the fake server is not started")
        return f"{self.root}/api"

    async def start(self) -> None:
        """Start serving on loopback (and delivering webhooks)."""
        app = web.Application(middlewares=[self._record, self._inject], client_max_size=256 * MB)
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, backlog=1024)
        await site.start()
        port = self._runner.addresses[0][1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.root = f"http://{host}:{port}"
        self._wake = asyncio.Event()
        self._webhook_task = asyncio.create_task(self._deliver_webhooks())

    async def close(self) -> None:
        """Stop serving; pending webhooks are dropped."""
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
            self._webhook_task = None
        if self._webhook_session is not None:
            await self._webhook_session.close()
            self._webhook_session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakePrismServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled."""
        if self._runner is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    # -- the clock and control ---------------------------------------------------------------

    def now(self) -> float:
        """The server clock: monotonic seconds plus everything :meth:`advance` added."""
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward: generations progress and URLs age without sleeping."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds
        self._wake.set()

    def fail_generation(self, generation_id: str, reason: str = "Generation failed") -> None:
        """Make a generation fail now, with ``reason`` as its ``error``."""
        generation = self.generations[generation_id]
        generation.forced, generation.forced_at = "failed", self.now()
        generation.fail_reason = reason
        self._wake.set()

    def complete_generation(self, generation_id: str) -> None:
        """Make a generation complete now."""
        generation = self.generations[generation_id]
        generation.forced, generation.forced_at = "completed", self.now()
        generation.fail_reason = None
        self._wake.set()

    def inject(
        self,
        method: str,
        path: str,
        *,
        status: int | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        drop: bool = False,
        times: int = 1,
        processed: bool = False,
        truncate: int | None = None,
        raw: bytes | None = None,
    ) -> Fault:
        """Script the next ``times`` requests matching ``method`` and ``path`` (a glob).

        By default the server never acts on them: they answer ``status`` with ``body`` (JSON
        unless bytes/str) and ``headers``, or have their connection closed without an answer
        (``drop=True``), or get exactly the bytes ``raw`` (say, a proxy's garbage status line)
        and a closed connection. ``delay`` seconds pass before any answer; with nothing else
        given the request is then answered normally.

        ``processed=True`` handles the request for real first (a create queues generations and
        charges credits) and only then replaces, drops or garbles its answer: the server
        acted, the answer was lost. ``truncate=n`` (which implies ``processed``) sends the
        answer's status line and headers, with its full Content-Length, but only the first
        ``n`` bytes of its body, then closes the connection (the client sees an incomplete
        payload); it cuts the ``status`` answer instead when one is given. ``drop``,
        ``truncate`` and ``raw`` exclude each other. Works on every route, API and storage.

        Note that aiohttp clients resend an idempotent request (GET, PUT) once by themselves
        when a kept-alive connection drops, so script ``times=2`` to make one GET fail for them.
        """
        fault = Fault(
            method=method.upper(),
            path=path,
            status=status,
            body=body,
            headers=dict(headers or {}),
            delay=delay,
            drop=drop,
            times=times,
            processed=processed,
            truncate=truncate,
            raw=raw,
        )
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Forget every scripted fault."""
        self._faults.clear()

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests matching ``method`` and ``path`` (a glob)."""
        method = method.upper()
        return [
            r for r in self.requests if r.method == method and fnmatch.fnmatchcase(r.path, path)
        ]

    async def drain_webhooks(self, timeout: float = 5.0) -> None:
        """Wait until every webhook that is due has been delivered (or has failed)."""
        async with asyncio.timeout(timeout):
            while self._webhooks_in_flight or any(
                self._webhook_due(g) for g in self.generations.values()
            ):
                self._wake.set()
                await asyncio.sleep(0.01)

    # -- middlewares -------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        payload: Any = None
        if request.content_type == "application/json" and request.can_read_body:
            try:
                payload = json.loads(await request.read())
            except ValueError:
                payload = None
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                json=payload,
                raw_path=request.raw_path,
            )
        )
        return await handler(request)

    @web.middleware
    async def _inject(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = next((f for f in self._faults if f.matches(request.method, request.path)), None)
        if fault is None:
            return await handler(request)
        fault.times -= 1
        if fault.times <= 0:
            self._faults.remove(fault)
        return await fault.apply(request, handler)

    # -- routes ------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        add = app.router.add_route
        add("POST", "/api/generations", self._api(self._create_generation))
        add("GET", "/api/generations/{id}", self._api(self._get_generation))
        add("POST", "/api/templates/{id}/generate", self._api(self._template_generate))
        add("GET", "/api/templates", self._api(self._list_templates))
        add("GET", "/api/templates/{id}", self._api(self._get_template))
        add("POST", "/api/s3/presign-upload", self._api(self._presign))
        add("POST", "/api/characters", self._api(self._create_character))
        add("GET", "/api/characters", self._api(self._list_characters))
        add("GET", "/api/assets/search", self._api(self._search_assets))
        add("PUT", "/storage/uploads/{token}", self._put_object)
        add("GET", "/storage/videos/{id}", self._get_video)
        add("GET", "/share/{id}", self._share_page)

    def _api(self, handler: Handler) -> Handler:
        """Wrap an API handler with the documented auth and scope checks."""

        async def authorized(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            if not hmac.compare_digest(header.encode(), f"Bearer {self.api_key}".encode()):
                return _error(401, "unauthorized", "Missing or invalid API key")
            if "templates:read" not in self.scopes:
                return _error(403, "forbidden", "API key lacks templates:read scope")
            return await handler(request)

        return authorized

    async def _json_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "validation_error", "Invalid JSON request body")
        if not isinstance(body, dict):
            return _error(400, "validation_error", "Invalid JSON request body")
        return body

    # -- generations -------------------------------------------------------------------------

    def _duration(self) -> float:
        seconds = self.generation_seconds
        return float(seconds() if callable(seconds) else seconds)

    def _known_key(self, key: str) -> bool:
        return (
            key in self.objects
            or any(a["asset_s3_key"] == key for a in self.assets)
            or self._completed_history_key(key)
        )

    def _completed_history_key(self, key: str) -> bool:
        """Whether ``key`` is the history asset key of a completed generation."""
        generation_id = key.removeprefix(_HISTORY_PREFIX).removesuffix(".mp4")
        generation = self.generations.get(generation_id)
        return (
            generation is not None
            and key == f"{_HISTORY_PREFIX}{generation_id}.mp4"
            and generation.status_at(self.now()) == "completed"
        )

    def _new_generation(self, **kwargs: Any) -> FakeGeneration:
        generation = FakeGeneration(
            id=f"gen_{secrets.token_hex(6)}",
            created=self.now(),
            duration=self._duration(),
            **kwargs,
        )
        self.generations[generation.id] = generation
        self._wake.set()
        return generation

    async def _create_generation(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        problem = self._check_create(body)
        if problem is not None:
            return problem
        model = body["modelName"]
        if model not in MODEL_PRICES:
            return _error(400, "pricing_error", f"No pricing found for model {model!r}")
        if self.free_tier_paused:
            return _error(503, "free_tier_paused", "Free tier generation is temporarily paused")
        count = body.get("count") or 1
        cost = MODEL_PRICES[model] * count
        if self.credits < cost:
            return _error(402, "insufficient_credits", "Not enough credits")
        self.credits -= cost
        fail = self.fail_marker and self.fail_marker in body["prompt"]
        generations = [
            self._new_generation(
                prompt=body["prompt"],
                model_name=model,
                template_id=None,
                fail_reason="Generation failed" if fail else None,
            )
            for _ in range(count)
        ]
        variant = "image-to-video" if body.get("startFrameKey") else "text-to-video"
        return web.json_response(
            {
                "data": {
                    "generations": [
                        {
                            "id": g.id,
                            "asset_id": f"asset_{g.id.removeprefix('gen_')}",
                            "request_id": f"fal_request_{g.id.removeprefix('gen_')}",
                            "status": "queued",
                        }
                        for g in generations
                    ],
                    "endpoint_id": f"fal-ai/{model}",
                    "variant": variant,
                    "metadata": {
                        "model_name": model,
                        "selected_model_name": model,
                        "credits_charged": cost,
                        "num_generations": count,
                    },
                }
            }
        )

    def _check_create(self, body: dict[str, Any]) -> web.Response | None:
        def invalid(message: str) -> web.Response:
            return _error(400, "validation_error", message)

        def optional(name: str, problem: Callable[[Any], str | None]) -> str | None:
            return None if body.get(name) is None else problem(body[name])

        count = body.get("count")
        if isinstance(count, float) and count.is_integer():
            body["count"] = int(count)  # JSON has one number type: 2.0 is 2
        answer = _invalid(
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
        if answer is not None:
            return answer
        if "hasAudio" in body and not isinstance(body["hasAudio"], bool):
            return invalid("hasAudio must be a boolean")
        for name in ("resolution", "templateId"):
            if name in body and not isinstance(body[name], str):
                return invalid(f"{name} must be a string")
        keys: list[tuple[str, Any]] = [(name, body[name]) for name in _KEY_FIELDS if name in body]
        for name in _KEY_LIST_FIELDS:
            if name in body:
                if not isinstance(body[name], list):
                    return invalid(f"{name} must be an array of S3 keys")
                keys.extend((name, key) for key in body[name])
        for name, key in keys:
            if not isinstance(key, str) or not self._known_key(key):
                return invalid(f"{name}: unknown S3 key {key!r}; upload the file first")
        return None

    def _generation_json(self, generation: FakeGeneration) -> dict[str, Any]:
        now = self.now()
        status = generation.status_at(now)
        completed = status == "completed"
        return {
            "id": generation.id,
            "status": status,
            "template_id": generation.template_id,
            "video_url": self._video_url(generation.id) if completed else None,
            "share_url": f"{self.root}/share/{generation.id}" if completed else None,
            "created_at": _iso(self._wall(generation.created)),
            "completed_at": _iso(self._wall(generation.finished_at())) if completed else None,
            "error": generation.fail_reason if status == "failed" else None,
        }

    async def _get_generation(self, request: web.Request) -> web.Response:
        generation = self.generations.get(request.match_info["id"])
        if generation is None:
            return _error(404, "not_found", "Generation not found")
        return web.json_response(self._generation_json(generation))

    # -- templates ---------------------------------------------------------------------------

    def _template(self, template_id: str) -> dict[str, Any] | None:
        return next((t for t in self.templates if t["id"] == template_id), None)

    async def _template_generate(self, request: web.Request) -> web.Response:
        template_id = request.match_info["id"]
        template = self._template(template_id)
        if template is None:
            return _error(404, "not_found", "No template exists with the given ID")
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        variables = body.get("variables")
        if not isinstance(variables, dict):
            return _error(400, "validation_error", "variables is required")
        if template_id in INVALID_TEMPLATES:
            return _error(422, "invalid_template", "Template has invalid configuration")
        webhook_url = body.get("webhook_url")
        if webhook_url is not None and (problem := _rules.http_url_problem(webhook_url)):
            return _error(400, "validation_error", f"webhook_url: {problem}")
        characters = body.get("character_variables") or {}
        if not isinstance(characters, dict):
            return _error(400, "validation_error", "character_variables must be an object")
        known = {c["id"] for c in self.characters}
        for key, character_id in characters.items():
            if character_id not in known:
                return _error(400, "validation_error", f"Unknown character for {key!r}")
        for variable in template.get("input_variables", []):
            key = variable["key"]
            value = characters.get(key, variables.get(key))
            if value is None and variable.get("default_value") is None and variable["required"]:
                return _error(400, "validation_error", f"Missing required variable: {key}")
            if value is not None and not isinstance(value, str):
                return _error(400, "validation_error", f"Variable {key} must be a string")
        if self.credits < TEMPLATE_PRICE:
            return _error(402, "insufficient_credits", "Not enough credits for generation")
        self.credits -= TEMPLATE_PRICE
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
        return web.json_response(
            {
                "generations": [{"generation_id": generation.id, "status": "generating"}],
                "template_id": template_id,
                "credits_charged": TEMPLATE_PRICE,
                "latency_estimate_sec": {"typical": typical, "busy": typical * 2},
            }
        )

    async def _list_templates(self, request: web.Request) -> web.Response:
        q = request.query.get("q")
        paging = _page_params(
            request.query, _rules.TEMPLATE_PAGING, q=None if q is None else _rules.query_problem(q)
        )
        if isinstance(paging, web.Response):
            return paging
        category = request.query.get("category")
        items = [
            t
            for t in self.templates
            if (category is None or t.get("category") == category)
            and (q is None or q.lower() in f"{t['title']} {t.get('description', '')}".lower())
        ]
        return web.json_response(_page(items, *paging))

    async def _get_template(self, request: web.Request) -> web.Response:
        template = self._template(request.match_info["id"])
        if template is None:
            return _error(404, "not_found", "No template exists with the given ID")
        return web.json_response({"data": template})

    # -- uploads and storage -----------------------------------------------------------------

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "|".join(parts).encode(), hashlib.sha256).hexdigest()

    async def _presign(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        kind, content_type = body.get("kind"), body.get("contentType")
        invalid = _invalid(
            {
                "kind": _rules.choice_problem(kind, _rules.UPLOAD_KINDS),
                "contentType": _rules.content_type_problem(content_type),
            }
        )
        if invalid is not None:
            return invalid
        media = str(_rules.media_kind(content_type))
        file_name = body.get("fileName")
        extension = mimetypes.guess_extension(str(content_type)) or ""
        key = (
            f"users/user_fake/user-uploads/batch_{secrets.token_hex(4)}/"
            f"file_{secrets.token_hex(4)}{extension}"
        )
        token = secrets.token_urlsafe(12)
        expires = self.now() + self.url_ttl
        self._uploads[token] = {
            "key": key,
            "content_type": content_type,
            "max_bytes": UPLOAD_LIMITS[media],
            "expires": expires,
            "file_name": file_name,
        }
        signature = self._sign(token, str(content_type), f"{expires:.3f}")
        return web.json_response(
            {
                "s3_key": key,
                "upload_url": (
                    f"{self.root}/storage/uploads/{token}"
                    f"?X-Amz-Expires={expires:.3f}&X-Amz-Signature={signature}"
                ),
                "content_type": content_type,
                "max_bytes": UPLOAD_LIMITS[media],
            }
        )

    async def _put_object(self, request: web.Request) -> web.Response:
        upload = self._uploads.get(request.match_info["token"])
        if upload is None:
            return _s3_error(404, "NoSuchUpload", "The upload URL is unknown")
        if "Authorization" in request.headers:
            return _s3_error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                "Signature query string parameter or the Authorization header should be specified",
            )
        expected = self._sign(
            request.match_info["token"],
            upload["content_type"],
            request.query.get("X-Amz-Expires", ""),
        )
        if not hmac.compare_digest(expected, request.query.get("X-Amz-Signature", "")):
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
            )
        if self.now() > upload["expires"]:
            return _s3_error(403, "AccessDenied", "Request has expired")
        if request.headers.get("Content-Type") != upload["content_type"]:
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The Content-Type does not match the one the URL was signed with",
            )
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            return _s3_error(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
            )
        if request.content_length is None:
            return _s3_error(
                411, "MissingContentLength", "You must provide the Content-Length HTTP header."
            )
        if request.content_length > upload["max_bytes"]:
            return _s3_error(
                400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
            )
        data = await request.read()
        self.objects[upload["key"]] = StoredObject(content_type=upload["content_type"], data=data)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return web.Response(status=200, headers={"ETag": f'"{etag}"'})

    def _video_url(self, generation_id: str) -> str:
        expires = f"{self.now() + self.url_ttl:.3f}"
        signature = self._sign("video", generation_id, expires)
        return (
            f"{self.root}/storage/videos/{generation_id}.mp4"
            f"?X-Amz-Expires={expires}&X-Amz-Signature={signature}"
        )

    async def _get_video(self, request: web.Request) -> web.StreamResponse:
        generation_id = request.match_info["id"].removesuffix(".mp4")
        expires = request.query.get("X-Amz-Expires", "")
        expected = self._sign("video", generation_id, expires)
        if not hmac.compare_digest(expected, request.query.get("X-Amz-Signature", "")):
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
            )
        if self.now() > float(expires):
            return _s3_error(403, "AccessDenied", "Request has expired")
        if "Authorization" in request.headers:
            return _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed")
        data = self.video
        headers = {"Accept-Ranges": "bytes", "Content-Type": "video/mp4"}
        if request.http_range.start is not None or request.http_range.stop is not None:
            window = request.http_range
            start, stop, _ = window.indices(len(data))
            if start >= len(data) or start >= stop:
                return _s3_error(416, "InvalidRange", "The requested range is not satisfiable")
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            return web.Response(status=206, body=data[start:stop], headers=headers)
        return web.Response(body=data, headers=headers)

    async def _share_page(self, request: web.Request) -> web.Response:
        generation_id = request.match_info["id"]
        if generation_id not in self.generations:
            return web.Response(status=404, text="Not found")
        video = self._video_url(generation_id)
        return web.Response(
            text=f"<html><body><video src='{video}'></video></body></html>",
            content_type="text/html",
        )

    # -- characters and assets ---------------------------------------------------------------

    async def _create_character(self, request: web.Request) -> web.Response:
        problems: dict[str, str | None] = {}
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            name, description = form.get("name"), form.get("description")
            files = [*form.getall("images", []), *form.getall("images[]", [])]
            images = sum(1 for item in files if hasattr(item, "file"))
        else:
            body = await self._json_body(request)
            if isinstance(body, web.Response):
                return body
            name, description = body.get("name"), body.get("description")
            urls = body.get("images")
            if not isinstance(urls, list):
                return _error(400, "validation_error", "images: must be a list of image URLs")
            problems = {f"images[{i}]": _rules.http_url_problem(u) for i, u in enumerate(urls)}
            images = len(urls)
        problems["name"] = _rules.text_problem(name, max_length=_rules.CHARACTER_NAME_MAX)
        problems["description"] = _rules.character_description_problem(description)
        problems["images"] = _rules.character_images_problem(images)
        invalid = _invalid(problems)
        if invalid is not None:
            return invalid
        character = {
            "id": str(uuid.uuid4()),
            "name": name,
            "description": description,
            "created_at": int(self._wall(self.now()) * 1000),
        }
        self.characters.insert(0, character)
        return web.json_response({"data": character}, status=201)

    async def _list_characters(self, request: web.Request) -> web.Response:
        q = request.query.get("q")
        paging = _page_params(
            request.query, _rules.CHARACTER_PAGING, q=None if q is None else _rules.query_problem(q)
        )
        if isinstance(paging, web.Response):
            return paging
        items = [
            c
            for c in self.characters
            if q is None or q.lower() in f"{c['name']} {c.get('description') or ''}".lower()
        ]
        return web.json_response(_page(items, *paging))

    def _history_assets(self) -> list[dict[str, Any]]:
        now = self.now()
        items: list[dict[str, Any]] = []
        for generation in self.generations.values():
            if generation.status_at(now) != "completed":
                continue
            finished = int(self._wall(generation.finished_at()) * 1000)
            key = f"{_HISTORY_PREFIX}{generation.id}.mp4"
            items.append(
                {
                    "id": f"res_{generation.id}",
                    "asset_id": f"asset_{generation.id.removeprefix('gen_')}",
                    "asset_s3_key": key,
                    "asset_url": self._video_url(generation.id),
                    "asset_type": "video",
                    "prompt": generation.prompt,
                    "model_name": generation.model_name,
                    "published_at": None,
                    "created_at": finished,
                    "metadata": {},
                    "source": "history",
                }
            )
        return items

    async def _search_assets(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        kind = request.query.get("type", "all")
        source = request.query.get("source", "all")
        paging = _page_params(
            request.query,
            _rules.ASSET_PAGING,
            q=_rules.query_problem(request.query.get("q")),
            type=_rules.choice_problem(kind, _rules.ASSET_TYPES),
            source=_rules.choice_problem(source, _rules.ASSET_SOURCES),
        )
        if isinstance(paging, web.Response):
            return paging
        items = [
            a
            for a in [*self.assets, *self._history_assets()]
            if q.lower() in (a.get("prompt") or "").lower()
            and kind in ("all", a["asset_type"])
            and source in ("all", a["source"])
        ]
        return web.json_response(_page(items, *paging))

    # -- webhooks ----------------------------------------------------------------------------

    def _wall(self, clock: float) -> float:
        """Wall-clock time of a server-clock moment (advanced time included)."""
        return self._wall0 + clock

    def _webhook_due(self, generation: FakeGeneration) -> bool:
        return (
            generation.webhook_url is not None
            and not generation.webhook_sent
            and generation.status_at(self.now()) in ("completed", "failed")
        )

    async def _deliver_webhooks(self) -> None:
        while True:
            self._wake.clear()
            for generation in list(self.generations.values()):
                if self._webhook_due(generation):
                    generation.webhook_sent = True
                    self._webhooks_in_flight += 1
                    try:
                        await self._post_webhook(generation)
                    finally:
                        self._webhooks_in_flight -= 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self._wake.wait()

    async def _post_webhook(self, generation: FakeGeneration) -> None:
        status = generation.status_at(self.now())
        payload = {
            "generation_id": generation.id,
            "status": status,
            "template_id": generation.template_id,
            "video_url": self._video_url(generation.id) if status == "completed" else None,
            "error": generation.fail_reason if status == "failed" else None,
        }
        url = str(generation.webhook_url)
        if self._webhook_session is None:
            self._webhook_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self._webhook_session.post(url, json=payload) as response:
                await response.read()
                delivery = WebhookDelivery(url=url, payload=payload, status=response.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            delivery = WebhookDelivery(
                url=url, payload=payload, status=None, error=str(exc) or type(exc).__name__
            )
        self.webhook_deliveries.append(delivery)
