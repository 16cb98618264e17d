"""The fake's HTTP layer (a moto ``responses.py``): requests into model calls, results into
answers.

Each handler reads what its request carries, calls :class:`PrismBackend` (or its storage) and
serialises the result. Refusals are raised as :class:`FakeAPIError`; the :func:`errors`
middleware turns them into the documented body in one place: JSON for the API, an S3 XML
``<Error>`` for storage.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from ._faults import Handler
from ._model import PrismBackend
from ._records import FakeAPIError, StorageError, json_object

__all__ = ["ApiHandlers", "errors"]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a :class:`FakeAPIError` raised anywhere below with its documented body."""
    try:
        return await handler(request)
    except StorageError as exc:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{exc.code}</Code><Message>{exc.message}</Message>"
            f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
        )
        return web.Response(status=exc.status, text=body, content_type="application/xml")
    except FakeAPIError as exc:
        return web.json_response({"error": exc.code, "message": exc.message}, status=exc.status)


async def _body(request: web.Request) -> Any:
    """The parsed JSON body, or None when it is not JSON (the model refuses it in turn)."""
    try:
        return json.loads(await request.read())
    except ValueError:
        return None


class ApiHandlers:
    """One handler per route; the route table is in :mod:`._routes`."""

    def __init__(self, backend: PrismBackend) -> None:
        self.backend = backend
        self.storage = backend.storage

    def authorized(self, handler: Handler) -> Handler:
        """``handler`` behind the documented auth and scope checks."""

        async def checked(request: web.Request) -> web.StreamResponse:
            self.backend.authorize(request.headers.get("Authorization", ""))
            return await handler(request)

        return checked

    # -- the API -----------------------------------------------------------------------------

    async def create_generation(self, request: web.Request) -> web.Response:
        return web.json_response(self.backend.create_generation(await _body(request)))

    async def get_generation(self, request: web.Request) -> web.Response:
        return web.json_response(self.backend.get_generation(request.match_info["id"]))

    async def generate_from_template(self, request: web.Request) -> web.Response:
        body = await _body(request)
        answer = self.backend.generate_from_template(request.match_info["id"], body)
        return web.json_response(answer)

    async def list_templates(self, request: web.Request) -> web.Response:
        return web.json_response(self.backend.list_templates(request.query))

    async def get_template(self, request: web.Request) -> web.Response:
        return web.json_response({"data": self.backend.get_template(request.match_info["id"])})

    async def presign(self, request: web.Request) -> web.Response:
        return web.json_response(self.storage.presign(await _body(request)))

    async def create_character(self, request: web.Request) -> web.Response:
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            name, description = form.get("name"), form.get("description")
            files = [*form.getall("images", []), *form.getall("images[]", [])]
            images: Any = sum(1 for item in files if hasattr(item, "file"))
        else:
            body = json_object(await _body(request))
            name, description, images = (
                body.get("name"),
                body.get("description"),
                body.get("images"),
            )
        character = self.backend.catalog.create_character(name, description, images)
        return web.json_response({"data": character}, status=201)

    async def list_characters(self, request: web.Request) -> web.Response:
        return web.json_response(self.backend.catalog.list_characters(request.query))

    async def search_assets(self, request: web.Request) -> web.Response:
        return web.json_response(self.backend.search_assets(request.query))

    # -- storage and pages -------------------------------------------------------------------

    async def put_object(self, request: web.Request) -> web.Response:
        upload = self.storage.accept_upload(
            request.match_info["token"], request.query, request.headers, request.content_length
        )
        etag = self.storage.store(upload, await request.read())
        return web.Response(status=200, headers={"ETag": etag})

    async def get_video(self, request: web.Request) -> web.Response:
        data = self.storage.read_video(request.match_info["id"], request.query, request.headers)
        headers = {"Accept-Ranges": "bytes", "Content-Type": "video/mp4"}
        window = request.http_range
        if window.start is None and window.stop is None:
            return web.Response(body=data, headers=headers)
        start, stop, _ = window.indices(len(data))
        if start >= len(data) or start >= stop:
            raise StorageError(416, "InvalidRange", "The requested range is not satisfiable")
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
        return web.Response(status=206, body=data[start:stop], headers=headers)

    async def share_page(self, request: web.Request) -> web.Response:
        generation_id = request.match_info["id"]
        if generation_id not in self.backend.generations:
            return web.Response(status=404, text="Not found")
        video = self.storage.video_url(generation_id)
        return web.Response(
            text=f"<html><body><video src='{video}'></video></body></html>",
            content_type="text/html",
        )
