"""``POST /v1/search``: memories by meaning, limited to what the caller may read.

Body: ``{"query": str, "user_id"?, "tenant_id"?, "kind"?, "topic"?, "tags"?: [str], "limit"?: int,
"include_conflicted"?: bool, "filters"?: {...}}`` (``filters`` is mem0's form of the same scope
keys). Answer: ``{"results": [{"memory": Memory, "score": float}], "count": int}``.

Scope is enforced twice: the caller's filters go to the engine, and so do its readable channels when
they are plain names; for wildcard grants (``user:*:memories``) hits are checked one by one, with
over-fetching so a page is still full.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..access import may_read_memory
from ..errors import InvalidInput
from .auth import PRINCIPAL

if TYPE_CHECKING:
    from .context import NodeContext

_FIELDS = {"query", "user_id", "tenant_id", "kind", "topic", "tags", "limit", "include_conflicted", "filters"}


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
        exact = None if any("*" in p for p in principal.read) else list(principal.read)
        kwargs: dict[str, Any] = {
            key: body[key] for key in ("user_id", "tenant_id", "kind", "topic") if body.get(key) is not None
        }
        results = await node.replica.search(
            query,
            tags=tags,
            limit=limit if exact is not None or "*" in principal.read else min(limit * 4, 1000),
            include_conflicted=include_conflicted,
            filters=filters,
            channels=exact,
            **kwargs,
        )
        visible = [r for r in results if may_read_memory(principal, r.memory.channels)][:limit]
        return web.json_response(
            {
                "results": [{"memory": r.memory.to_dict(), "score": r.score} for r in visible],
                "count": len(visible),
            }
        )

    return [web.post("/v1/search", search)]
