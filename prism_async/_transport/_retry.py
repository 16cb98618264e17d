"""RetryPolicy and the tenacity wiring for single requests.

Which failures are retried (the matrix in design.md):

* idempotent requests (GET, the storage PUT and GET): connection errors, timeouts, and the
  statuses 408, 429, 500, 502, 503, 504;
* POST (paid, and the API has no idempotency key): only when the request provably never
  reached the server (the connection could not be made, ``maybe_sent=False``) or when the
  server refused it with 429. Never after a timeout, a drop after sending, or a 5xx;
* ``503 free_tier_paused`` is never retried;
* a ``Retry-After`` header replaces the backoff, up to ``max_retry_after``; a longer one ends
  the retries at once.

The HTTP layer runs the first attempt itself (the success path stays lean) and hands a
retryable failure to :func:`resume_with_retries`, where tenacity takes over (imported then,
on the first retry: ``import prism_async`` does not pay for it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from attrs import field, frozen, validators

from .._clock import retry_sleep
from .._errors import APIConnectionError, APIStatusError, FreeTierPausedError, PrismError

if TYPE_CHECKING:
    import tenacity

__all__ = ["RetryPolicy", "resume_with_retries", "should_retry"]

logger = logging.getLogger("prism_async")

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_non_negative = validators.ge(0.0)


@frozen
class RetryPolicy:
    """How failed requests are retried.

    Args:
        max_retries: retries after the first attempt; ``0`` disables retries.
        initial: first backoff, in seconds; it doubles on each retry.
        max_wait: longest backoff between two attempts, in seconds.
        jitter: whether to randomise each backoff ("full jitter": a random wait between 0 and
            the backoff) so clients do not retry in step. (``PollPolicy.jitter`` is different:
            a fraction by which each poll delay is spread.)
        max_retry_after: longest ``Retry-After`` obeyed; a longer one raises at once.
    """

    max_retries: int = field(default=3, validator=[validators.instance_of(int), validators.ge(0)])
    initial: float = field(default=0.5, converter=float, validator=_non_negative)
    max_wait: float = field(default=8.0, converter=float, validator=_non_negative)
    jitter: bool = True
    max_retry_after: float = field(default=60.0, converter=float, validator=_non_negative)


def _server_delay(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, APIStatusError) else None


def should_retry(exc: BaseException, *, idempotent: bool, policy: RetryPolicy) -> bool:
    """Whether ``exc`` may be retried under ``policy`` (attempt counting aside)."""
    if isinstance(exc, APIConnectionError):
        return idempotent or not exc.maybe_sent
    if not isinstance(exc, APIStatusError) or isinstance(exc, FreeTierPausedError):
        return False
    if exc.status_code not in RETRYABLE_STATUSES:
        return False
    if not idempotent and exc.status_code != 429:
        return False
    delay = _server_delay(exc)
    return delay is None or delay <= policy.max_retry_after


class _Wait:
    """Exponential backoff (with full jitter), replaced by the server's ``Retry-After``.

    A plain callable (tenacity takes one as ``wait``), so that defining it needs no tenacity.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        import tenacity

        if policy.jitter:
            self._backoff: tenacity.wait.wait_base = tenacity.wait_random_exponential(
                multiplier=policy.initial, max=policy.max_wait
            )
        else:
            self._backoff = tenacity.wait_exponential(
                multiplier=policy.initial, max=policy.max_wait
            )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            delay = _server_delay(outcome.exception() or Exception())
            if delay is not None:
                return delay
        return float(self._backoff(retry_state))


async def resume_with_retries(
    first: PrismError,
    attempt: Callable[[int], Awaitable[T]],
    *,
    idempotent: bool,
    policy: RetryPolicy,
    what: str,
) -> T:
    """After attempt 1 failed with ``first``: re-raise it, or retry under tenacity.

    Args:
        first: the failure of attempt 1.
        attempt: sends the request once; receives the attempt number (for logging).
        idempotent: whether the request may safely be sent twice.
        policy: the retry policy.
        what: ``"METHOD /path"`` for log lines (never a URL with credentials).
    """
    if policy.max_retries == 0 or not should_retry(first, idempotent=idempotent, policy=policy):
        raise first
    import tenacity  # first needed here, on a retry (a plain success never imports it)

    replay: list[PrismError] = [first]

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.debug(
            "retrying %s in %.2fs after attempt %d failed: %s",
            what,
            state.upcoming_sleep,
            state.attempt_number,
            exc,
        )

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.max_retries + 1),
        wait=_Wait(policy),
        retry=tenacity.retry_if_exception(
            lambda exc: should_retry(exc, idempotent=idempotent, policy=policy)
        ),
        sleep=retry_sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for state in retrying:
        with state:
            if replay:  # attempt 1 already happened: hand its failure to tenacity
                raise replay.pop()
            return await attempt(state.retry_state.attempt_number)
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover
