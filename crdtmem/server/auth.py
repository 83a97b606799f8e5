"""Authentication (bearer token -> principal) and per-principal write rate limits."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from ..access import OPEN, Principal, TokenTable

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


@dataclass
class RateLimiter:
    """A token bucket per principal: ``rate`` writes per second, bursts of up to ``burst``."""

    rate: float = 200.0
    burst: float = 400.0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def acquire(self, key: str, cost: float = 1.0, now: float | None = None) -> float:
        """Take ``cost`` tokens; returns 0 if allowed, else the seconds to wait before retrying."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (cost - tokens) / self.rate
