"""``crdtmem serve``: run one replica as a node until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from dataclasses import dataclass, field
from typing import Literal

from ..access import TokenTable
from ..engine.replica import Replica
from ..index import IndexSettings
from ..server.node import Node, PeerConfig
from ..store.sqlite import Synchronous
from ..sync.link import LinkSettings


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
    synchronous: Synchronous = "FULL"
    slow_after: float = 10.0
    ack_timeout: float = 10.0
    index: bool = False
    engine: str | None = None
    embedder: str = "hashing"


async def serve(options: ServeOptions, *, ready: asyncio.Event | None = None) -> None:
    replica = Replica(
        options.db if options.db not in (None, ":memory:") else None,
        replica_id=options.replica_id,
        channels=options.channels or None,
        synchronous=options.synchronous,
        index=IndexSettings(engine=options.engine, embedder=options.embedder) if options.index else None,
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
        settings=LinkSettings(slow_after=options.slow_after, ack_timeout=options.ack_timeout),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with node:
        # one machine-readable line, then human-readable ones; tests and scripts read the first
        print(json.dumps({"event": "serving", "replica_id": replica.id, "url": node.url}), flush=True)
        print(
            f"crdtmem: replica {replica.id} serving at {node.url} "
            f"({'tokens from ' + options.tokens if options.tokens else 'open, loopback only'}); "
            f"{len(options.peers)} peer(s). Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )
        if ready is not None:
            ready.set()
        await stop.wait()
