"""A node's durable consumer on one stream: messages in, the same apply path as any peer's deltas.

::

    a batch (crdtmem.bus.standing) ─▶ each message: its subject names a channel, its data is a
      crdtmem.deltas payload carrying a delta logged on that channel (else: refused, counted,
      terminated)
      ─▶ the outbox told of the arriving deltas ─▶ Replica.apply_payload(sender = the bus
      principal, isolate=True): authenticated, origin-checked, signature-verified, authorized per
      delta, committed durably ─▶ ack

Every message is untrusted, whoever published it. The bus principal's rights come from the node's
tokens file (``docs/scale-out.md``): the origins it may introduce, unsigned or not, and the channels
it may write. A message is acknowledged only after the node's own durable commit (applied, stored
as waiting for its dependencies, or decided against); a failure of the commit leaves it
unacknowledged and JetStream delivers it again. Duplicates (redelivery, two nodes publishing one
entry past the duplicate window, the node's own entries coming back) are counted and dropped by the
engine's triage; out-of-order deltas wait for their dependencies like any peer's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..access import Principal
from ..engine import payload as wire
from ..engine.replica import Replica
from ..errors import ClockSkewError, CrdtmemError, InvalidInput, PayloadError
from ..metrics import Metrics
from .gaps import pending_count
from .outbox import Outbox
from .subjects import channel_of, entries_named

log = logging.getLogger("crdtmem.bus")

RETRY_S = 5.0
"""A message stamped too far ahead, or whose commit failed, is delivered again after this long."""


@dataclass
class _Message:
    msg: Any
    payload: wire.Payload
    channel: str


class StreamConsumer:
    """Applies one stream's messages to ``replica``; ``handle(batch)`` returns once each message was
    acknowledged, terminated (refused for good) or left for redelivery."""

    def __init__(
        self,
        replica: Replica,
        outbox: Outbox,
        principal: Principal,
        metrics: Metrics,
        *,
        stream: str,
        prefix: str,
        partitions: int = 0,
    ):
        self.replica = replica
        self.outbox = outbox
        self.principal = principal
        self.metrics = metrics
        self.stream = stream
        self.prefix = prefix
        self.partitions = partitions
        """The layout's partition count (its subjects carry the partition token)."""
        self.lag = 0
        """Messages of this stream the consumer has not been delivered yet (JetStream's count)."""
        self.consumed = 0

    async def handle(self, batch: list[Any]) -> None:
        good: list[_Message] = []
        try:
            for msg in batch:
                item = await self._check(msg)
                if item is not None:
                    good.append(item)
            if batch:
                self.lag = pending_count(batch[-1])
            # a delta appears once per apply (a copy on another channel's subject goes in the next one)
            groups: list[tuple[list[_Message], set[str]]] = []
            for item in good:
                uids = {d.uid for d in item.payload.deltas}
                for group, taken in groups:
                    if not uids & taken:
                        group.append(item)
                        taken |= uids
                        break
                else:
                    groups.append(([item], uids))
            for group, _ in groups:
                await self._apply(group)
        finally:
            for item in good:
                for delta in item.payload.deltas:
                    self.outbox.arrived(item.channel, delta)

    async def _check(self, msg: Any) -> _Message | None:
        try:
            channel = channel_of(msg.subject, self.prefix, self.partitions)
            held = _entries_named(msg, channel)
            if held is not None and all(self.replica.store.is_logged(channel, held[0], s) for s in held[1]):
                # an entry stored here already (this node's own, a redelivery, one that came
                # another way): whatever the message holds, it cannot add to it
                self.metrics.inc("crdtmem_bus_duplicates_total")
                await msg.ack()
                self.consumed += 1
                return None
            payload = wire.decode(msg.data, max_bytes=self.replica.max_payload_bytes)
            for delta in payload.deltas:
                if channel not in delta.seqs:
                    raise InvalidInput(f"delta {delta.uid} on {msg.subject} is not logged on {channel}")
        except (InvalidInput, PayloadError) as exc:
            self.metrics.inc("crdtmem_bus_messages_refused_total", reason=type(exc).__name__)
            log.warning("refused a message on %s: %s: %s", msg.subject, type(exc).__name__, exc)
            await msg.term()
            return None
        for delta in payload.deltas:
            self.outbox.arriving(channel, delta)
        return _Message(msg, payload, channel)

    async def _apply(self, group: list[_Message]) -> None:
        deltas = [d for m in group for d in m.payload.deltas]
        keys: dict[str, bytes] = {}
        for m in group:
            keys.update(m.payload.keys)
        merged = wire.Payload(group[0].payload.sender, deltas, {}, keys)
        try:
            with self.metrics.timer("crdtmem_apply_seconds", source="bus"):
                result = await self.replica.apply_payload(merged, sender=self.principal, isolate=True)
        except CrdtmemError as exc:
            if len(group) == 1:
                await self._refuse(group[0], exc)
                return
            for item in group:  # one by one: one message cannot hold the others back
                await self._apply([item])
            return
        self.metrics.inc("crdtmem_bus_deltas_applied_total", result.applied)
        self.metrics.inc("crdtmem_bus_duplicates_total", result.duplicates)
        if result.rejected:
            self.metrics.inc("crdtmem_deltas_rejected_total", result.rejected, peer="bus")
        for item in group:
            await item.msg.ack()
        self.consumed += len(group)

    async def _refuse(self, item: _Message, exc: CrdtmemError) -> None:
        reason = type(exc).__name__
        self.metrics.inc("crdtmem_bus_messages_refused_total", reason=reason)
        if isinstance(exc, (PayloadError, InvalidInput)) and not isinstance(exc, ClockSkewError):
            log.warning("refused a message on %s: %s: %s", item.msg.subject, reason, exc)
            await item.msg.term()
            return
        # a stamp ahead of this clock may be fine later; a failed commit wrote nothing: again later
        log.warning("message on %s not applied, delivered again later: %s: %s", item.msg.subject, reason, exc)
        await item.msg.nak(delay=RETRY_S)


def _entries_named(msg: Any, channel: str) -> tuple[str, list[int]] | None:
    """``(origin, seqs)`` the message id names, if it is one for ``channel`` (:func:`entries_named`)."""
    msg_id = (msg.headers or {}).get("Nats-Msg-Id")
    return entries_named(msg_id, channel, msg.data) if isinstance(msg_id, str) else None
