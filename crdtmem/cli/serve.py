"""``crdtmem serve``: run one replica as a node until SIGINT/SIGTERM.

The peer token comes from ``--peer-token``, ``--peer-token-file`` or ``$CRDTMEM_PEER_TOKEN``, in that
order. A token on the command line can be read by every user of the machine (``ps``, ``/proc``), so
the file or the environment is the safer place; ``--peer-token`` still works, with a warning.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..access import TokenTable
from ..bus import BusSettings, Layout
from ..bus.partitions import parse_set
from ..engine.replica import Replica
from ..errors import CrdtmemError, IndexUnavailable, InvalidInput, StoreLocked, StoreUnreadable
from ..index import IndexSettings
from ..limits import Limits
from ..server.loopshare import LOOP_SHARE
from ..server.node import Node, PeerConfig
from ..store.sqlite import Synchronous
from ..sync.settings import LinkSettings
from .logs import LogFormat, configure_logging

log = logging.getLogger("crdtmem.serve")

EXIT_CANNOT_SERVE = 1
"""The address cannot be bound (in use, not allowed)."""
EXIT_INVALID = 2
"""The arguments, the tokens file or the database's replica id are wrong."""
EXIT_DB_IN_USE = 3
"""Another running replica has the database file open (its lock is held)."""
EXIT_DB_UNREADABLE = 4
"""The database file cannot be opened (not an SQLite file, or damaged where the schema lives)."""
EXIT_INDEX_UNAVAILABLE = 5
"""The search index cannot be opened (a Qdrant server unreachable or refusing, index files)."""


@dataclass
class ServeOptions:
    db: str | None
    replica_id: str | None = None
    host: str = "127.0.0.1"
    port: int = 8700
    peers: list[str] = field(default_factory=list)
    peer_token: str | None = None
    channels: list[str] = field(default_factory=list)
    tokens: str | None = None
    mode: Literal["eager", "lazy"] = "eager"
    interval: float = 1.0
    write_rate: float = 200.0
    write_burst: float = 400.0
    delta_rate: float = 2_000.0
    byte_rate: float = 8.0 * 1024 * 1024
    loop_share: float = LOOP_SHARE
    synchronous: Synchronous = "FULL"
    slow_after: float = 10.0
    ack_timeout: float = 10.0
    index: bool = True
    engine: str | None = None
    embedder: str = "hashing"
    index_collection: str | None = None
    qdrant_api_key: str | None = None
    log_level: str = "info"
    log_format: LogFormat = "text"
    access_log: bool = True
    bus: list[str] = field(default_factory=list)
    bus_replicas: int = 1
    bus_principal: str = "user:bus"
    bus_creds: str | None = None
    bus_layout: Layout | None = None
    bus_delivery: Literal["eager", "lazy"] = "eager"
    bus_batch_interval: float = 1.0
    bus_pull: bool = False
    bus_request_rate: float = 20.0
    bus_serve_partitions: frozenset[int] | None = None
    """The layout's partitions this node serves (``--bus-serve-partitions``); None: all."""
    """Streams before the defaults (``--bus-layout FILE``); None: the defaults only."""
    limits: Limits = field(default_factory=Limits)
    compact_every: float | None = None
    lease_hours: float = 24 * 7
    retention_hours: float | None = None


