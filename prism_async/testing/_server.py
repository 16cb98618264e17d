"""FakePrismServer: the whole documented Prism API, in-process on loopback (aiohttp.web).

The server only assembles the parts, the way moto splits a service:

* :mod:`._model` and :mod:`._storage`: the account's state, clock and rules (no HTTP);
* :mod:`._handlers` and :mod:`._routes`: requests into model calls, results into answers;
* :mod:`._faults`: the request log and scripted faults; :mod:`._webhooks`: webhook delivery;
* :mod:`._control`: the same controls over HTTP, under ``/_fake/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, cast, overload

from aiohttp import web

from .._rules import MB
from ._control import add_control_routes
from ._faults import Fault, Traffic
from ._handlers import ApiHandlers, errors
from ._model import PrismBackend
from ._prices import PriceTable
from ._records import (
    FakeGeneration,
    RecordedRequest,
    StoredObject,
    WebhookDelivery,
)
from ._routes import add_routes
from ._video import fake_video
from ._webhooks import WebhookSender

__all__ = [
    "FakeGeneration",
    "FakePrismServer",
    "RecordedRequest",
    "StoredObject",
    "WebhookDelivery",
]

T = TypeVar("T")


class _Kept(Generic[T]):
    """A public attribute of the server that one of its parts keeps (read and write)."""

    def __init__(self, part: str, doc: str) -> None:
        self.part = part
        self.name = ""
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Kept[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object, owner: type | None = None) -> T | _Kept[T]:
        if obj is None:
            return self
        return cast(T, getattr(getattr(obj, self.part), self.name))

    def __set__(self, obj: object, value: T) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class FakePrismServer:
    """The Prism Videos API on loopback, for tests, demos and local development.

    ``async with FakePrismServer() as server:`` starts it; point a client at
    ``server.base_url`` with ``server.api_key``. Generations move ``queued`` ->
    ``generating`` -> ``completed`` (or ``failed``) on the server's clock: real time plus
    whatever :meth:`advance` added, so tests need not sleep. An app in another process is
    driven through the control API under ``/_fake/`` (see the README).

    Args:
        api_key: the only key accepted (``Authorization: Bearer <key>``).
        credits: starting balance; each video costs its model's price.
        generation_seconds: seconds a video takes, or a callable returning them.
        host: interface to bind (keep it loopback).
        port: port to bind; 0 picks a free one.
        url_ttl: seconds a presigned video or upload URL stays valid.
        video_bytes: size of each video: a real, playable MP4 clip padded with a ``free`` box
            (never shorter than the clip itself, about 4.5 KB).
        fail_marker: a prompt containing this text makes its generation fail when it finishes.
        scopes: the key's scopes; without ``templates:read`` every endpoint answers 403.
        history_completed_only: assets search (``source=history``) lists every generation of
            the account by default, whatever its status (``asset_url`` None until completed);
            True lists a generation only once it has completed, as an API that shows only
            finished work would.
        prices: what videos cost (:class:`PriceTable`; the catalogue's prices by default).
    """

    api_key: _Kept[str] = _Kept("_backend", "The accepted API key.")
    credits: _Kept[int] = _Kept("_backend", "The current credit balance (tests may set it).")
    generation_seconds: _Kept[float | Callable[[], float]] = _Kept(
        "_backend", "Seconds a new video takes, or a callable returning them."
    )
    fail_marker: _Kept[str] = _Kept("_backend", "Prompts containing it make failing videos.")
    scopes: _Kept[tuple[str, ...]] = _Kept("_backend", "The key's scopes.")
    free_tier_paused: _Kept[bool] = _Kept(
        "_backend", "When True, creating a generation answers ``503 free_tier_paused``."
    )
    history_completed_only: _Kept[bool] = _Kept(
        "_backend", "When True, assets search lists only completed generations in history."
    )
    prices: _Kept[PriceTable] = _Kept("_backend", "What videos cost (tests may change it).")
    generations: _Kept[dict[str, FakeGeneration]] = _Kept("_backend", "Every generation, by id.")
    templates: _Kept[list[dict[str, Any]]] = _Kept("_backend", "The template catalogue.")
    characters: _Kept[list[dict[str, Any]]] = _Kept("_catalog", "Characters created.")
    assets: _Kept[list[dict[str, Any]]] = _Kept("_catalog", "Community assets (seed data).")
    url_ttl: _Kept[float] = _Kept("_storage", "Seconds a presigned URL stays valid.")
    objects: _Kept[dict[str, StoredObject]] = _Kept("_storage", "Uploaded files, by key.")
    video: _Kept[bytes] = _Kept("_storage", "The bytes of every video served.")
    requests: _Kept[list[RecordedRequest]] = _Kept("_traffic", "Every request, in order.")
    faults: _Kept[list[Fault]] = _Kept("_traffic", "The scripted faults still armed.")

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
        history_completed_only: bool = False,
        prices: PriceTable | None = None,
    ) -> None:
        self._backend = PrismBackend(
            api_key=api_key,
            credits=credits,
            generation_seconds=generation_seconds,
            url_ttl=url_ttl,
            video=fake_video(video_bytes),
            fail_marker=fail_marker,
            scopes=scopes,
            history_completed_only=history_completed_only,
            prices=prices,
        )
        self._storage = self._backend.storage
        self._catalog = self._backend.catalog
        self._traffic = Traffic()
        self._webhooks = WebhookSender(self._backend)
        self._backend.changed = self._webhooks.wake
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.root = ""
        """``http://host:port`` once started."""

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every webhook POST made (failures included, never raised)."""
        return self._webhooks.deliveries

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakePrismServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """The API root to give ``PrismClient(base_url=...)``; ends in ``/api``."""
        if not self.root:
            raise RuntimeError("the fake server is not started")
        return f"{self.root}/api"

    async def start(self) -> None:
        """Start serving on loopback (and delivering webhooks)."""
        app = web.Application(
            middlewares=[self._traffic.record, self._traffic.inject, errors],
            client_max_size=256 * MB,
        )
        add_routes(app, ApiHandlers(self._backend))
        add_control_routes(app, self._backend, self._traffic, self._webhooks)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, backlog=1024)
        await site.start()
        port = self._runner.addresses[0][1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.root = self._storage.root = f"http://{host}:{port}"
        self._webhooks.start()

    async def close(self) -> None:
        """Stop serving; pending webhooks are dropped."""
        await self._webhooks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled."""
        if self._runner is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    # -- the clock and outcomes --------------------------------------------------------------

    def now(self) -> float:
        """The server clock: monotonic seconds plus everything :meth:`advance` added."""
        return self._backend.now()

    def advance(self, seconds: float) -> None:
        """Move the clock forward: generations progress and URLs age without sleeping."""
        self._backend.advance(seconds)

    def fail_generation(self, generation_id: str, reason: str = "Generation failed") -> None:
        """Make a generation fail now, with ``reason`` as its ``error``."""
        self._backend.finish(generation_id, reason)

    def complete_generation(self, generation_id: str) -> None:
        """Make a generation complete now."""
        self._backend.finish(generation_id, None)

    # -- faults and the request log ----------------------------------------------------------

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
        self._traffic.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Forget every scripted fault."""
        self._traffic.faults.clear()

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests matching ``method`` (``*`` for any) and ``path`` (a glob)."""
        return self._traffic.requests_to(method, path)

    async def drain_webhooks(self, timeout: float = 5.0) -> None:
        """Wait until every webhook that is due has been delivered (or has failed)."""
        await self._webhooks.drain(timeout)
