"""``GET /v1/status`` (JSON) and ``GET /metrics`` (Prometheus text, or OpenMetrics if the scraper asks
for it), plus ``GET /healthz`` (liveness: the process serves; local writes are taken) and
``GET /readyz`` (readiness: 503 while a configured NATS bus is not connected with its streams and
consumers, or while the node catches up from document states on entries a stream dropped before it
received them, ``bus.behind`` saying why; so a load balancer can send traffic to the nodes whose
writes reach the fleet and that miss nothing of it).

What a status shows depends on who asks: a principal that reads every channel (``read: ["*"]``, or
a node without tokens) sees the whole node, peers, links and counts; any other principal sees the
replica's identity and only the channels it may read, with their version vectors: nothing about
other tenants' channels, the node's peers or its traffic (no metadata oracle). ``/metrics``, whose
labels name principals and peers, is for the first kind only (403 for others).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..access import AccessDenied, Principal
from .auth import PRINCIPAL

if TYPE_CHECKING:
    from .context import NodeContext

OWN_FIELDS = ("replica_id", "public_key", "url")
"""What every principal sees of the node besides its own channels."""


def routes(node: NodeContext) -> list[web.RouteDef]:
    async def status(request: web.Request) -> web.StreamResponse:
        return web.json_response(visible_status(node.status(), request[PRINCIPAL]))

    async def metrics(request: web.Request) -> web.StreamResponse:
        principal: Principal = request[PRINCIPAL]
        if not sees_everything(principal):  # its labels name principals and peers
            raise AccessDenied(f"{principal.name} may not read the node's metrics (a token reading '*' may)")
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


def sees_everything(principal: Principal) -> bool:
    """An operator's token: it reads every channel."""
    return "*" in principal.read


def visible_status(status: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """The part of a node's status ``principal`` may see (module docstring)."""
    if sees_everything(principal):
        return status
    channels = [c for c in status["channels"] if principal.may_read(c)]
    subscribed = status.get("subscribed")
    return {
        **{name: status.get(name) for name in OWN_FIELDS},
        "channels": channels,
        "subscribed": [c for c in subscribed if principal.may_read(c)] if subscribed is not None else None,
        "version_vectors": {c: v for c, v in status["version_vectors"].items() if principal.may_read(c)},
    }
