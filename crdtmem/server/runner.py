"""The node's aiohttp runner: JSON error bodies even for requests aiohttp refuses itself.

A request line that is too long, a header too large, a method or an encoding the HTTP parser does
not accept never reaches the application or its middlewares: aiohttp answers it from its protocol
handler (``RequestHandler.handle_error``) with a plain-text body, and offers no hook for it
(aio-libs/aiohttp#3287). The runner here builds its server with a handler whose ``handle_error``
answers ``{"error": code, "message": text}`` with the same status, so that every error body a
client of a node sees is JSON. Such errors are the client's (4xx) and are logged without a
traceback; an unexpected failure (500) is logged with one.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger("crdtmem.node")
MAX_MESSAGE = 300
"""Characters of the parser's message kept in the error body."""


class _JsonErrors(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # part of a response went out: the connection is broken
            raise ConnectionError("a response was already being sent; cannot send an error after it")
        if isinstance(exc, HttpProcessingError) and status < 500:
            log.info("refused a malformed request from %s: %s", request.remote, message or exc)
            code = type(exc).__name__
            text = message or str(exc)
        else:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            code, text = "InternalError", "the node failed to handle this request"
        if not isinstance(text, str) or not text:
            text = HTTPStatus(status).phrase
        if len(text) > MAX_MESSAGE:  # a line too long would otherwise be echoed back whole
            text = text[:MAX_MESSAGE] + "…"
        body = json.dumps({"error": code, "message": text})
        response = web.Response(status=status, text=body, content_type="application/json")
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrors(self, loop=self._loop, **self._kwargs)


class NodeRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer aiohttp's own refusals with JSON bodies."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # the same server, built by aiohttp; only __call__ differs
        return server
