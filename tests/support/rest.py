"""A small synchronous-looking REST client for tests (aiohttp underneath) and convergence checks."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp


class HttpError(AssertionError):
    """A response with a status >= 400 that the caller did not expect (``status`` says which)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class Api:
    """Calls one node's REST API with an optional bearer token."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None = None):
        self.session = session
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        async with self.session.request(method, self.url + path, json=body, headers=self.headers) as response:
            text = await response.text()
            if expect is not None:
                assert response.status == expect, f"{method} {path}: {response.status} {text}"
            elif response.status >= 400:
                raise HttpError(f"{method} {path}: {response.status} {text}", response.status)
            return json.loads(text) if text else None

    async def add(self, content: Any, **fields: Any) -> dict[str, Any]:
        return await self.call("POST", "/v1/memories", {"content": content, **fields}, expect=201)

    async def get(self, memory_id: str) -> dict[str, Any] | None:
        path = f"/v1/memories/{urllib.parse.quote(memory_id, safe='')}"
        async with self.session.get(self.url + path, headers=self.headers) as r:
            return await r.json() if r.status == 200 else None

    async def patch(self, memory_id: str, **fields: Any) -> dict[str, Any]:
        return await self.call("PATCH", f"/v1/memories/{urllib.parse.quote(memory_id, safe='')}", fields)

    async def memories(self) -> list[dict[str, Any]]:
        body = await self.call("GET", "/v1/memories?include_deleted=true")
        return body["memories"]

    async def conflicts(self) -> list[dict[str, Any]]:
        return (await self.call("GET", "/v1/conflicts"))["conflicts"]

    async def status(self) -> dict[str, Any]:
        return await self.call("GET", "/v1/status")


def canonical(memories: list[dict[str, Any]]) -> str:
    """Materialized state without replica-local fields, as canonical JSON."""
    stripped = []
    for memory in sorted(memories, key=lambda m: m["id"]):
        stripped.append({k: v for k, v in memory.items() if k not in ("version",)})
    return json.dumps(stripped, sort_keys=True)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "") -> None:
    """Until ``check()`` holds, else AssertionError after ``timeout`` seconds. The timeout only guards
    against a hang: it is not a claim about speed, so it is long enough for a loaded machine where
    processes start, connect and catch up many times slower than alone."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        await asyncio.sleep(0.05)


async def converged(apis: list[Api]) -> bool:
    states = [canonical(await api.memories()) for api in apis]
    conflicts = [json.dumps(await api.conflicts(), sort_keys=True) for api in apis]
    return len(set(states)) == 1 and len(set(conflicts)) == 1
