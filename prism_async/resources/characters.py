"""``prism.characters``: saved characters for template image variables."""

from __future__ import annotations

import builtins
import mimetypes
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from .. import _rules
from .._converters import structure, structure_data, unstructure
from .._errors import InvalidRequestError
from .._rules import CHARACTER_NAME_MAX, CHARACTER_PAGING
from .._transport._http import MultipartFile
from .._validation import check, check_query, check_text
from ..models.characters import Character
from ..models.common import Page
from ._base import Resource, page_params, paginate

__all__ = ["Characters"]


def _is_url(image: object) -> bool:
    """Whether ``image`` is meant as a URL (then it must be http(s)) rather than a path."""
    return isinstance(image, str) and "://" in image


def _image_files(images: Sequence[str | os.PathLike[str]]) -> builtins.list[MultipartFile]:
    files: builtins.list[MultipartFile] = []
    for index, image in enumerate(images):
        field = f"images[{index}]"
        if not isinstance(image, str | os.PathLike):
            raise InvalidRequestError(field, "must be an http(s) URL or a file path")
        path = Path(image).expanduser()
        if not path.is_file():
            raise InvalidRequestError(field, f"file not found: {path}")
        if path.stat().st_size == 0:
            raise InvalidRequestError(field, f"the file is empty: {path}")
        content_type = mimetypes.guess_type(path.name)[0]
        if content_type is None or not content_type.startswith("image/"):
            raise InvalidRequestError(field, f"must be an image file; got {path.name!r}")
        files.append(("images", path, content_type))
    return files


class Characters(Resource):
    """Endpoints under ``/api/characters``."""

    async def create(
        self,
        *,
        name: str,
        images: Sequence[str | os.PathLike[str]],
        description: str | None = None,
    ) -> Character:
        """Create a character from 1 to 10 images.

        Args:
            name: 1 to 60 characters.
            images: all HTTP(S) image URLs (sent as JSON) or all local image files (sent as
                multipart); a mix is refused.
            description: up to 300 characters (may be empty).
        """
        check_text("name", name, max_length=CHARACTER_NAME_MAX)
        check("description", _rules.character_description_problem(description))
        if isinstance(images, str | bytes | os.PathLike) or not isinstance(images, Sequence):
            raise InvalidRequestError("images", "must be a list of image URLs or file paths")
        check("images", _rules.character_images_problem(len(images)))
        urls = [_is_url(image) for image in images]
        if all(urls):
            for index, image in enumerate(images):
                check(f"images[{index}]", _rules.http_url_problem(image))
            from ..models.requests import CreateCharacterRequest

            body = CreateCharacterRequest(
                name=name, images=[str(image) for image in images], description=description
            )
            payload = await self._http.request("POST", ("characters",), json_body=unstructure(body))
        elif any(urls):
            raise InvalidRequestError(
                "images", "must be all http(s) URLs or all local files, not a mix"
            )
        else:
            fields = {"name": name}
            if description is not None:
                fields["description"] = description
            payload = await self._http.request(
                "POST", ("characters",), fields=fields, files=_image_files(images)
            )
        return structure_data(payload, Character)

    async def list(
        self, *, q: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> Page[Character]:
        """One page of characters.

        Args:
            q: search text, at least 2 characters.
            limit: page size, 1 to 60 (server default 24).
            offset: index of the first character.
        """
        params = page_params(limit, offset, CHARACTER_PAGING, q=check_query("q", q))
        payload = await self._http.request("GET", ("characters",), params=params)
        return structure(payload, Page[Character])

    def iter(self, *, q: str | None = None, limit: int | None = None) -> AsyncIterator[Character]:
        """Every character of every page (``limit`` is the page size, not a cap)."""
        page_params(limit, None, CHARACTER_PAGING, q=check_query("q", q))
        return paginate(lambda offset: self.list(q=q, limit=limit, offset=offset))
