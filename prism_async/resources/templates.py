"""``prism.templates``: browse templates and generate videos from them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import attrs

from .._converters import structure, structure_data, unstructure
from .._rules import TEMPLATE_PAGING
from .._transport._http import HTTPClient
from .._validation import check_query, check_text, optional_text
from ..models.common import Page
from ..models.templates import Template, TemplateGeneration, TemplateGenerationBatch
from ._base import Resource, page_params, paginate

if TYPE_CHECKING:
    from .._waiting._cadence import Births
    from ..ledger._durable import Durable
    from ..ledger._model import Submission
    from ..ledger._spending import Spending
    from ..webhooks import WebhookHub

__all__ = ["Templates"]


def _recorded_batch(submission: Submission) -> TemplateGenerationBatch:
    """The batch a ledger recorded for a key."""
    return TemplateGenerationBatch(
        [TemplateGeneration(generation_id=i) for i in submission.generation_ids],
        template_id=submission.request.get("template_id"),
        credits_charged=submission.credits_charged,
    )


class Templates(Resource):
    """Endpoints under ``/api/templates``.

    Args:
        http: sends the requests.
        durable: the client's ledger rules, or None.
        hub: the client's webhook hub, or None (its URLs carry a ledger key, and the waits on
            what they report poll slowly).
    """

    def __init__(
        self,
        http: HTTPClient,
        durable: Durable | None,
        spending: Spending | None,
        hub: WebhookHub | None,
        births: Births | None = None,
    ) -> None:
        super().__init__(http, durable, spending, births)
        self._hub = hub

    async def generate(
        self,
        template_id: str,
        *,
        variables: Mapping[str, str] | None = None,
        character_variables: Mapping[str, str] | None = None,
        webhook_url: str | None = None,
        labels: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> TemplateGenerationBatch:
        """Queue videos from a template. This costs credits and is never sent twice (with
        ``key=`` on a client with a ledger, not even across processes).

        Args:
            template_id: the template's id.
            variables: variable key -> value (text, or an HTTP(S) URL or storage key for
                image, video and audio variables). Sent as is: the server decides which
                variables are required, and omitted ones take their default.
            character_variables: image variable key -> character id.
            webhook_url: an http(s) URL the API POSTs to when each video completes or fails.
                A URL of the client's hub carries ``key`` too, so that its webhook can settle
                the key if the answer to this call is lost.
            labels: ``{"campaign": "spring"}`` (str -> str): kept on the ledger row and its
                charge, for ``ledger.spend(by="label")``; never sent to the API.
            key: names this business intent in the client's ledger: a key already accepted
                returns its recorded batch and sends nothing.

        Returns:
            The queued generations (``.ids``) and, when sent, ``latency_estimate``.

        Raises:
            InvalidRequestError: bad input (or ``key=`` without a ledger), before anything is
                sent.
            AmbiguousSubmissionError, SubmissionConflictError, SubmissionInFlightError: the
                ledger refuses to send ``key``.
            NotFoundError, InvalidTemplateError, BadRequestError, InsufficientCreditsError.
        """
        self._check_key(key)
        from ..models.requests import TemplateRequest

        request = TemplateRequest(  # checked: nothing is sent if it is bad
            template_id,
            variables=variables,
            character_variables=character_variables,
            webhook_url=webhook_url,
            labels=labels,
            key=key,
        )
        hub = self._hub
        ours = hub is not None and webhook_url is not None and hub.owns(webhook_url)
        if hub is not None and ours and key is not None and webhook_url:
            request = attrs.evolve(request, webhook_url=hub.url_with_key(webhook_url, key))
        json_body = unstructure(request)

        async def send() -> TemplateGenerationBatch:
            payload = await self._http.request(
                "POST", ("templates", template_id, "generate"), json_body=json_body
            )
            batch = structure(payload, TemplateGenerationBatch)
            if hub is not None and ours:
                hub.expect(batch.ids)  # their waits can rely on the webhook and poll slowly
            return batch

        return await self._paid(
            request,
            send,
            ids_of=lambda batch: batch.ids,
            credits_of=lambda batch: batch.credits_charged,
            replay=_recorded_batch,
        )

    async def list(
        self,
        *,
        limit: int | None = None,
        offset: int | None = None,
        q: str | None = None,
        category: str | None = None,
    ) -> Page[Template]:
        """One page of templates.

        Args:
            limit: page size, 1 to 100 (server default 50).
            offset: index of the first template.
            q: search text, at least 2 characters.
            category: category filter.
        """
        params = page_params(
            limit,
            offset,
            TEMPLATE_PAGING,
            q=check_query("q", q),
            category=optional_text("category", category),
        )
        payload = await self._http.request("GET", ("templates",), params=params)
        return structure(payload, Page[Template])

    async def get(self, template_id: str) -> Template:
        """One template by id, with its input variables.

        Raises:
            NotFoundError: no such template.
        """
        check_text("template_id", template_id)
        payload = await self._http.request("GET", ("templates", template_id))
        return structure_data(payload, Template)

    def iter(
        self, *, q: str | None = None, category: str | None = None, limit: int | None = None
    ) -> AsyncIterator[Template]:
        """Every template of every page (``limit`` is the page size, not a cap)."""
        page_params(limit, None, TEMPLATE_PAGING, q=check_query("q", q))
        return paginate(
            lambda offset: self.list(limit=limit, offset=offset, q=q, category=category)
        )
