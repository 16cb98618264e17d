"""The one cattrs converter: JSON <-> models.

Rules (the models carry none of this):

* responses are snake_case; unknown keys are ignored (``forbid_extra_keys=True`` is for tests);
* request bodies are camelCase for ``/generations`` and ``/s3/presign-upload``, snake_case for
  the others, and unset (None) fields are left out;
* every timestamp becomes a timezone-aware ``datetime``, from an ISO 8601 string or from Unix
  milliseconds;
* ``GenerationMetadata.raw`` keeps the whole metadata object, unknown keys included;
* a body that does not fit raises :class:`ResponseValidationError` carrying the body.

cattrs is imported, and the converter built, on first use (the first response structured or
body unstructured): ``import prism_async`` does not pay for either.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from types import NoneType
from typing import TYPE_CHECKING, Any, Optional, TypeVar, cast, get_args

import attrs

from ._errors import ResponseValidationError

if TYPE_CHECKING:
    import cattrs

    converter: cattrs.Converter
    """The SDK's converter (built on first use: read through the module's ``__getattr__``)."""

__all__ = [
    "converter",
    "make_converter",
    "structure",
    "structure_data",
    "to_dict",
    "unstructure",
]

T = TypeVar("T")
_MILLISECONDS = re.compile(r"-?\d+(?:\.\d+)?")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _structure_datetime(value: Any, _: type) -> datetime:
    """ISO 8601 strings and Unix milliseconds alike; naive values are taken as UTC."""
    if type(value) is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            if not _MILLISECONDS.fullmatch(value.strip()):
                raise
            return datetime.fromtimestamp(float(value) / 1000, tz=UTC)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    raise TypeError(f"not a timestamp: {value!r}")


def _structure_optional_datetime(value: Any, _: type) -> datetime | None:
    return None if value is None else _structure_datetime(value, datetime)


def _structure_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TypeError(f"not a boolean: {value!r}")


def _structure_str(value: Any, _: type) -> str:
    if type(value) is str:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"not a string: {value!r}")


def _structure_optional_str(value: Any, _: type) -> str | None:
    # The hottest hook of all (most fields of most models): no detour through a union.
    if value is None or type(value) is str:
        return value
    return _structure_str(value, str)


def _is_flat_model(cls: Any) -> bool:
    """A plain attrs model whose optional fields all default to None (most response models)."""
    if not (isinstance(cls, type) and attrs.has(cls)) or getattr(cls, "__parameters__", None):
        return False
    attrs.resolve_types(cls)
    return all(
        a.init
        and not a.kw_only
        and (a.default is attrs.NOTHING or (a.default is None and NoneType in get_args(a.type)))
        for a in attrs.fields(cls)
    )


def _lean_structure_fn(cls: type, conv: cattrs.Converter) -> Callable[[Any, type], Any]:
    """cattrs' structure function for a flat model, with a fast path in front.

    cattrs' generated function calls one hook per field and gathers errors field by field; on a
    status poll that was most of the SDK's own CPU (see benchmarks/README.md). The fast path
    takes a string that is already a string, and a null or missing optional field, as is; every
    other value goes through the converter's hook for its type, as before. On any failure the
    input goes to cattrs' function, which raises its usual detailed error: results and messages
    are the same, only the common case is cheaper.
    """
    from cattrs.gen import make_dict_structure_fn

    env: dict[str, Any] = {"cls": cls, "detailed": make_dict_structure_fn(cls, conv)}
    fields = attrs.fields(cls)
    lines = ["def structure(o, _):", "  try:"]
    for i, a in enumerate(fields):
        env[f"h{i}"], env[f"t{i}"] = conv.get_structure_hook(a.type), a.type
        required = a.default is attrs.NOTHING
        lines.append(f"    v{i} = o[{a.name!r}]" if required else f"    v{i} = o.get({a.name!r})")
        tests = [] if required else [f"v{i} is not None"]
        if a.type in (str, Optional[str]):  # noqa: UP045
            tests.append(f"v{i}.__class__ is not str")
        convert = f"v{i} = h{i}(v{i}, t{i})"
        lines.append(f"    if {' and '.join(tests)}: {convert}" if tests else f"    {convert}")
    arguments = ", ".join(f"v{i}" for i in range(len(fields)))
    lines += [f"    return cls({arguments})", "  except Exception:", "    return detailed(o, _)"]
    exec(compile("\n".join(lines), f"<prism_async structure {cls.__qualname__}>", "exec"), env)
    return cast(Callable[[Any, type], Any], env["structure"])


def make_converter(*, forbid_extra_keys: bool = False) -> cattrs.Converter:
    """Build the converter. The SDK uses one lenient instance; tests build a strict one."""
    import cattrs
    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

    from .models.generations import GenerationMetadata
    from .models.requests import (
        CreateCharacterRequest,
        GenerationRequest,
        PresignUploadRequest,
        TemplateRequest,
    )
    from .models.templates import TemplateGenerationBatch

    camel_bodies: tuple[type, ...] = (GenerationRequest, PresignUploadRequest)
    snake_bodies: tuple[type, ...] = (TemplateRequest, CreateCharacterRequest)
    # Arguments sent in the URL, not the body (a ledger ``key`` and ``labels`` are never sent).
    path_params: dict[type, tuple[str, ...]] = {TemplateRequest: ("template_id",)}

    conv = cattrs.Converter(forbid_extra_keys=forbid_extra_keys)
    if not forbid_extra_keys:  # (the fast path does not look for extra keys)
        conv.register_structure_hook_factory(
            _is_flat_model, lambda cls: _lean_structure_fn(cls, conv)
        )
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_structure_hook(Optional[datetime], _structure_optional_datetime)  # noqa: UP045
    conv.register_structure_hook(Optional[str], _structure_optional_str)  # noqa: UP045
    conv.register_unstructure_hook(datetime, lambda value: value.isoformat())
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(str, _structure_str)

    for body in (*camel_bodies, *snake_bodies):
        renames: dict[str, Any] = {}
        if body in camel_bodies:
            renames = {a.name: override(rename=_camel(a.name)) for a in attrs.fields(body)}
        for name in ("key", "labels", *path_params.get(body, ())):  # never in the body
            if name in attrs.fields_dict(body):
                renames[name] = override(omit=True)
        conv.register_unstructure_hook(
            body, make_dict_unstructure_fn(body, conv, _cattrs_omit_if_default=True, **renames)
        )

    conv.register_structure_hook(
        TemplateGenerationBatch,
        make_dict_structure_fn(
            TemplateGenerationBatch,
            conv,
            latency_estimate=override(rename="latency_estimate_sec"),
        ),
    )

    # metadata is an open object: known fields typed, the whole object kept in ``raw``.
    known_metadata = make_dict_structure_fn(
        GenerationMetadata, conv, raw=override(omit=True), _cattrs_forbid_extra_keys=False
    )

    def structure_metadata(value: Any, cls: type) -> GenerationMetadata:
        if value is None:
            return GenerationMetadata()
        if not isinstance(value, dict):
            raise TypeError(f"metadata is not an object: {value!r}")
        return attrs.evolve(known_metadata(value, cls), raw=dict(value))

    conv.register_structure_hook(GenerationMetadata, structure_metadata)
    return conv


_converter: cattrs.Converter | None = None


def _the_converter() -> cattrs.Converter:
    """The SDK's one lenient converter, built on first use."""
    global _converter
    if _converter is None:
        _converter = make_converter()
    return _converter