def main(args: argparse.Namespace) -> int:
    """``crdtmem serve`` from parsed arguments; returns the exit code."""
    configure_logging(args.log_level, args.log_format)
    if args.no_access_log:
        logging.getLogger("crdtmem.access").setLevel(logging.WARNING)
    try:
        peer_token = resolve_peer_token(args.peer_token, args.peer_token_file)
        qdrant_api_key = read_secret_file(args.qdrant_api_key_file, "--qdrant-api-key-file")
        limits = Limits.parse(args.limit)
        count = args.bus_partitions
        layout: Layout | None
        if args.bus_layout:
            layout = Layout.load(args.bus_layout, replicas=args.bus_replicas, partitions=count)
        else:
            layout = Layout.of(replicas=args.bus_replicas, partitions=count) if count else None
        served = None
        if args.bus_serve_partitions:
            try:
                served = parse_set(args.bus_serve_partitions, layout.partitions if layout else 0)
            except ValueError as exc:
                raise InvalidInput(f"--bus-serve-partitions: {exc}") from None
    except InvalidInput as exc:
        print(f"crdtmem serve: {exc}", file=sys.stderr)
        return EXIT_INVALID
    options = ServeOptions(
        db=args.db,
        replica_id=args.replica_id,
        host=args.host,
        port=args.port,
        peers=args.peer,
        peer_token=peer_token,
        channels=args.channel,
        tokens=args.tokens,
        mode=args.mode,
        interval=args.interval,
        write_rate=args.write_rate,
        write_burst=args.write_burst,
        delta_rate=args.delta_rate,
        byte_rate=args.byte_rate,
        loop_share=args.loop_share,
        synchronous=args.synchronous,
        slow_after=args.slow_after,
        ack_timeout=args.ack_timeout,
        index=args.index,
        engine=args.engine,
        embedder=args.embedder,
        index_collection=args.index_collection,
        qdrant_api_key=qdrant_api_key,
        log_level=args.log_level,
        log_format=args.log_format,
        access_log=not args.no_access_log,
        bus=[url.strip() for url in (args.bus or "").split(",") if url.strip()],
        bus_replicas=args.bus_replicas,
        bus_principal=args.bus_principal,
        bus_creds=args.bus_creds,
        bus_layout=layout,
        bus_delivery=args.bus_delivery,
        bus_batch_interval=args.bus_batch_interval,
        bus_pull=args.bus_pull,
        bus_request_rate=args.bus_request_rate,
        bus_serve_partitions=served,
        limits=limits,
        compact_every=args.compact_every,
        lease_hours=args.lease_hours,
        retention_hours=args.retention_hours,
    )
    try:
        asyncio.run(serve(options, freeze_heap=True))
    except StoreLocked as exc:
        print(f"crdtmem serve: {exc}", file=sys.stderr)
        return EXIT_DB_IN_USE
    except IndexUnavailable as exc:
        print(f"crdtmem serve: the search index: {exc} (serve --no-index runs without it)", file=sys.stderr)
        return EXIT_INDEX_UNAVAILABLE
    except StoreUnreadable as exc:
        print(f"crdtmem serve: {exc}", file=sys.stderr)
        return EXIT_DB_UNREADABLE
    except CrdtmemError as exc:
        print(f"crdtmem serve: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"crdtmem serve: cannot serve: {exc}", file=sys.stderr)
        return EXIT_CANNOT_SERVE
    return 0


def freeze_startup_heap() -> None:
    """Keep what the node holds once it serves (modules, classes, the search engine's client: ~70,000
    objects) out of the cycle collector's full collections (``gc.freeze``). A full collection walks
    every tracked object and holds the event loop meanwhile: 80-95 ms with a startup heap of that
    kind on the shared 2-core machine under load, ~5 ms with it frozen (``docs/benchmarks.md``,
    bench_hostile). What the node makes later is collected as before; what was frozen lives as long
    as the process anyway."""
    gc.collect()
    gc.freeze()


def resolve_peer_token(given: str | None, file: str | None) -> str | None:
    """The token this node presents to its peers: ``--peer-token``, else the first line of
    ``--peer-token-file``, else ``$CRDTMEM_PEER_TOKEN``, else none."""
    if given is not None and file is not None:
        raise InvalidInput("give --peer-token or --peer-token-file, not both")
    if given is not None:
        log.warning(
            "--peer-token is visible to every user of this machine (ps); "
            "prefer --peer-token-file or $CRDTMEM_PEER_TOKEN"
        )
        return given
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read --peer-token-file {file}: {exc}") from None
        token = text.strip()
        if not token or "\n" in token:
            raise InvalidInput(f"--peer-token-file {file} must hold one token on one line")
        return token
    return os.environ.get("CRDTMEM_PEER_TOKEN") or None


def read_secret_file(file: str | None, flag: str) -> str | None:
    """The one-line secret in ``file`` (None: no file given)."""
    if file is None:
        return None
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {flag} {file}: {exc}") from None
    secret = text.strip()
    if not secret or "\n" in secret:
        raise InvalidInput(f"{flag} {file} must hold one line")
    return secret


def index_settings(options: ServeOptions) -> IndexSettings | None:
    """The node's index settings; a Qdrant server's URL, API key and collection default to
    ``$CRDTMEM_QDRANT_URL``, ``$CRDTMEM_QDRANT_API_KEY`` and ``$CRDTMEM_QDRANT_COLLECTION``."""
    if not options.index:
        return None
    return IndexSettings.from_env(
        engine=options.engine,
        embedder=options.embedder,
        collection=options.index_collection,
        api_key=options.qdrant_api_key,
    )


async def serve(
    options: ServeOptions, *, ready: asyncio.Event | None = None, freeze_heap: bool = False
) -> None:
    replica = Replica(
        options.db if options.db not in (None, ":memory:") else None,
        replica_id=options.replica_id,
        channels=options.channels or None,
        synchronous=options.synchronous,
        index=index_settings(options),
        limits=options.limits,
        lease_ms=int(options.lease_hours * 3_600_000),
        retention_ms=None if options.retention_hours is None else int(options.retention_hours * 3_600_000),
    )
    node = Node(
        replica,
        host=options.host,
        port=options.port,
        peers=[
            PeerConfig(url, token=options.peer_token, mode=options.mode, interval=options.interval)
            for url in options.peers
        ],
        tokens=TokenTable.load(options.tokens) if options.tokens else None,
        write_rate=options.write_rate,
        write_burst=options.write_burst,
        delta_rate=options.delta_rate,
        byte_rate=options.byte_rate,
        loop_share=options.loop_share,
        settings=LinkSettings(
            slow_after=options.slow_after,
            ack_timeout=options.ack_timeout,
            max_frame_bytes=options.limits.payload_bytes,
        ),
        bus=BusSettings(
            options.bus,
            layout=options.bus_layout or Layout.of(replicas=options.bus_replicas),
            creds=options.bus_creds,
            delivery=options.bus_delivery,
            batch_interval_s=options.bus_batch_interval,
            pull_on_start=options.bus_pull,
            request_rate=options.bus_request_rate,
            request_burst=2 * options.bus_request_rate,
            partitions=options.bus_serve_partitions,
        )
        if options.bus
        else None,
        bus_principal=options.bus_principal,
        compact_every=options.compact_every,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with node:
        if freeze_heap:  # the process is the node's (crdtmem serve), not a caller's
            freeze_startup_heap()
        # one machine-readable line on stdout (tests and scripts read it), the rest is logged
        print(json.dumps({"event": "serving", "replica_id": replica.id, "url": node.url}), flush=True)
        log.info(
            "replica %s serving at %s (%s); %d peer(s). Ctrl-C to stop.",
            replica.id,
            node.url,
            f"tokens from {options.tokens}" if options.tokens else "open, loopback only",
            len(options.peers),
            extra={"event": "serving", "replica_id": replica.id, "url": node.url, "peers": options.peers},
        )
        if ready is not None:
            ready.set()
        await stop.wait()
