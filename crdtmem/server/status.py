"""``GET /v1/status`` (JSON) and ``GET /metrics`` (Prometheus text), plus ``GET /healthz``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .context import NodeContext


def routes(node: NodeContext) -> list[web.RouteDef]:
    async def status(request: web.Request) -> web.StreamResponse:
        return web.json_response(node.status())

    async def metrics(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=node.metrics.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "replica_id": node.replica.id})

    return [
        web.get("/v1/status", status),
        web.get("/metrics", metrics),
        web.get("/healthz", healthz),
    ]
