"""A node: a replica served over HTTP, with peer clients that keep it in sync with other nodes, and
optionally a NATS JetStream bus shared by a fleet of nodes (``docs/scale-out.md``).

    async with Node(Replica("laptop.db", replica_id="laptop"), port=8701,
                    peers=[PeerConfig("http://127.0.0.1:8700", token="...")]) as node:
        ...   # node.url, node.replica, node.status()

    async with Node(Replica("n1.db", replica_id="n1"), bus=BusSettings(["nats://h1:4222"])) as node:
        ...   # node.bus.ready, node.readiness()

Without a tokens table the node runs open (every request may read and write every channel) and
refuses to bind to anything but loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from aiohttp import web

from ..access import Principal, TokenTable
from ..bus import BusClient, BusSettings
from ..engine.replica import Replica
from ..engine.signing import KeyPolicy, encode_key
from ..errors import CrdtmemError, InvalidInput
from ..ids import parse_channels
from ..metrics import Metrics
from ..sync.link import Link
from ..sync.peer import PeerClient
from ..sync.settings import LinkSettings
from .app import build_app
from .auth import RateLimiter, VolumeLimiter
from .loopshare import LOOP_SHARE, LoopShare
from .observe import ACCESS_LOG, AccessLogger
from .runner import NodeRunner

log = logging.getLogger("crdtmem.node")


class RateLimited(CrdtmemError):
    """Too many writes from this principal; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class PeerConfig:
    """A remote node this node keeps in sync with."""

    url: str
    token: str | None = None
    channels: list[str] | None = None
    """Channels to sync with it; None: this replica's subscribed channels."""
    mode: Literal["eager", "lazy"] = "eager"
    interval: float = 1.0


SHUTDOWN_GRACE_S = 5.0
DELTA_RATE = 2_000.0
"""Deltas a second a principal may push (over HTTP and WebSocket frames together), on average. Each
new delta costs a signature verification (0.1 to 1 ms of CPU), so this bounds the share of the
node one token can take."""
BYTE_RATE = 8.0 * 1024 * 1024
"""Bytes a second a principal may send, on average: every request body (REST, search, pull and
push) and inbound WebSocket frames. Reading and decoding a body is work on the event loop whether it
is accepted or refused (a 318 KB JSON body takes ~4 ms to decode before its 20,000 keys can be
counted), so bodies are charged by their size, not only counted as requests."""
VOLUME_BURST_S = 5.0
"""Bursts of deltas and bytes of up to this many seconds of their rate."""
RETRY_AFTER_MAX_S = 3_600.0

BUS_PRINCIPAL = "user:bus"
"""The tokens-file principal whose rights apply to whatever arrives from the bus."""


