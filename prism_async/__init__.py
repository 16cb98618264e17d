"""prism_async: the asyncio-native Python SDK for the Prism Videos API.

Quick start::

    from prism_async import PrismClient

    async with PrismClient() as prism:
        batch = await prism.generations.create(prompt="A product demo", model_name="veo-3.1")
        generation = await prism.generations.get(batch.ids[0])
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._client import PrismClient
from ._converters import to_dict
from ._errors import (
    AmbiguousSubmissionError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ClientClosedError,
    FreeTierPausedError,
    GenerationFailedError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidRequestError,
    InvalidTemplateError,
    LedgerUnavailableError,
    NotFoundError,
    PermissionDeniedError,
    PricingError,
    PrismError,
    RateLimitError,
    ResponseValidationError,
    SubmissionConflictError,
    SubmissionInFlightError,
    WaitTimeoutError,
)
from ._transport._retry import RetryPolicy
from ._version import __version__
from .models import (
    Asset,
    Character,
    Generation,
    GenerationBatch,
    GenerationMetadata,
    GenerationStatus,
    LatencyEstimate,
    Page,
    Pagination,
    PresignedUpload,
    QueuedGeneration,
    Template,
    TemplateGeneration,
    TemplateGenerationBatch,
    TemplateVariable,
    UploadedFile,
)
from .polling import (
    AsCompleted,
    PollPolicy,
    as_completed,
    wait_for_generation,
    wait_for_generations,
)

if TYPE_CHECKING:
    from .ledger._prices import Quote
    from .models.requests import GenerationRequest, TemplateRequest
    from .runs import RunResult

_LAZY = {
    "GenerationRequest": ".models.requests",
    "Quote": ".ledger._prices",
    "RunResult": ".runs",
    "TemplateRequest": ".models.requests",
}


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import prism_async`` loads neither the ledger nor bulk runs
    # (nor the request models, which a plain client needs only on its first paid request).
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousSubmissionError",
    "AsCompleted",
    "Asset",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "Character",
    "ClientClosedError",
    "FreeTierPausedError",
    "Generation",
    "GenerationBatch",
    "GenerationFailedError",
    "GenerationMetadata",
    "GenerationRequest",
    "GenerationStatus",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidRequestError",
    "InvalidTemplateError",
    "LatencyEstimate",
    "LedgerUnavailableError",
    "NotFoundError",
    "Page",
    "Pagination",
    "PermissionDeniedError",
    "PollPolicy",
    "PresignedUpload",
    "PricingError",
    "PrismClient",
    "PrismError",
    "QueuedGeneration",
    "Quote",
    "RateLimitError",
    "ResponseValidationError",
    "RetryPolicy",
    "RunResult",
    "SubmissionConflictError",
    "SubmissionInFlightError",
    "Template",
    "TemplateGeneration",
    "TemplateGenerationBatch",
    "TemplateRequest",
    "TemplateVariable",
    "UploadedFile",
    "WaitTimeoutError",
    "__version__",
    "as_completed",
    "to_dict",
    "wait_for_generation",
    "wait_for_generations",
]
