"""Request objects: the one definition of each endpoint's arguments, and of the rule that checks
each one. The converter decides their wire names (camelCase or not).

Each field of :class:`GenerationRequest` and :class:`TemplateRequest` carries its rule (a
function ``(field name, value) -> normalised value`` that raises ``InvalidRequestError``): a
request is checked and normalised when it is built, before anything can be sent. Adding an
argument to ``generations.create`` is one field here (with its rule) and one keyword in
``create``'s signature.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from attrs import field, frozen

from .._errors import InvalidRequestError
from .._validation import (
    ASPECT_RATIOS,
    check_choice,
    check_count,
    check_http_url,
    check_str_list,
    check_str_map,
    check_text,
    normalize_duration,
    optional_text,
)

__all__ = [
    "CreateCharacterRequest",
    "GenerationRequest",
    "PresignUploadRequest",
    "TemplateRequest",
]

Rule = Callable[[str, Any], Any]
"""Checks one argument: ``(field name, value) -> normalised value``, or InvalidRequestError."""

_RULE = "prism_rule"


def _rule(rule: Rule) -> dict[str, Rule]:
    return {_RULE: rule}


def _key(name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise InvalidRequestError(name, "must be a non-empty string")
    return value


def _labels(name: str, value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidRequestError(name, "must be a dict of non-empty str keys to str values")
    return dict(value)


def _bool(name: str, value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise InvalidRequestError(name, "must be True or False")
    return value


def _checked(request: Any) -> None:
    """Run every field's rule and keep the normalised values (requests are frozen)."""
    for a in attrs.fields(type(request)):
        rule = a.metadata.get(_RULE)
        if rule is not None:
            object.__setattr__(request, a.name, rule(a.name, getattr(request, a.name)))


@frozen
class GenerationRequest:
    """One ``generations.create``: its keyword arguments, checked and normalised when built.

    The body of ``POST /api/generations`` (sent camelCase, unset fields left out, ``labels``
    and ``key`` never sent), and one request of ``prism.run``.
    """

    prompt: str = field(metadata=_rule(check_text))
    model_name: str = field(metadata=_rule(check_text))
    aspect_ratio: str | None = field(
        default=None, metadata=_rule(lambda n, v: check_choice(n, v, ASPECT_RATIOS))
    )
    duration: str | int | None = field(
        default=None, metadata=_rule(lambda _, v: normalize_duration(v))
    )
    """``"8s"`` or ``8``: kept as ``"8s"``."""
    resolution: str | None = field(default=None, metadata=_rule(optional_text))
    count: int | None = field(default=None, metadata=_rule(lambda _, v: check_count(v)))
    has_audio: bool | None = field(default=None, metadata=_rule(_bool))
    start_frame_key: str | None = field(default=None, metadata=_rule(optional_text))
    end_frame_key: str | None = field(default=None, metadata=_rule(optional_text))
    ingredient_image_keys: list[str] | None = field(default=None, metadata=_rule(check_str_list))
    character_reference_image_keys: list[str] | None = field(
        default=None, metadata=_rule(check_str_list)
    )
    source_video_key: str | None = field(default=None, metadata=_rule(optional_text))
    reference_video_keys: list[str] | None = field(default=None, metadata=_rule(check_str_list))
    audio_key: str | None = field(default=None, metadata=_rule(optional_text))
    template_id: str | None = field(default=None, metadata=_rule(optional_text))
    labels: Mapping[str, str] | None = field(default=None, metadata=_rule(_labels))
    """Kept on the ledger row and its charge (``ledger.spend(by="label")``); never sent."""
    key: str | None = field(default=None, metadata=_rule(_key))
    """The ledger key; derived from the request itself when None (see ``prism.run``)."""

    def __attrs_post_init__(self) -> None:
        _checked(self)

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``generations.create`` (``key`` aside)."""
        return {a.name: getattr(self, a.name) for a in attrs.fields(type(self)) if a.name != "key"}


@frozen
class TemplateRequest:
    """One ``templates.generate``: its arguments, checked and normalised when built.

    The body of ``POST /api/templates/:id/generate`` (sent snake_case; ``template_id`` goes in
    the path; ``labels`` and ``key`` are never sent), and one request of ``prism.run``.
    """

    template_id: str = field(metadata=_rule(check_text))
    variables: Mapping[str, str] | None = field(
        default=None, metadata=_rule(lambda n, v: check_str_map(n, v if v is not None else {}))
    )
    """Variable key -> value; None is sent as ``{}``."""
    character_variables: Mapping[str, str] | None = field(
        default=None,
        metadata=_rule(
            lambda n, v: None if v is None else check_str_map(n, v, allow_empty_values=False)
        ),
    )
    webhook_url: str | None = field(default=None, metadata=_rule(check_http_url))
    labels: Mapping[str, str] | None = field(default=None, metadata=_rule(_labels))
    """Kept on the ledger row and its charge (``ledger.spend(by="label")``); never sent."""
    key: str | None = field(default=None, metadata=_rule(_key))
    """The ledger key; derived from the request itself when None (see ``prism.run``)."""

    def __attrs_post_init__(self) -> None:
        _checked(self)


@frozen
class PresignUploadRequest:
    """Body of ``POST /api/s3/presign-upload`` (sent camelCase)."""

    kind: str
    content_type: str
    file_name: str | None = None


@frozen
class CreateCharacterRequest:
    """JSON body of ``POST /api/characters`` (image URLs)."""

    name: str
    images: list[str]
    description: str | None = None
