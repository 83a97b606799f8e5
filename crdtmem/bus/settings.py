"""How a node uses the bus (:class:`BusSettings`) and the name of its durable consumers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ..access import OPEN, Principal
from .outbox import Delivery
from .subjects import Layout


@dataclass
class BusSettings:
    """How a node uses the bus. Every node of a fleet must give the same ``layout``."""

    servers: list[str]
    layout: Layout = field(default_factory=Layout.of)
    principal: Principal = OPEN
    """The rights of whatever arrives from the bus (a node sets it from its tokens file)."""
    batch: int = 256
    """Messages fetched (and applied in one commit) at a time."""
    publish_timeout: float = 5.0
    ack_wait_s: float = 10.0
    """A message delivered but not acknowledged (its node died mid-batch) is delivered again after
    this long."""
    duplicate_window_s: float = 120.0
    """How long a stream remembers message ids (JetStream deduplication)."""
    mark_interval_s: float = 0.2
    """How often the outbox marks are written (one durable transaction); a crash republishes at
    most what the bus acknowledged since, and the duplicate window drops the copies."""
    connect_timeout: float = 2.0
    retry_base: float = 0.2
    retry_cap: float = 5.0
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    """A NATS credentials file (accounts with JWTs)."""
    states_wait_s: float = 2.0
    """How long a node behind its stream waits for another node to offer document states."""
    states_timeout_s: float = 30.0
    """How long it waits for one states page."""
    delivery: Delivery = "eager"
    """eager: each committed entry is published at once, one message per entry; lazy: every
    ``batch_interval_s`` the entries committed since go out in batches, one message per channel and
    origin holding up to ``publish_batch`` entries (runs of one memory's deltas merged)."""
    batch_interval_s: float = 1.0
    publish_batch: int = 256
    pull_on_start: bool = False
    """Pull what the other nodes hold beyond this node's version vectors (:mod:`crdtmem.bus.pull`)
    at the start of every session, before the consumers (bound already) read the streams."""
    pull_wait_s: float = 0.5
    """How long a pull waits for the other nodes' offers."""
    request_rate: float = 20.0
    """States and pull requests a second that a node answers per requesting node (bursts of
    ``request_burst``); past it a request is refused with the seconds to wait."""
    request_burst: float = 40.0
    partitions: frozenset[int] | None = None
    """The partitions of the layout this node serves (``--bus-serve-partitions``; None: all): its
    consumers filter on one wildcard subject per partition, and it pulls and serves states of
    channels in them only."""
    rights_of: Callable[[str], Principal | None] | None = None
    """The rights of a requesting node's principal (``replica:{id}`` in the tokens file), if it
    has an entry; a pull from a node without one gets what the bus principal may read."""


def consumer_name(replica_id: str) -> str:
    """The durable consumer of a replica (consumer names cannot hold '.')."""
    if "." not in replica_id:
        return f"crdtmem-{replica_id}"
    digest = hashlib.sha256(replica_id.encode()).hexdigest()[:8]
    return f"crdtmem-{replica_id.replace('.', '_')}-{digest}"
