"""``POST /v1/search``: memories by meaning, limited to what the caller may read.

Body: ``{"query": str, "user_id"?, "tenant_id"?, "kind"?, "topic"?, "tags"?: [str], "limit"?: int,
"include_conflicted"?: bool, "filters"?: {...}, "threshold"?: float, "cursor"?: str}`` (``filters``
is mem0's filter grammar). Answer: ``{"results": [{"memory": Memory, "score": float}], "count",
"total", "next_cursor", "model", "lexical"}``: ``model`` is the embedder that scored, ``lexical``
true when it matches words rather than meaning (the offline default).

Scope is enforced twice: the caller's filters go to the engine, and so do its readable channels when
they are plain names; wildcard grants (``user:*:memories``) select the readable memories in the
store; every hit is checked again before it is answered.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..access import may_read_memory
from ..errors import InvalidInput
from ..index.base import LEXICAL_PREFIX
from .auth import PRINCIPAL
from .paging import offset_cursor

if TYPE_CHECKING:
    from .context import NodeContext

_FIELDS = {
    "query",
    "user_id",
    "tenant_id",
    "kind",
    "topic",
    "tags",
    "limit",
    "include_conflicted",
    "filters",
    "threshold",
    "cursor",
}


def routes(node: NodeContext) -> list[web.RouteDef]:
    async def search(request: web.Request) -> web.StreamResponse:
        principal = request[PRINCIPAL]
        try:  # as bytes: JSON is UTF-8 whatever charset the header names
            body = json.loads(await request.read())
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise InvalidInput(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise InvalidInput(f"unknown fields {unknown}")
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("'query' must be a non-empty string")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
            raise InvalidInput("'limit' must be an int between 1 and 100")
        include_conflicted = body.get("include_conflicted", True)
        if not isinstance(include_conflicted, bool):
            raise InvalidInput("'include_conflicted' must be a boolean")
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidInput("'tags' must be a list of strings")
        filters = body.get("filters")
        if filters is not None and not isinstance(filters, dict):
            raise InvalidInput("'filters' must be an object")
        threshold = body.get("threshold")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1
        ):
            raise InvalidInput("'threshold' must be a number between -1 and 1 (a cosine similarity)")
        cursor = body.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidInput("'cursor' must be the next_cursor of an earlier page")
        offset = offset_cursor({"cursor": cursor} if cursor is not None else {})
        if offset + limit > 1000:
            raise InvalidInput("search pages reach at most the 1000th result")
        exact = None if any("*" in p for p in principal.read) else list(principal.read)
        kwargs: dict[str, Any] = {
            key: body[key] for key in ("user_id", "tenant_id", "kind", "topic") if body.get(key) is not None
        }
        kwargs.update(
            tags=tags,
            include_conflicted=include_conflicted,
            filters=filters,
            channels=exact,
            threshold=threshold,
        )
        if exact is None and "*" not in principal.read:
            kwargs["readable"] = list(principal.read)  # wildcard grants: the store keeps the readable
        results = await node.replica.search(query, limit=limit, offset=offset, **kwargs)
        total = await node.replica.search_count(query, **kwargs)
        visible = [r for r in results if may_read_memory(principal, r.memory.channels)]
        assert node.replica.index is not None
        model = node.replica.index.embedder.model
        return web.json_response(
            {
                "results": [{"memory": r.memory.to_dict(), "score": r.score} for r in visible],
                "count": len(visible),
                "total": total,
                "next_cursor": f"o{offset + limit}" if offset + limit < total else None,
                "model": model,
                "lexical": model.startswith(LEXICAL_PREFIX),
            }
        )

    return [web.post("/v1/search", search)]
