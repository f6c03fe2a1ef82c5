"""GET /console: the operator console's static page and assets, from the package.

The page holds no data and needs no key to load; every call it makes is the admin API with
the key the operator types in (kept in the tab's sessionStorage), as curl would make it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from starlette.responses import Response

from router.api.errors import ApiError

router = APIRouter(include_in_schema=False)

_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
# Nothing from elsewhere: scripts, styles and calls from this origin only.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


@cache
def _asset(name: str) -> bytes:
    return resources.files("router").joinpath("console", name).read_bytes()


def _answer(name: str) -> Response:
    return Response(
        _asset(name),
        media_type=_TYPES[name],
        headers={"Content-Security-Policy": _POLICY, "Cache-Control": "no-cache"},
    )


@router.get("/console")
async def console() -> Response:
    """The console page."""
    return _answer("index.html")


@router.get("/console/{name}")
async def console_asset(name: str) -> Response:
    """The page's script and style sheet."""
    if name not in _TYPES or name == "index.html":
        raise ApiError(404, "not_found", "no such console asset", "name")
    return _answer(name)
