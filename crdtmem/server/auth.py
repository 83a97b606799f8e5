"""Authentication (bearer token -> principal); the per-principal rate limits are in
:mod:`crdtmem.rates` (re-exported here)."""

from __future__ import annotations

from aiohttp import web

from ..access import OPEN, Principal, TokenTable
from ..rates import RateLimiter, VolumeLimiter

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
"""Where the auth middleware leaves the request's authenticated principal."""


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    # browsers cannot set headers on EventSource/WebSocket: accept ?token= there
    return request.query.get("token") or None


def authenticate(tokens: TokenTable | None, request: web.Request) -> Principal | None:
    """The request's principal; None when a token is required and missing or unknown."""
    if tokens is None:
        return OPEN
    return tokens.lookup(bearer_token(request))


__all__ = ["PRINCIPAL", "RateLimiter", "VolumeLimiter", "authenticate", "bearer_token"]
