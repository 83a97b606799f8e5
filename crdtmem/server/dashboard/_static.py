"""Serve the dashboard's files from the package, with content types, validators and cache rules.

    GET /dashboard                       index.html   no-cache (revalidate with the ETag)
    GET /dashboard/                      308 to /dashboard, query kept (relative links need no slash)
    GET /dashboard/{name}?v={version}    css / js     immutable for a year: the version is the hash
    GET /dashboard/{name}                css / js     no-cache (an old or missing ?v=)

All links in the page are relative, so it also works behind a reverse proxy under a path prefix.
The token travels in the page URL, hence ``Referrer-Policy: no-referrer`` on everything served here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..context import NodeContext

_CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
_ASSETS = ("dashboard.css", "dashboard.js")
_VERSION_MARK = "{{version}}"
_IMMUTABLE = "public, max-age=31536000, immutable"
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, name: str, body: bytes) -> _File:
        suffix = name[name.rfind(".") :]
        return cls(body, _CONTENT_TYPES[suffix], f'"{hashlib.sha256(body).hexdigest()[:20]}"')

    def response(self, request: web.Request, cache_control: str, **headers: str) -> web.Response:
        common = {**_COMMON_HEADERS, "Cache-Control": cache_control, "ETag": self.etag, **headers}
        if self.etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers=common)
        return web.Response(body=self.body, content_type=self.content_type, charset="utf-8", headers=common)


def routes(node: NodeContext) -> list[web.RouteDef]:
    """The dashboard's routes. The files are read once, here; ``node`` is not needed by them."""
    folder = resources.files(__package__) / "static"
    assets = {name: _File.of(name, (folder / name).read_bytes()) for name in _ASSETS}
    version = hashlib.sha256(b"".join(a.body for a in assets.values())).hexdigest()[:12]
    html = (folder / "index.html").read_text("utf-8").replace(_VERSION_MARK, version)
    page = _File.of("index.html", html.encode())

    async def index(request: web.Request) -> web.StreamResponse:
        return page.response(request, "no-cache", **{"Content-Security-Policy": _CSP})

    async def slash(request: web.Request) -> web.StreamResponse:
        # Returned, not raised: the errors middleware turns raised HTTP errors into JSON bodies.
        query = request.rel_url.raw_query_string  # still percent-encoded: no header injection
        location = "../dashboard" + (f"?{query}" if query else "")
        return web.Response(status=308, headers={**_COMMON_HEADERS, "Location": location})

    async def asset(request: web.Request) -> web.StreamResponse:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound(text=f"no dashboard file {request.match_info['name']!r}")
        fresh = request.query.get("v") == version
        return found.response(request, _IMMUTABLE if fresh else "no-cache")

    return [
        web.get("/dashboard", index),
        web.get("/dashboard/", slash),
        web.get("/dashboard/{name}", asset),
    ]


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
