"""Map errors to HTTP responses in one place: status code plus ``{"error": code, "message": text}``."""

from __future__ import annotations

from aiohttp import web

from ..access import AccessDenied
from ..errors import (
    ClockSkewError,
    CrdtmemError,
    InvalidInput,
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
    (PayloadTooLarge, 413),
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


def from_exception(error: CrdtmemError) -> web.Response:
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        seconds = str(max(1, int(retry_after + 0.999)))
        return error_response(429, type(error).__name__, str(error), **{"Retry-After": seconds})
    return error_response(status_for(error), type(error).__name__, str(error))
