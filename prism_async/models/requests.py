"""Request bodies, as plain models. The converter decides their wire names (camelCase or not)."""

from __future__ import annotations

from attrs import frozen

__all__ = [
    "CreateCharacterRequest",
    "CreateGenerationRequest",
    "PresignUploadRequest",
    "TemplateGenerateRequest",
]


@frozen
class CreateGenerationRequest:
    """Body of ``POST /api/generations`` (sent camelCase, unset fields left out)."""

    prompt: str
    model_name: str
    aspect_ratio: str | None = None
    duration: str | None = None
    resolution: str | None = None
    count: int | None = None
    has_audio: bool | None = None
    start_frame_key: str | None = None
    end_frame_key: str | None = None
    ingredient_image_keys: list[str] | None = None
    character_reference_image_keys: list[str] | None = None
    source_video_key: str | None = None
    reference_video_keys: list[str] | None = None
    audio_key: str | None = None
    template_id: str | None = None


@frozen
class PresignUploadRequest:
    """Body of ``POST /api/s3/presign-upload`` (sent camelCase)."""

    kind: str
    content_type: str
    file_name: str | None = None


@frozen
class TemplateGenerateRequest:
    """Body of ``POST /api/templates/:id/generate`` (sent snake_case)."""

    variables: dict[str, str]
    webhook_url: str | None = None
    character_variables: dict[str, str] | None = None


@frozen
class CreateCharacterRequest:
    """JSON body of ``POST /api/characters`` (image URLs)."""

    name: str
    images: list[str]
    description: str | None = None
