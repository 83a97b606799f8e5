"""``GET /v1/status`` (JSON) and ``GET /metrics`` (Prometheus text, or OpenMetrics if the scraper asks
for it), plus ``GET /healthz``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .context import NodeContext


def routes(node: NodeContext) -> list[web.RouteDef]:
    async def status(request: web.Request) -> web.StreamResponse:
        return web.json_response(node.status())

    async def metrics(request: web.Request) -> web.StreamResponse:
        body, content_type = node.metrics.exposition(request.headers.get("Accept"))
        return web.Response(
            body=body, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"}
        )

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "replica_id": node.replica.id})

    return [
        web.get("/v1/status", status),
        web.get("/metrics", metrics),
        web.get("/healthz", healthz),
    ]
