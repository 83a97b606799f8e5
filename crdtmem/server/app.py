"""The aiohttp Application of a node: middlewares and the route tables of every area."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestPayloadError

from ..access import Principal
from ..errors import CrdtmemError
from .auth import PRINCIPAL, authenticate
from .errors import error_response, from_exception, limit_response
from .loopshare import UNMETERED
from .observe import observe_latency

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger("crdtmem.node")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = ("/healthz", "/readyz", "/openapi.json", "/dashboard")


def build_app(node: NodeContext) -> web.Application:
    from . import feed, rest, search, status
    from . import sync_routes as sync_routes
    from .dashboard import routes as dashboard_routes

    app = web.Application(
        middlewares=[_errors_middleware(node), _auth_middleware(node)],
        client_max_size=node.max_body_bytes,
    )
    app.add_routes(sync_routes.routes(node))
    app.add_routes(rest.routes(node))
    app.add_routes(search.routes(node))
    app.add_routes(feed.routes(node))
    app.add_routes(status.routes(node))
    app.add_routes(dashboard_routes(node))
    return app


def _errors_middleware(node: NodeContext) -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except CrdtmemError as exc:
            response = from_exception(exc)
            node.metrics.inc("crdtmem_http_errors_total", code=type(exc).__name__)
        except (RequestPayloadError, HttpProcessingError) as exc:  # a body that does not decode (bad gzip)
            response = error_response(400, "MalformedBody", f"the request body could not be read: {exc}")
        except web.HTTPRequestEntityTooLarge:
            response = limit_response(
                "body_bytes",
                node.max_body_bytes,
                f"the request body is larger than {node.max_body_bytes} bytes (limit body_bytes)",
            )
        except web.HTTPException as exc:
            if exc.content_type == "application/json":
                raise
            response = error_response(exc.status, exc.reason.replace(" ", ""), exc.text or exc.reason)
            for name in ("Retry-After", "Allow"):
                if name in exc.headers:
                    response.headers[name] = exc.headers[name]
        except UnicodeError as exc:  # a path or query that is not UTF-8 once percent-decoded
            response = error_response(400, "BadEncoding", f"the request is not valid UTF-8: {exc}")
        except (asyncio.CancelledError, ConnectionError):
            raise  # the client went away: there is no one to answer
        except Exception as exc:
            if request.writer.output_size > 0:  # a stream (WebSocket, SSE) already answered
                raise
            log.exception("%s %s failed", request.method, request.path)
            response = error_response(
                500, "InternalError", f"the node failed to handle this request ({type(exc).__name__})"
            )
        node.metrics.inc("crdtmem_http_requests_total", status=str(response.status))
        observe_latency(node.metrics, request, response.status, time.perf_counter() - started)
        return response

    return errors


def _auth_middleware(node: NodeContext) -> Middleware:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PUBLIC_PATHS):
            return await handler(request)
        principal = authenticate(node.tokens, request)
        if principal is None:
            node.metrics.inc("crdtmem_auth_failures_total")
            return error_response(
                401,
                "Unauthorized",
                "missing or unknown bearer token (Authorization: Bearer <token>)",
                **{"WWW-Authenticate": "Bearer"},
            )
        request[PRINCIPAL] = principal
        if request.path.startswith(UNMETERED):
            if request.body_exists:
                await _read_body(node, request, principal)
            return await handler(request)
        node.admit_loop(principal)
        return await node.loop.metered(principal.name, _handle(node, request, principal, handler))

    return auth


async def _handle(
    node: NodeContext, request: web.Request, principal: Principal, handler: Handler
) -> web.StreamResponse:
    if request.body_exists:
        await _read_body(node, request, principal)
    return await handler(request)


async def _read_body(node: NodeContext, request: web.Request, principal: Principal) -> None:
    """Read a request's body for its handler (``request.read()`` then returns it), charged to its
    principal's byte rate.

    Refusals cost what they must, not what the body would: a principal still in debt is refused
    (429, ``retry_after``) and a body whose ``Content-Length`` is over the limit (413) before a byte
    of it is read or buffered; aiohttp then discards what the client still sends. Every body read is
    charged by its size, whatever its handler then decides: decoding a body is the same work on the
    event loop whether the request is accepted or refused, so a token cannot buy more of the node
    with requests that are refused after their body was decoded than with accepted ones.
    """
    node.admit_bytes(principal)
    declared = request.content_length
    if declared is not None and declared > node.max_body_bytes:
        node.charge_bytes(principal, node.max_body_bytes)  # it is discarded, never held
        raise web.HTTPRequestEntityTooLarge(node.max_body_bytes, declared)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        node.charge_bytes(principal, node.max_body_bytes)
        raise
    node.charge_bytes(principal, len(raw))
