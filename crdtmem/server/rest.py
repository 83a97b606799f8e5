"""Placeholder: routes are being written."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .node import Node


def routes(node: Node) -> list[web.RouteDef]:
    return []
