"""A peer client: keeps one replica in sync with one remote replica's server.

On every (re)connect it first *pulls* what it missed over HTTP, in bounded pages (resumable: each page
is applied and advances the version vectors, so a cut transfer resumes where it stopped), then opens
the replication WebSocket and switches to push. A link that drops is retried with jittered
exponential backoff; a peer that is down never blocks local writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import msgpack

from ..access import Principal
from ..engine import payload as wire
from ..engine.catchup import decode_states
from ..engine.replica import Replica
from ..engine.statepages import VERSION as STATES_VERSION
from ..errors import CrdtmemError
from ..metrics import Metrics
from .link import Link
from .protocol import MAX_RETRY_AFTER, FrameError, decode_frame, encode_frame, payload_version
from .settings import LinkSettings

log = logging.getLogger("crdtmem.peer")


@dataclass
class Backoff:
    """Full-jitter exponential backoff: a random delay in [0, min(cap, base * 2**attempt)]."""

    base: float = 0.1
    cap: float = 10.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next(self) -> float:
        delay = self.rng.uniform(0, min(self.cap, self.base * 2**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class PeerState:
    url: str
    connected: bool = False
    peer_id: str | None = None
    mode: str = "eager"
    attempts: int = 0
    last_error: str | None = None
    last_connected: float | None = None
    pulled_deltas: int = 0


class PeerClient:
    """Sync ``replica`` with the server at ``url`` for ``channels``. ``start()``/``stop()`` or
    ``async with``."""

    def __init__(
        self,
        replica: Replica,
        url: str,
        *,
        channels: list[str],
        token: str | None = None,
        mode: Literal["eager", "lazy"] = "eager",
        interval: float = 1.0,
        page: int = 1000,
        metrics: Metrics | None = None,
        backoff: Backoff | None = None,
        settings: LinkSettings | None = None,
        rights: Callable[[str], Principal | None] | None = None,
    ):
        self.replica = replica
        self.rights = rights
        """The rights of the peer here, by its replica id: what it serves (pull) and pushes (link) is
        applied with them. None: this node runs open and trusts its peers with every origin."""
        self.url = url.rstrip("/")
        self.channels = channels
        self.token = token
        self.page = page
        self.metrics = metrics or Metrics()
        self.backoff = backoff or Backoff()
        self.settings = settings or LinkSettings(mode=mode, interval=interval)
        self.settings.mode = mode
        self.settings.interval = interval
        self.state = PeerState(self.url, mode=mode)
        self.link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.synced = asyncio.Event()
        """Set after every completed pull (the peer caught up to the server's state at that time)."""

    async def start(self) -> PeerClient:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._session = aiohttp.ClientSession(headers=headers)
        self._task = asyncio.create_task(self._run(), name=f"crdtmem-peer-{self.url}")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> PeerClient:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            self.state.attempts += 1
            reason = "stopped"
            try:
                pulled = await self.pull()
                await self._push_link(pulled)
                reason = "the link closed"
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError, CrdtmemError) as exc:
                reason = self.state.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.inc("crdtmem_peer_errors_total", peer=self.url, kind=type(exc).__name__)
            finally:
                if self.state.connected:
                    failures = 0
                    _log_peer(logging.INFO, "peer %s disconnected: %s", self, reason, "peer_disconnected")
                elif reason != "stopped":
                    failures += 1  # the first failure in a row is a warning; retries are debug
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    _log_peer(level, "peer %s unreachable, retrying: %s", self, reason, "peer_unreachable")
                self.state.connected = False
                self.link = None
            await asyncio.sleep(self.backoff.next())

    async def pull(self) -> int:
        """Pull pages until caught up; returns the number of deltas applied."""
        assert self._session is not None
        applied, waits = 0, 0
        states: dict[str, Any] = {}  # the states pages' cursor, while catching up from states
        while True:
            vectors = self.replica.version_vectors(self.channels)
            request = {"channels": self.channels, "vectors": vectors, "limit": self.page, "v": wire.VERSION}
            body = msgpack.packb(
                {**request, "states": True, "states_v": STATES_VERSION, "from": self.replica.id, **states},
                use_bin_type=True,
            )
            async with self._session.post(f"{self.url}/v1/sync/pull", data=body) as response:
                wait = await _retry_after(response) if response.status == 429 else None
                if wait is not None and waits < MAX_PULL_WAITS:
                    waits += 1
                else:
                    if response.status != 200:
                        text = (await response.content.read(1024)).decode(errors="replace")
                        raise PeerRefused(f"pull refused: HTTP {response.status}: {text}")
                    data = await response.read()
                    more = response.headers.get("X-Crdtmem-More") == "1"
                    is_states = response.headers.get("X-Crdtmem-States") == "1"
            if wait is not None:  # a rate or the server's event-loop share: wait it out, ask again
                self.metrics.inc("crdtmem_peer_waits_total", peer=self.url)
                await asyncio.sleep(wait)
                continue
            waits = 0
            if is_states:  # behind the peer's horizon: documents' states, page by page (protocol §7.10)
                page = decode_states(data, max_bytes=self.replica.max_payload_bytes)
                result = await self.replica.apply_states(data, sender=self._sender(page.sender))
                applied += result.applied
                states = {}
                if page.next is not None:  # the cursor proves the covers are the server's own
                    states = {"after": page.next, "covers": page.covers, "cursor": page.cursor}
                if not states and self.replica.behind(
                    self.channels, self.replica.version_vectors(self.channels)
                ):
                    return applied  # its states were refused here: nothing more to gain this round
                continue
            received = wire.decode(data, max_bytes=self.replica.max_payload_bytes)
            with self.metrics.timer("crdtmem_apply_seconds", source="pull"):
                result = await self.replica.apply_payload(
                    received, sender=self._sender(received.sender), isolate=True
                )
            applied += result.applied
            self.state.pulled_deltas += result.applied
            if not more:
                self.synced.set()
                return applied
            if self.replica.version_vectors(self.channels) == vectors:
                # the server pages from our vectors: unchanged, it would send this page again. What
                # is missing waits for dependencies this peer has not logged; the link goes on
                return applied

    async def _push_link(self, pulled: int) -> None:
        assert self._session is not None
        async with self._session.ws_connect(
            f"{self.url}/v1/sync/ws", max_msg_size=self.settings.max_frame_bytes, heartbeat=20.0
        ) as ws:
            await ws.send_bytes(
                encode_frame(
                    "hello",
                    replica=self.replica.id,
                    channels=self.channels,
                    mode=self.settings.mode,
                    interval_ms=int(self.settings.interval * 1000),
                    vectors=self.replica.version_vectors(self.channels),
                    versions=list(wire.VERSIONS),
                )
            )
            message = await ws.receive(timeout=10.0)
            if message.type != aiohttp.WSMsgType.BINARY:
                raise PeerRefused(f"server closed the link before hello ({message.type.name})")
            frame = decode_frame(message.data)
            if frame.type == "error":
                raise PeerRefused(f"{frame.body['code']}: {frame.body['message']}")
            if frame.type != "hello":
                raise FrameError(f"expected hello, got {frame.type}")
            hello = frame.body
            self.link = Link(
                self.replica,
                ws,
                peer_id=hello["replica"],
                push_channels=list(hello.get("accept", [])),
                accept_channels=hello["channels"],
                peer_vectors=hello.get("vectors", {}),
                settings=self.settings,
                metrics=self.metrics,
                on_pull_requested=self._pull_and_resume,
                sender=self._sender(hello["replica"]),
                version=payload_version(hello),
            )
            self.state.connected = True
            self.state.peer_id = hello["replica"]
            self.state.last_connected = time.time()
            self.state.last_error = None
            self.backoff.reset()
            self.metrics.inc("crdtmem_ws_connections_total", side="client")
            log.info(
                "peer %s connected: replica %s, %s mode, %d deltas pulled on the way",
                self.url,
                self.state.peer_id,
                self.settings.mode,
                pulled,
                extra={
                    "event": "peer_connected",
                    "peer": self.url,
                    "peer_id": self.state.peer_id,
                    "mode": self.settings.mode,
                    "pulled": pulled,
                    "channels": self.channels,
                },
            )
            await self.link.run()

    def _sender(self, peer_id: str) -> Principal | None:
        if self.rights is None:
            return None
        principal = self.rights(peer_id)
        if principal is None:
            raise PeerRefused(
                f"peer {peer_id!r} has no entry (principal replica:{peer_id}) in this node's tokens file, "
                "so nothing it sends is applied here; add one with the origins it may relay"
            )
        return principal

    def _pull_and_resume(self) -> None:
        if self._side_tasks:
            return  # a pull for an earlier ``mode`` frame is under way; it resumes for both

        async def pull_and_resume() -> None:
            link = self.link
            self.state.mode = "pull"
            with contextlib.suppress(aiohttp.ClientError, OSError, CrdtmemError):
                await self.pull()
                if link is not None and not link.ws.closed:
                    await link.send_resume(self.replica.version_vectors(self.channels))
                    self.state.mode = self.settings.mode

        task = asyncio.get_running_loop().create_task(pull_and_resume())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)


MAX_PULL_WAITS = 20
"""Answers of ``429`` in a row a pull waits out (each for its ``retry_after``) before it gives up
and the link retries with its backoff."""


async def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    """The seconds a ``429`` asks to wait (its JSON body's ``retry_after``, else ``Retry-After``),
    bounded by :data:`MAX_RETRY_AFTER`; None if it names none."""
    seconds: object = None
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        body = json.loads(await response.content.read(4096))
        if isinstance(body, dict):
            seconds = body.get("retry_after")
    if seconds is None:
        with contextlib.suppress(TypeError, ValueError):
            seconds = float(response.headers.get("Retry-After", ""))
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds >= 0:
        return None
    return min(float(seconds), MAX_RETRY_AFTER)


class PeerRefused(CrdtmemError):
    """The remote server refused this peer (bad token, forbidden channel, wrong replica id)."""


def _log_peer(level: int, message: str, peer: PeerClient, reason: str, event: str) -> None:
    extra = {"event": event, "peer": peer.url, "peer_id": peer.state.peer_id, "reason": reason}
    log.log(level, message, peer.url, reason, extra=extra)
