"""Logging as ``crdtmem serve`` sets it up: one handler on stderr, plain text or JSON lines.

Text lines read ``2026-11-23T19:36:11.263Z INFO crdtmem.access GET /v1/status 200 0.4 ms``. JSON lines
(``--log-format json``, by ``python-json-logger``) carry ``timestamp``, ``level``, ``logger`` and
``message`` plus the structured fields a record has: the access log's ``method``, ``path``,
``status``, ``duration_ms``, ...; a peer line's ``event`` (``peer_connected``, ``peer_disconnected``,
``peer_unreachable``, ``link_connected``, ``link_disconnected``), ``peer``, ``peer_id``, ``reason``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
LEVELS = ("debug", "info", "warning", "error")


def _utc(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class _TextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record)


class _JsonFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record)


def configure_logging(level: str = "info", fmt: LogFormat = "text") -> logging.Handler:
    """Send every log record at ``level`` or above to stderr, as text or JSON lines. Replaces the
    handlers of the root logger; returns the new handler."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            _JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(_TextFormatter("{asctime} {levelname} {name} {message}", style="{"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
