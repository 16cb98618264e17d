"""What every resource namespace shares: what it is built with, the ledger-guarded submit of a
paid request, and walking pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from .. import _rules
from .._errors import InvalidRequestError
from .._rules import Paging
from .._transport._http import HTTPClient
from .._validation import check
from ..models.common import Page

if TYPE_CHECKING:
    from .._waiting._cadence import Births
    from ..ledger._durable import Durable
    from ..ledger._model import Submission
    from ..ledger._spending import Spending
    from ..models.requests import GenerationRequest, TemplateRequest

__all__ = ["Resource", "page_params", "paginate"]

T = TypeVar("T")
B = TypeVar("B")


class Resource:
    """Base of the namespaces (``prism.generations`` and the like).

    Args:
        http: sends the requests.
        durable: the client's ledger rules, or None (no ledger).
        spending: the client's spend rules (budget, 402 pause, charges), or None (no ledger).
        births: where the client's waits learn when (and with which shape) the ids of a paid
            request were created, or None.
    """

    def __init__(
        self,
        http: HTTPClient,
        durable: Durable | None = None,
        spending: Spending | None = None,
        births: Births | None = None,
    ) -> None:
        self._http = http
        self._durable = durable
        self._spending = spending
        self._births = births

    def _check_key(self, key: str | None) -> None:
        if key is not None and self._durable is None:
            raise InvalidRequestError("key", "needs a ledger: PrismClient(ledger=...)")

    async def _paid(
        self,
        request: GenerationRequest | TemplateRequest,
        send: Callable[[], Awaitable[B]],
        *,
        ids_of: Callable[[B], list[str]],
        credits_of: Callable[[B], float | None],
        replay: Callable[[Submission], B],
    ) -> B:
        """Send a paid request; with its ``key`` (and a ledger), at most once ever: a key
        already accepted returns ``replay`` of its record and sends nothing. With a ledger, the
        spend rules come first (a 402 pause, the budget) and the charge is recorded after.

        The ledger's modules are imported here, when first needed: ``import prism_async``
        does not load them."""
        key, durable, spending, births = request.key, self._durable, self._spending, self._births
        replays: list[Submission] = []
        if births is not None:
            from ..ledger._prices import shape_of

            sending = send

            async def send() -> B:
                batch = await sending()
                births.note(ids_of(batch), shape_of(request).base)  # their waits count from now
                return batch

        def replaying(submission: Submission) -> B:
            replays.append(submission)
            return replay(submission)

        async def submit() -> B:
            if key is None or durable is None:
                return await send()
            from ..ledger._intent import intent_of
            from ..ledger._spending import summary_of

            kind, body = intent_of(request)
            return await durable.submit(
                key,
                kind=kind,
                body=body,
                request=summary_of(request, spending.budget if spending else None),
                send=send,
                ids_of=ids_of,
                credits_of=credits_of,
                replay=replaying,
            )

        if spending is None:
            return await submit()
        return await spending.paid(
            request,
            submit,
            credits_of=credits_of,
            count_of=lambda batch: len(ids_of(batch)),
            charged_by_ledger=key is not None,
            replayed=lambda: bool(replays),
        )


def page_params(
    limit: int | None, offset: int | None, paging: Paging, **extra: str | None
) -> dict[str, str]:
    """Query parameters of a listing, checked and with unset values left out.

    ``paging`` is the endpoint's :class:`~prism_async._rules.Paging`.
    """
    max_limit = paging.max_limit
    params = {key: value for key, value in extra.items() if value is not None}
    if limit is not None:
        check("limit", _rules.int_range_problem(limit, 1, max_limit))
        params["limit"] = str(limit)
    if offset is not None:
        check("offset", _rules.offset_problem(offset))
        params["offset"] = str(offset)
    return params


async def paginate(fetch: Callable[[int], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    """Yield every item of every page, fetching the next page only when it is needed."""
    offset = 0
    while True:
        page = await fetch(offset)
        for item in page.data:
            yield item
        if not page.pagination.has_more or not page.data:
            return
        offset += len(page.data)
