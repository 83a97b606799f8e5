"""What a node records about each HTTP request: one access log line, and the latency of writes and
searches.

The access log goes to the ``crdtmem.access`` logger at INFO, one line per request, with the fields
as ``extra`` attributes (so ``crdtmem serve --log-format json`` emits them as JSON keys): ``method``,
``path``, ``status``, ``duration_ms``, ``bytes``, ``remote`` and ``principal``. The query string is
logged without the ``token`` parameter's value (browsers pass bearer tokens there).
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..metrics import Metrics
from .auth import PRINCIPAL

ACCESS_LOG = logging.getLogger("crdtmem.access")

_TIMED: dict[tuple[str, str], tuple[str, dict[str, str]]] = {
    ("POST", "/v1/memories"): ("crdtmem_write_seconds", {"op": "create"}),
    ("PATCH", "/v1/memories/{id}"): ("crdtmem_write_seconds", {"op": "update"}),
    ("DELETE", "/v1/memories/{id}"): ("crdtmem_write_seconds", {"op": "delete"}),
    ("POST", "/v1/memories/{id}/resolve"): ("crdtmem_write_seconds", {"op": "resolve"}),
    ("POST", "/v1/search"): ("crdtmem_search_seconds", {}),
}


def observe_latency(metrics: Metrics, request: web.Request, status: int, seconds: float) -> None:
    """Record a successful write's or search's duration in its histogram."""
    if status >= 400:
        return
    resource = request.match_info.route.resource
    timed = _TIMED.get((request.method, resource.canonical)) if resource is not None else None
    if timed is not None:
        metrics.observe(timed[0], seconds, **timed[1])


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access logger, writing structured records (see the module docstring)."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        query = [(k, "***" if k == "token" else v) for k, v in request.query.items()]
        path = request.path + ("?" + urlencode(query, safe="*") if query else "")
        principal = request.get(PRINCIPAL)
        fields = {
            "method": request.method,
            "path": path,
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
            "bytes": response.body_length,
            "remote": request.remote,
            "principal": principal.name if principal is not None else None,
        }
        self.logger.info("%s %s %s %.1f ms", request.method, path, response.status, time * 1000, extra=fields)
