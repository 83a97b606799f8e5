"""Folding a stream behind the same horizon rule as the log: what every node holds leaves the stream.

The log folds entries every peer acknowledged (:mod:`crdtmem.engine.compaction`); a stream folds
the messages every consumer acknowledged, with the same lease::

    floor(consumer) = the stream's last sequence   if it has nothing pending or unacknowledged
                      its ack floor                otherwise
    fold through      min(floor of every consumer that holds the horizon)

A node's consumer (``crdtmem-...``) that is behind and has acknowledged nothing within the lease
(its node is away) stops holding the horizon: it is deleted, so that when its node comes back it
finds a new consumer on a stream that no longer begins at 1 and catches up from document states
(:mod:`crdtmem.bus.gaps`, :mod:`crdtmem.bus.states`). (Deleting it matters: a purge moves every
consumer's ack floor past what it purged, which would hide the hole from that node.) Any other
consumer (an operator's archiver, say) always holds the horizon. A stream nobody consumes is kept.

``js.purge_stream(stream, seq=floor + 1)`` then removes every message below ``floor + 1``. A new
node binding its consumer while a purge runs sees the jump in its first batch and asks for states.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("crdtmem.bus")

NODE_CONSUMER = "crdtmem-"
"""Consumers of crdtmem nodes are named ``crdtmem-{replica id}`` (:func:`crdtmem.bus.consumer_name`)."""


@dataclass
class Folded:
    """What folding one stream did."""

    stream: str
    purged: int = 0
    """Messages removed."""
    first_seq: int = 0
    """The stream's first sequence afterwards."""
    dropped_consumers: list[str] = field(default_factory=list)
    """Consumers of nodes away for longer than the lease, deleted (they catch up from states)."""


async def fold_stream(
    js: Any, stream: str, *, lease_s: float, now: datetime.datetime | None = None
) -> Folded:
    """Purge ``stream`` through the floor every consumer that holds the horizon has reached."""
    now = now or datetime.datetime.now(datetime.UTC)
    state = (await js.stream_info(stream)).state
    first, last = int(state.first_seq), int(state.last_seq)
    floors: list[int] = []
    stale: list[str] = []
    for info in await _consumers(js, stream):
        caught_up = not info.num_pending and not info.num_ack_pending
        floor = last if caught_up else _seq(info.ack_floor)
        idle = (now - _last_active(info)).total_seconds()
        if not caught_up and info.name.startswith(NODE_CONSUMER) and idle > lease_s:
            stale.append(info.name)
            continue
        floors.append(floor)
    folded = Folded(stream, first_seq=first)
    if not floors:
        return folded  # no node consumes it (or only nodes away past their lease): keep it all
    for name in stale:
        await js.delete_consumer(stream, name)
        log.warning(
            "deleted consumer %s on %s: behind, and idle for longer than the lease; its node catches "
            "up from document states when it returns",
            name,
            stream,
            extra={"event": "bus_consumer_dropped"},
        )
        folded.dropped_consumers.append(name)
    upto = min(floors)
    if upto + 1 > first:
        await js.purge_stream(stream, seq=upto + 1)
        after = (await js.stream_info(stream)).state
        folded.purged = _purged(state, after)
        folded.first_seq = int(after.first_seq)
        if folded.purged:
            log.info("folded stream %s through sequence %d (%d messages)", stream, upto, folded.purged)
    return folded


async def _consumers(js: Any, stream: str) -> list[Any]:
    out: list[Any] = []
    while True:
        page = await js.consumers_info(stream, offset=len(out) or None)
        out.extend(page)
        if len(page) < 256:  # the server's page size
            return out


def _purged(before: Any, after: Any) -> int:
    """The messages a purge removed, from the stream's state before and after it.

    Nodes publish while a fold runs: the messages that came in between (past ``before``'s last
    sequence, so never purged) are taken out of the difference, or a fold racing writes counts
    fewer than nothing (and a negative count is refused by the metric the node adds it to). A
    message deleted meanwhile (an erasure) counts as purged; a stream made again meanwhile starts
    its sequences over, hence the floor at 0.
    """
    arrived = int(after.last_seq) - int(before.last_seq)
    return max(0, int(before.messages) + arrived - int(after.messages))


def _seq(info: Any) -> int:
    return int(info.stream_seq) if info is not None else 0


def _last_active(info: Any) -> datetime.datetime:
    """When the consumer last acknowledged or was delivered anything (or was made)."""
    times: list[datetime.datetime] = [info.created]
    for seq in (info.ack_floor, info.delivered):
        if seq is not None and seq.last_active is not None:
            times.append(seq.last_active)
    return max(t if t.tzinfo is not None else t.replace(tzinfo=datetime.UTC) for t in times)
