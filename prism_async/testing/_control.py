"""The fake's control API, for tests that drive an app running in another process.

Like moto's server mode: the controls of :class:`FakePrismServer` over plain HTTP, under
``/_fake/`` (a prefix the Prism API never uses). Control requests need no API key, are not
recorded in the request log and are never faulted. Bodies and answers are JSON; a refusal
is ``{"error": code, "message": ...}`` with status 400 or 404.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from aiohttp import web

from ._faults import CONTROL_PREFIX, Fault, Traffic
from ._model import PrismBackend
from ._records import FakeAPIError, invalid, json_object
from ._webhooks import WebhookSender

__all__ = ["add_control_routes"]

_FAULT_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,),
    "path": (str,),
    "status": (int,),
    "body": (dict, list, str, int, float, bool),
    "headers": (dict,),
    "delay": (int, float),
    "drop": (bool,),
    "times": (int,),
    "processed": (bool,),
    "truncate": (int,),
    "raw": (str,),
}


def _plain(value: Any) -> Any:
    """A record as JSON: attrs classes as objects, bytes as (latin-1) text."""
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _data(value: Any, status: int = 200) -> web.Response:
    return web.json_response({"data": _plain(value)}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        return json_object(json.loads(await request.read() or b"{}"))
    except ValueError:
        raise invalid("Invalid JSON request body") from None


def _fault(spec: dict[str, Any]) -> Fault:
    """A fault from its JSON spec (the keyword arguments of ``FakePrismServer.inject``)."""
    for name, value in spec.items():
        kinds = _FAULT_TYPES.get(name)
        if kinds is None:
            raise invalid(f"{name}: not a fault option ({', '.join(_FAULT_TYPES)})")
        right = bool in kinds if isinstance(value, bool) else isinstance(value, kinds)
        if value is not None and not right:
            raise invalid(f"{name}: must be {' or '.join(k.__name__ for k in kinds)}")
    for name in ("method", "path"):
        if not spec.get(name):
            raise invalid(f"{name}: required")
    raw = spec.get("raw")
    try:
        return Fault(
            **{
                **spec,
                "method": spec["method"].upper(),
                "headers": {str(k): str(v) for k, v in (spec.get("headers") or {}).items()},
                "raw": None if raw is None else raw.encode("latin-1"),
            }
        )
    except (ValueError, UnicodeEncodeError) as exc:
        raise invalid(str(exc)) from None


def add_control_routes(
    app: web.Application, backend: PrismBackend, traffic: Traffic, webhooks: WebhookSender
) -> None:
    """Route the control API under :data:`CONTROL_PREFIX`."""

    def generation(request: web.Request) -> str:
        generation_id = request.match_info["id"]
        if generation_id not in backend.generations:
            raise FakeAPIError(404, "not_found", "Generation not found")
        return generation_id

    async def requests(request: web.Request) -> web.Response:
        query = request.query
        return _data(traffic.requests_to(query.get("method", "*"), query.get("path", "*")))

    async def clear_requests(request: web.Request) -> web.Response:
        traffic.requests.clear()
        return web.Response(status=204)

    async def faults(request: web.Request) -> web.Response:
        return _data(traffic.faults)

    async def inject(request: web.Request) -> web.Response:
        fault = _fault(await _body(request))
        traffic.faults.append(fault)
        return _data(fault, status=201)

    async def clear_faults(request: web.Request) -> web.Response:
        traffic.faults.clear()
        return web.Response(status=204)

    async def advance(request: web.Request) -> web.Response:
        seconds = (await _body(request)).get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise invalid("seconds: must be a number of seconds, 0 or more")
        backend.advance(seconds)
        return _data({"advanced": seconds})

    async def generations(request: web.Request) -> web.Response:
        return _data([backend.get_generation(g) for g in backend.generations])

    async def complete(request: web.Request) -> web.Response:
        generation_id = generation(request)
        backend.finish(generation_id, None)
        return _data(backend.get_generation(generation_id))

    async def fail(request: web.Request) -> web.Response:
        generation_id = generation(request)
        reason = (await _body(request)).get("reason", "Generation failed")
        if not isinstance(reason, str) or not reason:
            raise invalid("reason: must be a non-empty string")
        backend.finish(generation_id, reason)
        return _data(backend.get_generation(generation_id))

    def account_json() -> dict[str, Any]:
        return {
            "credits": backend.credits,
            "free_tier_paused": backend.free_tier_paused,
            "history_completed_only": backend.history_completed_only,
        }

    async def account(request: web.Request) -> web.Response:
        return _data(account_json())

    async def change_account(request: web.Request) -> web.Response:
        body = await _body(request)
        credits = body.get("credits")
        if credits is not None and (isinstance(credits, bool) or not isinstance(credits, int)):
            raise invalid("credits: must be an integer")
        flags = {name: body.get(name) for name in ("free_tier_paused", "history_completed_only")}
        for name, value in flags.items():
            if value is not None and not isinstance(value, bool):
                raise invalid(f"{name}: must be a boolean")
        if credits is not None:
            backend.credits = credits
        if flags["free_tier_paused"] is not None:
            backend.free_tier_paused = flags["free_tier_paused"]
        if flags["history_completed_only"] is not None:
            backend.history_completed_only = flags["history_completed_only"]
        return _data(account_json())

    async def prices(request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                backend.prices.update(await _body(request))
            except ValueError as exc:
                raise invalid(str(exc)) from None
        return _data(attrs.asdict(backend.prices))

    async def deliveries(request: web.Request) -> web.Response:
        return _data(webhooks.deliveries)

    add = app.router.add_route
    root = CONTROL_PREFIX
    add("GET", f"{root}prices", prices)
    add("POST", f"{root}prices", prices)
    add("GET", f"{root}requests", requests)
    add("DELETE", f"{root}requests", clear_requests)
    add("GET", f"{root}faults", faults)
    add("POST", f"{root}faults", inject)
    add("DELETE", f"{root}faults", clear_faults)
    add("POST", f"{root}advance", advance)
    add("GET", f"{root}generations", generations)
    add("POST", f"{root}generations/{{id}}/complete", complete)
    add("POST", f"{root}generations/{{id}}/fail", fail)
    add("GET", f"{root}account", account)
    add("PATCH", f"{root}account", change_account)
    add("GET", f"{root}webhooks", deliveries)
