"""The fake's routes (a moto ``urls.py``): every path it answers and the handler of each.

Adding an endpoint to the fake: its rule in :class:`~._model.PrismBackend` (a method that
returns the JSON or raises :class:`~._records.FakeAPIError`), a handler in
:class:`~._handlers.ApiHandlers` that reads the request and calls it, and one line here.
"""

from __future__ import annotations

from aiohttp import web

from ._handlers import ApiHandlers

__all__ = ["ROUTES", "add_routes"]

# (method, path, handler name, whether the API key is required)
ROUTES: tuple[tuple[str, str, str, bool], ...] = (
    ("POST", "/api/generations", "create_generation", True),
    ("GET", "/api/generations/{id}", "get_generation", True),
    ("POST", "/api/templates/{id}/generate", "generate_from_template", True),
    ("GET", "/api/templates", "list_templates", True),
    ("GET", "/api/templates/{id}", "get_template", True),
    ("POST", "/api/s3/presign-upload", "presign", True),
    ("POST", "/api/characters", "create_character", True),
    ("GET", "/api/characters", "list_characters", True),
    ("GET", "/api/assets/search", "search_assets", True),
    ("PUT", "/storage/uploads/{token}", "put_object", False),
    ("GET", "/storage/videos/{id}", "get_video", False),
    ("GET", "/share/{id}", "share_page", False),
)


def add_routes(app: web.Application, handlers: ApiHandlers) -> None:
    """Route every path of :data:`ROUTES` to its handler."""
    for method, path, name, keyed in ROUTES:
        handler = getattr(handlers, name)
        app.router.add_route(method, path, handlers.authorized(handler) if keyed else handler)
