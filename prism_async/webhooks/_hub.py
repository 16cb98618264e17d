"""WebhookHub: the route that receives webhooks, and the waits and listeners they wake."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import signal
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Protocol, TypeVar, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from ._bus import WebhookBus
from ._event import InvalidWebhookError, WebhookEvent, WebhookReply, parse_webhook
from ._link import BusLink
from ._signals import CloseOnSignal

__all__ = ["KEY_PARAM", "TOKEN_PARAM", "WebhookHub"]


logger = logging.getLogger("prism_async")

KeyListener = Callable[[str, "WebhookEvent"], Awaitable[None]]


class Hint(Protocol):
    """What a wait subscribes with: told to poll now (an :class:`asyncio.Event` will do)."""

    def set(self) -> None:
        """Poll now."""


H = TypeVar("H", bound=Hint)
"""Called with a ledger key and the webhook event that names it."""

KEY_PARAM = "prism_key"
"""The query parameter that carries a ledger key in a template's webhook URL."""

TOKEN_PARAM = "prism_token"
"""The query parameter that carries the hub's token in the webhook URL."""


class WebhookHub:
    """Receives Prism webhooks and wakes the waits they are about.

    Args:
        secret: the token required in the webhook URL; a random one by default. Pass your own
            to keep URLs valid across restarts (keep it secret).
        max_body: largest accepted body, in bytes (larger: 413).
        fallback_interval: how often a wait on a generation submitted with this hub's URL
            still polls, in case the webhook never comes.
        keep: how many recent events for ids nobody waits on are kept (oldest dropped first),
            so a webhook that arrives before its wait starts is not lost.
        keep_seconds: how long such events are kept.
        bus: a :class:`~prism_async.webhooks.WebhookBus` (e.g. ``RedisWebhookBus(url)``) when
            several processes serve the app: every verified event is published on it, and the
            hub of every process wakes its own waits. Give every process the same ``secret``.
            While the bus is down, events are kept (in memory) and published once it is back,
            and waits poll at their normal cadence; one WARNING per outage says so.

    Close it (:meth:`aclose`) when the app's shutdown *starts* (aiohttp's ``on_shutdown``,
    :meth:`close_on_signal` under uvicorn): waits in flight then stop polling slowly, and a
    wait cancelled from then on (a server's graceful-shutdown timeout) logs its generation id
    at WARNING.
    """

    def __init__(
        self,
        secret: str | None = None,
        *,
        max_body: int = 64 * 1024,
        fallback_interval: float = 60.0,
        keep: int = 10_000,
        keep_seconds: float = 900.0,
        bus: WebhookBus | None = None,
    ) -> None:
        if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
            raise ValueError("secret must be a string of at least 16 characters")
        if max_body < 1 or fallback_interval <= 0 or keep < 0 or keep_seconds < 0:
            raise ValueError("max_body, fallback_interval, keep and keep_seconds must be positive")
        self._secret = (secret or secrets.token_urlsafe(32)).encode()
        self._minted = secret is None  # (then a hub with a bus warns once about a wrong token)
        self.max_body = max_body
        self.fallback_interval = float(fallback_interval)
        self._keep = keep
        self._keep_seconds = keep_seconds
        self._recent: OrderedDict[str, tuple[float, WebhookEvent]] = OrderedDict()
        self._waiters: dict[str, set[Hint]] = {}
        self._expected: OrderedDict[str, None] = OrderedDict()
        self._subscribers: set[asyncio.Queue[WebhookEvent]] = set()
        self.bus = bus
        self.closed = False
        self._name = secrets.token_hex(6)
        self._link = (
            BusLink(
                bus,
                origin=lambda: self._origin,
                dispatch=self.dispatch,
                went_down=self._wake_relying,
                max_age=keep_seconds,
            )
            if bus is not None
            else None
        )
        self._key_listeners: list[KeyListener] = []

    def __repr__(self) -> str:
        return f"<WebhookHub waiting={len(self._waiters)} recent={len(self._recent)}>"

    # -- the URL -----------------------------------------------------------------------------

    def url_for(self, base_url: str) -> str:
        """The URL to pass as ``webhook_url``: ``base_url`` plus this hub's token."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an absolute http(s) URL; got {base_url!r}")
        query = [
            (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != TOKEN_PARAM
        ]
        query.append((TOKEN_PARAM, self._secret.decode()))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def url_with_key(self, url: str, key: str) -> str:
        """``url`` (one of this hub's) carrying a ledger key, so its webhook names the key."""
        parts = urlsplit(url)
        query = [
            (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != KEY_PARAM
        ]
        query.append((KEY_PARAM, key))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def owns(self, url: str) -> bool:
        """Whether ``url`` carries this hub's token (it was made by :meth:`url_for`)."""
        token = dict(parse_qsl(urlsplit(url).query)).get(TOKEN_PARAM, "")
        return hmac.compare_digest(token.encode(), self._secret)

    # -- receiving ---------------------------------------------------------------------------

    async def handle(self, body: bytes | str, query: Mapping[str, str]) -> WebhookReply:
        """The framework-agnostic receiver: check, parse and dispatch one delivery.

        Args:
            body: the raw request body.
            query: the request's query parameters (they carry the token).

        Returns:
            The status and text to answer with (200 when accepted).
        """
        if not self._accepts(query.get(TOKEN_PARAM, "")):
            return WebhookReply(401, "missing or wrong token")
        if len(body) > self.max_body:
            return WebhookReply(413, "body too large")
        try:
            event = parse_webhook(body)
        except InvalidWebhookError as exc:
            return WebhookReply(400, str(exc))
        key = query.get(KEY_PARAM)
        if isinstance(key, str) and key:
            for listener in list(self._key_listeners):
                await listener(key, event)  # e.g. a ledger settling the key, before the 200
        self.dispatch(event)
        if self._link is not None:  # (even while closing: other processes' waits want it)
            self._listen()
            await self._link.publish(event)  # kept and published later if the bus is down
        return WebhookReply(200, "ok")

    def _accepts(self, token: object) -> bool:
        if isinstance(token, str) and hmac.compare_digest(token.encode(), self._secret):
            return True
        if self.bus is not None and self._minted:
            self._minted = False
            logger.warning("webhook hub: wrong token; give every process the same secret=")
        return False

    # -- many processes and closing ----------------------------------------------------------

    @property
    def _origin(self) -> str:  # this hub in this process (a hub made before a fork: per child)
        return f"{os.getpid()}-{self._name}"

    def _listen(self) -> None:
        """Read the bus (once a loop runs: the hub may be made at import time)."""
        if self._link is not None and not self.closed and not self._link.shut:
            self._link.listen()

    @property
    def reliable(self) -> bool:
        """Whether waits can count on this hub's webhooks now: it is open, and its bus (if any)
        publishes and reads. While not, waits that expect a webhook poll at their normal
        cadence instead of the slow ``fallback_interval``."""
        return not self.closed and (self._link is None or self._link.healthy)

    def _wake_relying(self) -> None:
        """The bus went down: waits that count on a webhook poll now, then at their normal
        cadence (as long as the hub is not :attr:`reliable`)."""
        for generation_id, waiters in self._waiters.items():
            if generation_id in self._expected:
                for waiter in waiters:
                    waiter.set()

    async def start(self) -> None:
        """(Re)open the hub and read the bus now (else from the first wait or webhook)."""
        self.closed = False
        if self._link is not None:
            self._link.open()
        self._listen()

    def _stop_waiting(self) -> None:
        self.closed = True
        self._expected.clear()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()  # poll now, then at the normal cadence

    async def aclose(self) -> None:
        """Waits polling slowly for a webhook poll at once, then at their normal cadence; the
        bus is no longer read, events kept while it was down get one last try, and webhooks
        are still accepted (not published). Idempotent; :meth:`start` reopens.
        """
        self._stop_waiting()
        if self._link is not None:
            await self._link.aclose()

    async def __aenter__(self) -> WebhookHub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def close_on_signal(self, *signums: int) -> None:
        """Close the hub as soon as the process receives one of ``signums`` (SIGTERM and
        SIGINT by default), then run the handler installed before (the server's).

        uvicorn ends the app's lifespan only after the requests in flight: call this in the
        lifespan so that their waits stop polling slowly while it drains. Outside the main
        thread it does nothing; :meth:`aclose` still releases the bus at the lifespan's end.
        """
        CloseOnSignal.install(self._stop_waiting, signums or (signal.SIGTERM, signal.SIGINT))

    async def aiohttp_handler(self, request: web.Request) -> web.Response:
        """An aiohttp.web handler: ``app.router.add_post("/hook", hub.aiohttp_handler)``."""
        if not self._accepts(request.query.get(TOKEN_PARAM, "")):
            return web.Response(status=401, text="missing or wrong token")
        if request.content_length is not None and request.content_length > self.max_body:
            return web.Response(status=413, text="body too large")
        body = await request.content.read(self.max_body + 1)
        reply = await self.handle(body, request.query)
        return web.Response(status=reply.status, text=reply.message)

    def listen_for_keys(self, listener: KeyListener) -> Callable[[], None]:
        """Call ``listener(key, event)`` for each verified webhook whose URL carries a ledger
        key (clients with a ledger do this); returns a function that stops it."""
        self._key_listeners.append(listener)
        return lambda: self._key_listeners.remove(listener)

    def dispatch(self, event: WebhookEvent) -> None:
        """Deliver an event to the waits and to :meth:`events` (``handle`` calls this)."""
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # a slow consumer loses the oldest event, not the newest
            queue.put_nowait(event)
        if not event.is_terminal:
            return
        waiters = self._waiters.get(event.generation_id)
        if waiters:
            for waiter in waiters:
                waiter.set()
            return
        self._remember(event)

    def _remember(self, event: WebhookEvent) -> None:
        now = time.monotonic()
        self._recent.pop(event.generation_id, None)
        self._recent[event.generation_id] = (now, event)
        while self._recent and (
            len(self._recent) > self._keep
            or next(iter(self._recent.values()))[0] < now - self._keep_seconds
        ):
            self._recent.popitem(last=False)

    async def events(self, *, max_queue: int = 10_000) -> AsyncIterator[WebhookEvent]:
        """Every event received from now on (as hints: confirm before acting on one)."""
        queue: asyncio.Queue[WebhookEvent] = asyncio.Queue(max_queue)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    # -- what waits use ----------------------------------------------------------------------

    def expect(self, generation_ids: Iterable[str]) -> None:
        """Note ids whose webhooks will come here (their waits then poll slowly)."""
        for generation_id in generation_ids:
            self._expected[generation_id] = None
        while len(self._expected) > max(self._keep, 1):
            self._expected.popitem(last=False)

    def expects(self, generation_id: str) -> bool:
        """Whether a webhook for ``generation_id`` was announced with :meth:`expect` (and the
        hub is still open)."""
        return not self.closed and generation_id in self._expected

    @overload
    def subscribe(self, generation_id: str) -> asyncio.Event: ...

    @overload
    def subscribe(self, generation_id: str, waiter: H) -> H: ...

    def subscribe(self, generation_id: str, waiter: Hint | None = None) -> Hint:
        """``waiter`` (a new :class:`asyncio.Event` when not given) is ``set()`` when a terminal
        webhook for the id arrives (or already had), and when the waits relying on webhooks
        must poll now (the bus went down)."""
        self._listen()
        if waiter is None:
            waiter = asyncio.Event()
        self._waiters.setdefault(generation_id, set()).add(waiter)
        if generation_id in self._recent:  # it came before the wait started
            waiter.set()
        return waiter

    def unsubscribe(self, generation_id: str, waiter: Hint) -> None:
        """Forget a waiter (the wait ended)."""
        waiters = self._waiters.get(generation_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[generation_id]
