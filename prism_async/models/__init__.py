"""Frozen attrs models, one module per endpoint group. Serialization lives in ``_converters``."""

from .assets import Asset
from .characters import Character
from .common import Page, Pagination
from .generations import (
    Generation,
    GenerationBatch,
    GenerationMetadata,
    GenerationStatus,
    QueuedGeneration,
)
from .templates import (
    LatencyEstimate,
    Template,
    TemplateGeneration,
    TemplateGenerationBatch,
    TemplateVariable,
)
from .uploads import PresignedUpload, UploadedFile

__all__ = [
    "Asset",
    "Character",
    "Generation",
    "GenerationBatch",
    "GenerationMetadata",
    "GenerationStatus",
    "LatencyEstimate",
    "Page",
    "Pagination",
    "PresignedUpload",
    "QueuedGeneration",
    "Template",
    "TemplateGeneration",
    "TemplateGenerationBatch",
    "TemplateVariable",
    "UploadedFile",
]
