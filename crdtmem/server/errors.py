"""Map errors to HTTP responses in one place: status code plus ``{"error": code, "message": text}``."""

from __future__ import annotations

from aiohttp import web

from ..access import AccessDenied
from ..errors import (
    BehindHorizon,
    ClockSkewError,
    CrdtmemError,
    InvalidInput,
    LimitExceeded,
    MemoryDeleted,
    MemoryExists,
    NoSuchConflict,
    NotFound,
    PayloadError,
    PayloadTooLarge,
    ReplicaClosed,
    StorageError,
)

_STATUS: list[tuple[type[CrdtmemError], int]] = [
    (AccessDenied, 403),
    (NotFound, 404),
    (MemoryDeleted, 409),
    (NoSuchConflict, 409),
    (MemoryExists, 409),
    (BehindHorizon, 409),
    (PayloadTooLarge, 413),
    (LimitExceeded, 413),
    (ClockSkewError, 422),
    (PayloadError, 400),
    (InvalidInput, 400),
    (StorageError, 503),
    (ReplicaClosed, 503),
]


def status_for(error: CrdtmemError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def error_response(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def limit_response(limit: str, maximum: int, message: str) -> web.Response:
    """413 for a request past one of the bounds of crdtmem.limits, naming it (``limit``, ``max``)."""
    body = {"error": "LimitExceeded", "message": message, "limit": limit, "max": maximum}
    return web.json_response(body, status=413)


def from_exception(error: CrdtmemError) -> web.Response:
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        seconds = str(max(1, int(retry_after + 0.999)))
        body = {"error": type(error).__name__, "message": str(error), "retry_after": round(retry_after, 3)}
        return web.json_response(body, status=429, headers={"Retry-After": seconds})
    if isinstance(error, LimitExceeded):
        return limit_response(error.limit, error.maximum, str(error))
    return error_response(status_for(error), type(error).__name__, str(error))