def __getattr__(name: str) -> Any:
    if name == "converter":
        return _the_converter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_hooks: dict[type, Callable[[Any, type], Any]] = {}


def structure(data: Any, cls: type[T], *, conv: cattrs.Converter | None = None) -> T:
    """Structure ``data`` into ``cls``, raising :class:`ResponseValidationError` if it won't fit."""
    try:
        if conv is not None:
            return conv.structure(data, cls)
        hook = _hooks.get(cls)
        if hook is None:  # looked up once per model: this runs on every status poll
            hook = _hooks[cls] = _the_converter().get_structure_hook(cls)
        return hook(data, cls)  # type: ignore[no-any-return]
    except Exception as exc:
        import cattrs  # (already imported: a converter ran)

        if isinstance(exc, cattrs.BaseValidationError):
            reason = "; ".join(cattrs.transform_error(exc))
        else:
            reason = str(exc) or type(exc).__name__
        name = getattr(cls, "__name__", str(cls))
        raise ResponseValidationError(f"response does not fit {name}: {reason}", body=data) from exc


def structure_data(payload: Any, cls: type[T], *, conv: cattrs.Converter | None = None) -> T:
    """Structure a response wrapped in ``{"data": ...}``."""
    if not isinstance(payload, dict) or "data" not in payload:
        raise ResponseValidationError("response is not wrapped in 'data'", body=payload)
    return structure(payload["data"], cls, conv=conv)


def unstructure(obj: Any) -> Any:
    """Turn a request model into its JSON-ready wire form."""
    return _the_converter().unstructure(obj)


def to_dict(value: Any) -> Any:
    """The JSON-ready form of any model or list of models.

    Plain dicts, lists, strings, numbers, booleans and None, ready for ``json.dumps``: field
    names as the model has them, datetimes as ISO 8601 strings (with their UTC offset), nested
    models as dicts. A list (or tuple) of models becomes a list of dicts; a dict's values are
    converted too.

    ``json.dumps(to_dict(generation))`` gives ``{"id": "gen_abc123", "status": "completed",
    ..., "created_at": "2026-02-26T12:00:00+00:00", ...}``.
    """
    return _the_converter().unstructure(value)