class Node:
    def __init__(
        self,
        replica: Replica,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        peers: list[PeerConfig] | None = None,
        tokens: TokenTable | None = None,
        write_rate: float = 200.0,
        write_burst: float = 400.0,
        delta_rate: float = DELTA_RATE,
        byte_rate: float = BYTE_RATE,
        loop_share: float = LOOP_SHARE,
        max_body_bytes: int | None = None,
        settings: LinkSettings | None = None,
        bus: BusSettings | None = None,
        bus_principal: str = BUS_PRINCIPAL,
        compact_every: float | None = None,
    ):
        if tokens is None and not _is_loopback(host):
            raise InvalidInput(
                f"refusing to serve on {host} without a tokens file: give --tokens FILE, or bind to "
                "127.0.0.1 (see docs/operating.md)"
            )
        self.replica = replica
        self.host = host
        self.port = port
        self.peer_configs = list(peers or [])
        self.tokens = tokens
        self.limiter = RateLimiter(write_rate, write_burst)
        self.deltas = VolumeLimiter(delta_rate, delta_rate * VOLUME_BURST_S)
        """Deltas per principal, pushed or in WebSocket frames."""
        self.bytes = VolumeLimiter(byte_rate, byte_rate * VOLUME_BURST_S)
        """Bytes of pushes and WebSocket frames per principal."""
        self.loop = LoopShare(loop_share)
        """Event-loop time per principal (:mod:`crdtmem.server.loopshare`)."""
        self.max_body_bytes = max_body_bytes or replica.limits.body_bytes
        self.settings = settings or LinkSettings(max_frame_bytes=replica.limits.payload_bytes)
        self.metrics = Metrics(process=True)
        self.links: set[Link] = set()
        self.peers: list[PeerClient] = []
        self.extensions: dict[str, Any] = {}
        if bus is not None and tokens is not None:
            rights = tokens.rights_of(bus_principal)
            if rights is None:
                raise InvalidInput(
                    f"--bus: the tokens file has no entry for principal {bus_principal!r}, so nothing "
                    "from the bus could be applied here; add one with the channels it may write and the "
                    "origins it may introduce (docs/scale-out.md)"
                )
            bus = dataclasses.replace(bus, principal=rights, rights_of=tokens.rights_of)
        self.bus_settings = bus
        self.bus_principal = bus_principal
        self.bus: BusClient | None = None
        self._runner: web.AppRunner | None = None
        self.compact_every = compact_every
        """Seconds between compactions of the replica's log, and folds of the bus's streams (None:
        never, see Replica.compact and BusClient.fold)."""
        self._compactor: asyncio.Task[None] | None = None
        if tokens is not None:
            replica.resolve_rights = tokens.rights_of
            replica.key_policy = KeyPolicy(dict(tokens.keys), tokens.strict_keys)
        self._gauges()

    async def _compact_loop(self) -> None:
        assert self.compact_every is not None
        while True:
            await asyncio.sleep(self.compact_every)
            try:
                await self._compact_once()
            except CrdtmemError as exc:  # the log keeps everything; try again next time
                log.warning("compaction failed: %s", exc)
            except Exception:  # a bug must not end compaction for the node's lifetime: said, and again
                self.metrics.inc("crdtmem_compaction_errors_total")
                log.exception("compaction failed unexpectedly; trying again in %.1f s", self.compact_every)

    async def _compact_once(self) -> None:
        done = await self.replica.compact()
        self.metrics.inc("crdtmem_compactions_total")
        folded = sum(s for v in done.folded.values() for s in v.values())
        if folded:
            log.info("compaction raised the horizon of %d channel(s)", len(done.folded))
        if self.bus is not None:  # the streams fold with the log (crdtmem.bus.fold)
            await self.bus.fold()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def serving(self) -> bool:
        runner = self._runner
        return runner is not None and bool(runner.sites)

    async def start(self) -> Node:
        await self.replica.start()
        await self.replica.reexamine()  # deltas denied under rights that changed since
        if self.tokens is None:
            log.warning("no tokens file: serving open on loopback %s only", self.host)
        # on stop, requests in flight get SHUTDOWN_GRACE_S to finish (aiohttp's default, 60 s, lets
        # one client that never finishes its body hold a SIGTERM for a minute)
        self._runner = NodeRunner(
            build_app(self),
            access_log=ACCESS_LOG,
            access_log_class=AccessLogger,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_GRACE_S,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        await self.connect_peers()
        await self.connect_bus()
        if self.compact_every:
            self._compactor = asyncio.get_running_loop().create_task(
                self._compact_loop(), name="crdtmem-compact"
            )
        return self

    async def connect_bus(self) -> None:
        """Start publishing to and consuming from the bus, if one is configured."""
        settings = self.bus_settings
        if settings is None or self.bus is not None:
            return
        self.bus = await BusClient(self.replica, settings, self.metrics).start()
        self.extensions["bus"] = self.bus

    async def disconnect_bus(self) -> None:
        if self.bus is not None:
            await self.bus.stop()
            self.extensions.pop("bus", None)
            self.bus = None

    def readiness(self) -> dict[str, Any]:
        bus = self.bus
        if bus is None:
            return {"ready": self.serving, "bus": None}
        behind = bus.needs.behind()  # the stream dropped what this node has not received yet
        return {
            "ready": self.serving and bus.ready and behind is None,
            "bus": {
                "connected": bus.connected,
                "ready": bus.ready,
                "last_error": bus.last_error,
                "behind": behind,
            },
        }

    async def connect_peers(self) -> None:
        """Start syncing with every configured peer (pull first, then push)."""
        if self.peers:
            return
        for config in self.peer_configs:
            channels = config.channels or list(self.replica.channels or [])
            if not channels:
                raise InvalidInput(
                    f"peer {config.url}: name the channels to sync (--channel) for this replica"
                )
            peer = PeerClient(
                self.replica,
                config.url,
                channels=list(parse_channels(channels)),
                token=config.token,
                mode=config.mode,
                interval=config.interval,
                metrics=self.metrics,
                settings=dataclasses.replace(self.settings),
                rights=self._peer_rights if self.tokens is not None else None,
            )
            self.peers.append(await peer.start())

    async def disconnect_peers(self) -> None:
        """Stop syncing with peers, as a device going offline; local writes go on."""
        for peer in self.peers:
            await peer.stop()
        self.peers.clear()

    async def stop(self) -> None:
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
            self._compactor = None
        await self.disconnect_bus()
        await self.disconnect_peers()
        self.replica.feed.close()  # event streams end now instead of at their next poll
        for link in list(self.links):
            await link.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.replica.stop()

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _gauges(self) -> None:
        replica = self.replica
        gauge = self.metrics.gauge
        gauge(
            "crdtmem_pending_deltas",
            "deltas waiting for their causal dependencies, by the principal that delivered them",
            lambda: [
                ((("sender", name),), float(n))
                for name, n in replica.trust_status()["pending_by_sender"].items()
            ],
        )
        gauge(
            "crdtmem_pending_evicted",
            "waiting deltas evicted since start, over a per-sender or per-origin bound or too old",
            lambda: [((), float(replica.trust_status()["pending_evicted"]))],
        )
        gauge(
            "crdtmem_deltas_refused",
            "deltas refused since start, by why: unauthenticated, denied, rejected, clock",
            lambda: [((("reason", k),), float(v)) for k, v in replica.trust_status()["refused"].items()],
        )
        gauge(
            "crdtmem_log_folded_entries",
            "log entries compaction folded into snapshots since start",
            lambda: [((), float(replica.compaction.folded_entries))],
        )
        gauge(
            "crdtmem_erasures",
            "memories forgotten here, and late deltas of forgotten memories taken as stubs, since start",
            lambda: [((("what", k),), float(v)) for k, v in replica.erasure.counts.items()],
        )
        gauge(
            "crdtmem_index_lag_versions",
            "versions committed to the store but not yet in the search index",
            lambda: [((), float(replica.index.lag()))] if replica.index is not None else [],
        )
        gauge(
            "crdtmem_index_points_written",
            "points the search index accepted since start",
            lambda: [((), float(replica.index.points_written))] if replica.index is not None else [],
        )
        gauge(
            "crdtmem_index_points_refused",
            "points the search index refused since start because it held a newer version (a shared "
            "collection: another node wrote a state this node has not merged yet)",
            lambda: [((), float(replica.index.points_refused))] if replica.index is not None else [],
        )
        gauge(
            "crdtmem_index_points_skipped",
            "points a shared search collection already held at the same revision (another node "
            "indexed that state first), left out before embedding",
            lambda: [((), float(replica.index.points_skipped))] if replica.index is not None else [],
        )
        gauge(
            "crdtmem_memories", "memories in this replica's store", lambda: [((), replica.store.doc_count())]
        )
        gauge(
            "crdtmem_memories_quarantined",
            "memories set aside because their stored data does not read back (503 for them)",
            lambda: [((), float(len(replica.quarantine)))],
        )
        gauge(
            "crdtmem_cache_bytes",
            "approximate bytes of the records and documents the replica keeps in memory, by cache "
            "(bounded by Limits.record_cache_bytes and Limits.doc_cache_bytes)",
            lambda: [
                ((("cache", "records"),), float(replica.cache.bytes)),
                ((("cache", "documents"),), float(replica.doc_cache.bytes)),
            ],
        )
        gauge(
            "crdtmem_cache_entries",
            "records and documents the replica keeps in memory, by cache",
            lambda: [
                ((("cache", "records"),), float(len(replica.cache))),
                ((("cache", "documents"),), float(len(replica.doc_cache))),
            ],
        )
        gauge(
            "crdtmem_storage_integrity_problems",
            "problems the integrity check (PRAGMA quick_check) found when the store was opened",
            lambda: [((), float(_problems(replica.storage_status()["integrity"])))],
        )
        gauge(
            "crdtmem_event_subscribers",
            "in-process event feed subscribers",
            lambda: [((), len(replica.feed))],
        )
        gauge(
            "crdtmem_peers_connected",
            "outbound peer links that are up",
            lambda: [((), sum(p.state.connected for p in self.peers))],
        )
        gauge(
            "crdtmem_bus_connected",
            "1 while the NATS bus is connected with its streams and consumers (absent without a bus)",
            lambda: [((), float(self.bus.ready))] if self.bus is not None else [],
        )
        gauge(
            "crdtmem_bus_publish_lag_entries",
            "log entries committed here but not yet acknowledged by the bus",
            lambda: (
                [((), float(self.bus.outbox.lag()))]
                if self.bus is not None and self.bus.outbox is not None
                else []
            ),
        )
        gauge(
            "crdtmem_bus_consumer_lag_messages",
            "messages of a stream not yet delivered to this node's consumer, by stream",
            lambda: (
                [((("stream", name),), float(c.lag)) for name, c in self.bus.consumers.items()]
                if self.bus is not None
                else []
            ),
        )
        gauge(
            "crdtmem_links",
            "inbound replication links (peers connected to this node)",
            lambda: [((), len(self.links))],
        )
        gauge(
            "crdtmem_gc_frozen_objects",
            "objects kept out of the cycle collector's full collections (crdtmem serve freezes its "
            "startup heap once it serves)",
            lambda: [((), float(gc.get_freeze_count()))],
        )

    # -- policy hooks used by the routes ------------------------------------------------------

    def check_rate(self, principal: Principal, cost: float = 1.0) -> None:
        wait = self.limiter.acquire(principal.name, cost)
        if wait > 0:
            self.metrics.inc("crdtmem_rate_limited_total", principal=principal.name)
            raise RateLimited(
                f"{principal.name} is over its write rate ({self.limiter.rate:g}/s); retry in {wait:.2f} s",
                wait,
            )

    def admit_bytes(self, principal: Principal) -> None:
        """RateLimited if ``principal`` is still in debt on its byte rate: checked before a byte of
        a request body is read, so a refused body costs its headers (aiohttp discards the rest)."""
        wait = self.bytes.wait(principal.name)
        if wait > 0:
            self._limited(principal, f"its rate of bytes ({self.bytes.rate:g}/s on average)", wait)

    def admit_loop(self, principal: Principal) -> None:
        """RateLimited if ``principal`` still owes the event loop more than its share while another
        principal is being served (:mod:`crdtmem.server.loopshare`)."""
        wait = self.loop.wait(principal.name)
        if wait > 0:
            share = (
                f"its share of the event loop ({self.loop.share:g} s/s on average while others are served)"
            )
            self._limited(principal, share, wait)

    def _limited(self, principal: Principal, what: str, wait: float) -> NoReturn:
        """Count and raise a refusal of ``principal`` for being over ``what`` (429, ``retry_after``)."""
        self.metrics.inc("crdtmem_rate_limited_total", principal=principal.name)
        message = f"{principal.name} is over {what}; retry in {wait:.2f} s"
        raise RateLimited(message, min(wait, RETRY_AFTER_MAX_S))

    def charge_bytes(self, principal: Principal, size: int) -> None:
        """Charge a body's bytes (after :meth:`admit_bytes`), into debt if need be."""
        self.bytes.charge(principal.name, size)

    def check_volume(self, principal: Principal, *, deltas: int = 0, size: int = 0) -> None:
        """Charge what a push or a frame carries to its principal's delta and byte buckets; over
        either (still in debt from earlier ones), RateLimited and nothing of it is applied."""
        for limiter, amount, what in ((self.bytes, size, "bytes"), (self.deltas, deltas, "deltas")):
            if not amount:
                continue
            wait = limiter.wait(principal.name)
            if wait > 0:
                self.metrics.inc("crdtmem_rate_limited_total", principal=principal.name)
                raise RateLimited(
                    f"{principal.name} is over its rate of {what} ({limiter.rate:g}/s on average); "
                    f"retry in {wait:.2f} s",
                    min(wait, RETRY_AFTER_MAX_S),
                )
            limiter.charge(principal.name, amount)

    def _peer_rights(self, peer_id: str) -> Principal | None:
        """A peer's rights here are those of its replica principal in this node's tokens file."""
        return self.tokens.rights_of(f"replica:{peer_id}") if self.tokens is not None else None

    def link_settings(self, mode: str, interval_ms: int) -> LinkSettings:
        lazy = mode == "lazy"
        return dataclasses.replace(
            self.settings,
            mode="lazy" if lazy else "eager",
            interval=max(interval_ms / 1000, 0.01) if lazy else self.settings.interval,
        )

    def status(self) -> dict[str, Any]:
        replica = self.replica
        channels = list(replica.channels) if replica.channels is not None else replica.store.channels()
        return {
            "replica_id": replica.id,
            "public_key": encode_key(replica.signer.public) if replica.signer is not None else None,
            "url": self.url,
            "channels": channels,
            "subscribed": list(replica.channels) if replica.channels is not None else None,
            "version_vectors": replica.version_vectors(channels),
            "memories": replica.store.doc_count(),
            "pending_deltas": replica.pending_count,
            "trust": {k: v for k, v in replica.trust_status().items() if k != "pending_by_sender"},
            "storage": replica.storage_status(),
            "compaction": {
                **replica.compaction.status(),
                "every_s": self.compact_every,
                "horizon": {c: replica.store.horizon(c) for c in channels},
            },
            "erasure": dict(replica.erasure.counts),
            "event_subscribers": len(replica.feed),
            "peers": [
                {
                    "url": p.url,
                    "peer_id": p.state.peer_id,
                    "connected": p.state.connected,
                    "mode": p.link.mode if p.link is not None else p.state.mode,
                    "lag": p.link.lag() if p.link is not None else None,
                    "in_flight": len(p.link._in_flight) if p.link is not None else 0,
                    "attempts": p.state.attempts,
                    "last_error": p.state.last_error,
                    "direction": "outbound",
                }
                for p in self.peers
            ],
            "links": [
                {
                    "peer_id": s.peer,
                    "mode": s.mode,
                    "lag": s.lag,
                    "in_flight": s.in_flight,
                    "frames_sent": s.frames_sent,
                    "frames_received": s.frames_received,
                    "errors": s.errors,
                    "direction": "inbound",
                }
                for s in (link.snapshot() for link in list(self.links))
            ],
            "index": replica.index.status() if replica.index is not None else None,
            **{name: ext.status() for name, ext in self.extensions.items() if hasattr(ext, "status")},
        }


def _problems(integrity: list[str] | None) -> int:
    return 0 if not integrity or integrity == ["ok"] else len(integrity)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
