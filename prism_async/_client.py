"""PrismClient: configuration, lifecycle, and the resource namespaces."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Literal, overload

import aiohttp

from ._errors import InvalidRequestError
from ._transport._http import HTTPClient
from ._transport._limiter import admission_for
from ._transport._retry import RetryPolicy
from ._transport._settings import check_api_key, check_base_url
from ._waiting._engine import Waiter
from .models.assets import Asset
from .models.generations import Generation
from .polling import AsCompleted, GenerationIds, OnUpdate, PollPolicy
from .resources import Assets, Characters, Generations, Templates, Uploads
from .resources.generations import status_fetch

if TYPE_CHECKING:
    from .ledger import Ledger, Submission
    from .ledger._durable import Durable
    from .ledger._prices import Quote
    from .ledger._spending import Spending
    from .models.requests import GenerationRequest, TemplateRequest
    from .runs import RunResult
    from .webhooks import WebhookHub

__all__ = ["DEFAULT_BASE_URL", "PrismClient"]

PAUSE_ON_402 = 60.0
"""Seconds a 402 pauses the paid POSTs sharing a ledger, by default."""

DEFAULT_BASE_URL = "https://www.prismvideos.com/api"


class PrismClient:
    """The asyncio client for the Prism Videos API.

    Use it as an async context manager (or call :meth:`aclose`)::

        async with PrismClient() as prism:
            batch = await prism.generations.create(prompt="A product demo", model_name="veo-3.1")

    Args:
        api_key: a ``prism_sk_...`` key; defaults to the ``PRISM_API_KEY`` environment
            variable. None at all is a ``ValueError``.
        base_url: API root; defaults to ``PRISM_BASE_URL``, then
            ``https://www.prismvideos.com/api``. Plain ``http://`` only for loopback hosts.
        timeout: seconds allowed for one API request (connecting gets at most 10 s of it, and
            waiting for a pooled connection at most half of it).
        retry: how failed requests are retried (paid POSTs are never sent twice).
        poll: default pacing of waits for generations (``PollPolicy()`` when not given; a
            template batch's latency estimate then tunes it).
        max_connections: the bound on API requests in flight (and, separately, on storage
            transfers in flight; an owned connection pool holds both).
        session: an ``aiohttp.ClientSession`` to borrow; it is used but never closed.
        webhooks: a :class:`~prism_async.webhooks.WebhookHub`: waits then finish as soon as it
            receives a terminal event for their id, confirmed by one status request.
        ledger: a :class:`~prism_async.ledger.Ledger` (e.g. ``SQLiteLedger("prism-ledger.db")``)
            for durable submissions: ``key=`` on ``generations.create`` and
            ``templates.generate``; waits and downloads record what they learn. The client
            closes it when it closes. A ``RedisLedger`` also shares 429 pauses with its fleet.
            With a ledger, every accepted submission records its charge (``ledger.spend``)
            and teaches the ledger its price (``quote``).
        budget: the name of a ledger budget (``ledger.set_budget``): every paid POST first
            reserves its quoted price there, atomically across every process sharing the
            ledger, and raises :class:`~prism_async.BudgetExceededError` (nothing sent) when
            it cannot. Needs a ledger.
        pause_on_402: seconds a 402 seen by this client pauses the paid POSTs of every
            process sharing its ledger (they raise ``InsufficientCreditsError`` unsent; then
            one probe goes through).

    The settings (``base_url``, ``timeout``, ``retry``, ``poll``, ``webhooks``) are read-only:
    make another client to change them.

    Attributes:
        generations: create generations, read status, download videos.
        templates: list templates and generate from them.
        uploads: presign and upload reference files.
        characters: create and list characters.
        assets: search assets.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008  (frozen, so a shared default is safe)
        poll: PollPolicy | None = None,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
        webhooks: WebhookHub | None = None,
        ledger: Ledger | None = None,
        budget: str | None = None,
        pause_on_402: float = PAUSE_ON_402,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("PRISM_API_KEY", "")
        key = check_api_key(api_key)
        url = check_base_url(base_url or os.environ.get("PRISM_BASE_URL") or DEFAULT_BASE_URL)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidRequestError("timeout", "must be a positive number of seconds")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise InvalidRequestError("max_connections", "must be an integer")
        if max_connections < 1:
            raise InvalidRequestError("max_connections", "must be at least 1")
        if not isinstance(retry, RetryPolicy):
            raise InvalidRequestError("retry", "must be a RetryPolicy")
        if poll is not None and not isinstance(poll, PollPolicy):
            raise InvalidRequestError("poll", "must be a PollPolicy")
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise InvalidRequestError("session", "must be an aiohttp.ClientSession")
        if session is not None and (session.auth is not None or "Authorization" in session.headers):
            # Its defaults would ride along to presigned storage URLs on other hosts.
            raise InvalidRequestError(
                "session", "must not carry default Authorization headers or auth"
            )

        if webhooks is not None:
            from .webhooks import WebhookHub

            if not isinstance(webhooks, WebhookHub):
                raise InvalidRequestError("webhooks", "must be a prism_async.webhooks.WebhookHub")
        self._durable: Durable | None = None
        if ledger is not None:
            from .ledger import Ledger

            if not isinstance(ledger, Ledger):
                raise InvalidRequestError("ledger", "must be a prism_async.ledger.Ledger")
            from .ledger._durable import Durable

            self._durable = Durable(ledger, timeout=float(timeout))
        self._spending: Spending | None = None
        if ledger is not None or budget is not None or pause_on_402 != PAUSE_ON_402:
            # (spend rules, or settings to check: without either the module is not loaded)
            from .ledger._spending import spending_for

            self._spending = spending_for(ledger, budget, pause_on_402, float(timeout))
        self._webhooks = webhooks
        self._base_url = str(url)
        self._timeout = float(timeout)
        self._retry = retry
        self._http = HTTPClient(
            api_key=key,
            base_url=url,
            timeout=self._timeout,
            retry=retry,
            max_connections=max_connections,
            session=session,
            admission=admission_for(ledger),  # a RedisLedger shares 429 pauses
        )
        durable = self._durable
        self._waiter = Waiter(
            status_fetch(self._http),
            poll if poll is not None else PollPolicy(),
            policy_given=poll is not None,
            hub=webhooks,
            on_done=durable.finished if durable is not None else None,
            ledger=durable.ledger if durable is not None else None,
            limit=max_connections,
        )
        spending = self._spending
        self.generations = Generations(self._http, durable, spending, self._waiter)
        self.templates = Templates(self._http, durable, spending, webhooks, self._waiter.births)
        self.uploads = Uploads(self._http)
        self.characters = Characters(self._http)
        self.assets = Assets(self._http)
        self._stop_listening = (
            webhooks.listen_for_keys(durable.webhook_arrived)
            if webhooks is not None and durable is not None
            else None
        )

    @property
    def base_url(self) -> str:
        """The API root every request goes to."""
        return self._base_url

    @property
    def timeout(self) -> float:
        """Seconds allowed for one API request."""
        return self._timeout

    @property
    def retry(self) -> RetryPolicy:
        """How failed requests are retried."""
        return self._retry

    @property
    def poll(self) -> PollPolicy:
        """The default pacing of waits."""
        return self._waiter.policy

    @property
    def webhooks(self) -> WebhookHub | None:
        """The hub whose webhooks wake waits early, or None."""
        return self._webhooks

    @property
    def ledger(self) -> Ledger | None:
        """The ledger of durable submissions, or None."""
        return self._durable.ledger if self._durable is not None else None

    async def quote(self, request: GenerationRequest | TemplateRequest) -> Quote:
        """What ``request`` would cost, from the prices the ledger learnt from what the API
        charged before (shared by every process using the ledger).

        Returns:
            ``Quote(credits, basis, samples)``: ``basis`` ``"seen"`` (this exact shape was
            charged: its latest charge), ``"estimated"`` (the per-video price of the same
            model and settings, times ``count``) or ``"unknown"`` (``credits`` None).

        Raises:
            InvalidRequestError: no ledger, or not a request object.
        """
        if self._spending is None:
            raise InvalidRequestError("ledger", "quote needs PrismClient(ledger=...)")
        from .ledger._spending import quote
        from .models.requests import GenerationRequest, TemplateRequest

        if not isinstance(request, GenerationRequest | TemplateRequest):
            raise InvalidRequestError("request", "must be a GenerationRequest or TemplateRequest")
        return await quote(self._spending.ledger, request)

    async def reconcile(self, key: str, *, wait: bool = False) -> Submission:
        """Settle an ambiguous prompt submission from the account's history, if it can be.

        Looks up ``GET /api/assets/search?source=history`` for generations with the same
        prompt and model, created around the time it was sent, and not claimed by another key.
        Ambiguous keys of the same request (fingerprint) are interchangeable: they share those
        generations, first sent first, and each that gets the whole ``count`` it asked for is
        ``reconciled`` in the same pass. A key whose reconciliation window (the ledger's
        ``reconcile_window``, 30 minutes by default) has closed with nothing found for it
        becomes ``rejected``: nothing was queued, and it may be sent again. Otherwise it stays
        ``ambiguous`` and its ``error`` says what was found and what happens next.

        Args:
            key: the ambiguous key.
            wait: keep reconciling, every ``reconcile_interval`` seconds (logged at WARNING
                with the key and its age), until the key is settled: ``reconciled``, or
                ``rejected`` once its window closed with nothing found. It comes back still
                ``ambiguous`` only when no rule can settle it (a template without a webhook,
                a partial find after the window): then a person must ``ledger.resolve`` it.

        Raises:
            InvalidRequestError: no ledger, or an unknown key.
            SubmissionInFlightError: a live process is sending it (not with ``wait``: then
                its answer settles it).
        """
        if self._durable is None:
            raise InvalidRequestError("ledger", "reconcile needs PrismClient(ledger=...)")

        def search(prompt: str) -> AsyncIterator[Asset]:
            return self.assets.iter_search(prompt, type="video", source="history", limit=60)

        if wait:
            return await self._durable.settle(key, search)
        return await self._durable.reconcile(key, search)

    def run(
        self,
        requests: Iterable[GenerationRequest | TemplateRequest],
        *,
        run_id: str,
        download_to: str | os.PathLike[str] | None = None,
        concurrency: int = 8,
        max_credits: float | None = None,
        timeout: float | None = None,
        poll: PollPolicy | None = None,
    ) -> AsyncGenerator[RunResult, None]:
        """Run a resumable bulk job: submit, wait, download; yield results as they finish.

        Needs a ledger. Each request is a durable submission keyed by its ``key``, or else by
        the request itself: ``f"{run_id}/{digest}"`` (the first 16 hex digits of its
        fingerprint; ``.{n}`` added for the n-th identical request), so inserting, deleting or
        reordering requests changes no other request's key. At most ``concurrency`` POSTs are
        in flight, and running the same code again resumes (accepted keys are not sent again,
        ambiguous ones are reconciled first, downloaded videos are not downloaded again; stale
        ``.part`` files of a killed run are removed). ``max_credits`` bounds what the run's
        keys are charged in all, reconciled and resolved keys included (no submission starts
        that could pass it at the highest price seen); a 402 stops further submissions, which
        come back ``skipped``. A request whose explicit ``key`` is recorded for another request
        comes back ``conflict``, and nothing is sent for it.

        Args:
            requests: :class:`GenerationRequest` and :class:`TemplateRequest` objects.
            run_id: names the run: the default keys derive from it.
            download_to: a folder for the videos (``<id>.mp4``); None to skip downloads.
            concurrency: submissions in flight at once.
            max_credits: the most credits the run may be charged, or None.
            timeout: seconds each wait may take (defaults to the poll policy's).
            poll: pacing of the waits (defaults to the client's).

        Yields:
            One :class:`RunResult` per request, in the order they finish. Leave early with
            ``contextlib.aclosing(prism.run(...))``: closing it stops the run's work.
        """
        from .runs import run

        return run(
            self,
            self._durable,
            requests,
            run_id=run_id,
            download_to=download_to,
            concurrency=concurrency,
            max_credits=max_credits,
            timeout=timeout,
            poll=poll,
        )

    @property
    def closed(self) -> bool:
        """Whether the client was closed. A closed client refuses work."""
        return self._http.closed

    async def __aenter__(self) -> PrismClient:
        self._http.session()  # create the session now, inside the running loop
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client and its own aiohttp session (a borrowed session stays open).

        Waits still running end at once with :class:`~prism_async.ClientClosedError`, and no
        request is sent after this. Idempotent.
        """
        await self._waiter.aclose()
        await self._http.aclose()
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self._durable is not None:
            await self._durable.aclose()
            await self._durable.ledger.aclose()

    async def wait_for_generation(
        self,
        generation_id: str,
        *,
        timeout: float | None = None,
        poll: PollPolicy | None = None,
        on_update: OnUpdate | None = None,
    ) -> Generation:
        """Wait until a generation is completed and return it.

        See :func:`prism_async.wait_for_generation`; ``poll`` defaults to this client's.
        """
        return await self._waiter.one(
            generation_id, timeout=timeout, poll=poll, on_update=on_update
        )

    @overload
    async def wait_for_generations(
        self,
        ids: GenerationIds,
        *,
        timeout: float | None = ...,
        poll: PollPolicy | None = ...,
        on_update: OnUpdate | None = ...,
        return_exceptions: Literal[False] = ...,
    ) -> list[Generation]: ...

    @overload
    async def wait_for_generations(
        self,
        ids: GenerationIds,
        *,
        timeout: float | None = ...,
        poll: PollPolicy | None = ...,
        on_update: OnUpdate | None = ...,
        return_exceptions: bool,
    ) -> list[Generation | BaseException]: ...

    async def wait_for_generations(
        self,
        ids: GenerationIds,
        *,
        timeout: float | None = None,
        poll: PollPolicy | None = None,
        on_update: OnUpdate | None = None,
        return_exceptions: bool = False,
    ) -> list[Generation] | list[Generation | BaseException]:
        """Wait for many generations at once; results come back in input order.

        See :func:`prism_async.wait_for_generations`.
        """
        return await self._waiter.many(
            ids,
            timeout=timeout,
            poll=poll,
            on_update=on_update,
            return_exceptions=return_exceptions,
        )

    def as_completed(
        self,
        ids: GenerationIds,
        *,
        timeout: float | None = None,
        poll: PollPolicy | None = None,
    ) -> AsCompleted:
        """Yield each generation as soon as it is terminal (completed or failed).

        Best used as ``async with prism.as_completed(ids) as finished:`` so that leaving the
        block early stops every wait. See :func:`prism_async.as_completed`.
        """
        return self._waiter.as_completed(ids, timeout=timeout, poll=poll)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<PrismClient base_url={self.base_url!r} {state}>"
