"""A fault-injecting proxy between replicas, at the level of HTTP requests and WebSocket messages.

It forwards pulls, pushes and REST calls, and pumps replication WebSocket messages both ways, with
configurable faults: drop, duplicate, delay, reorder, and cutting connections mid-transfer (HTTP
responses truncated, WebSockets closed after a random number of messages). ``heal()`` removes every
fault; ``cut_all()`` drops every open connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass

import aiohttp
from aiohttp import web


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    """Max random delay per message, seconds."""
    reorder: float = 0.0
    """Probability that a message is held back and sent after the next one."""
    cut: float = 0.0
    """Per message / per HTTP response probability of cutting the connection."""


class FaultProxy:
    def __init__(self, target: str, faults: Faults | None = None, seed: int = 0):
        self.target = target.rstrip("/")
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.stats = {"dropped": 0, "duplicated": 0, "reordered": 0, "cut": 0, "forwarded": 0}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sockets: set[web.WebSocketResponse | aiohttp.ClientWebSocketResponse] = set()
        self.url = ""
        self.partitioned = False

    def heal(self) -> None:
        """No more faults, and no partition."""
        self.faults = Faults()
        self.partitioned = False

    async def partition(self) -> None:
        """Cut every connection and refuse new ones until :meth:`heal`."""
        self.partitioned = True
        await self.cut_all()

    async def cut_all(self) -> None:
        for ws in list(self._sockets):
            await ws.close()

    async def start(self) -> FaultProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        await self.cut_all()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.partitioned:
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPBadGateway()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type", "last-event-id")
        }
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, headers)
        assert self._session is not None
        body = await request.read()
        try:
            async with self._session.request(
                request.method, self.target + request.path_qs, data=body, headers=headers
            ) as upstream:
                data = await upstream.read()
                status, content_type = upstream.status, upstream.content_type
                passthrough = {
                    k: v
                    for k, v in upstream.headers.items()
                    if k.lower().startswith("x-crdtmem") or k.lower() == "retry-after"
                }
        except aiohttp.ClientError:
            raise web.HTTPBadGateway() from None
        if self.faults.delay:
            await asyncio.sleep(self.rng.uniform(0, self.faults.delay))
        if data and self.rng.random() < self.faults.cut:
            # a response cut mid-transfer: announce the full length, send half, hang up
            self.stats["cut"] += 1
            response = web.StreamResponse(
                status=status, headers={"Content-Length": str(len(data)), **passthrough}
            )
            response.content_type = content_type
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            if request.transport is not None:
                request.transport.close()
            return response
        self.stats["forwarded"] += 1
        return web.Response(status=status, body=data, content_type=content_type, headers=passthrough)

    async def _websocket(self, request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
        assert self._session is not None
        downstream = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await downstream.prepare(request)
        url = self.target.replace("http://", "ws://") + request.path_qs
        try:
            upstream = await self._session.ws_connect(url, headers=headers, max_msg_size=64 * 1024 * 1024)
        except aiohttp.ClientError:
            await downstream.close()
            return downstream
        self._sockets.update((downstream, upstream))
        pumps = [
            asyncio.create_task(self._pump(downstream, upstream)),
            asyncio.create_task(self._pump(upstream, downstream)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await upstream.close()
            await downstream.close()
            self._sockets.discard(upstream)
            self._sockets.discard(downstream)
        return downstream

    async def _pump(self, source, sink) -> None:  # type: ignore[no-untyped-def]
        held: bytes | None = None
        first = True
        async for message in source:
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            data: bytes = message.data
            if first:  # never fault the hello: it only delays the test
                first = False
                await sink.send_bytes(data)
                continue
            faults = self.faults
            if self.rng.random() < faults.cut:
                self.stats["cut"] += 1
                return
            if self.rng.random() < faults.drop:
                self.stats["dropped"] += 1
                continue
            if faults.delay:
                await asyncio.sleep(self.rng.uniform(0, faults.delay))
            if held is None and self.rng.random() < faults.reorder:
                held = data
                self.stats["reordered"] += 1
                continue
            await sink.send_bytes(data)
            self.stats["forwarded"] += 1
            if self.rng.random() < faults.duplicate:
                self.stats["duplicated"] += 1
                await sink.send_bytes(data)
            if held is not None:
                await sink.send_bytes(held)
                held = None
        if held is not None and not sink.closed:
            await sink.send_bytes(held)
