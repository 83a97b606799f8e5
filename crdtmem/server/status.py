"""``GET /v1/status`` (JSON) and ``GET /metrics`` (Prometheus text, or OpenMetrics if the scraper asks
for it), plus ``GET /healthz`` (liveness: the process serves; local writes are taken) and
``GET /readyz`` (readiness: 503 while a configured NATS bus is not connected with its streams and
consumers, so a load balancer can send traffic to the nodes whose writes reach the fleet)."""

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
        return web.json_response({"ok": True, "replica_id": node.replica.id, **node.readiness()})

    async def readyz(request: web.Request) -> web.StreamResponse:
        ready = node.readiness()
        body = {"ok": ready["ready"], "replica_id": node.replica.id, **ready}
        return web.json_response(body, status=200 if ready["ready"] else 503)

    return [
        web.get("/v1/status", status),
        web.get("/metrics", metrics),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
    ]
