"""A node's durable pull consumers: bound on the server at the start of each session, then read.

One durable consumer per stream of the layout, filtered to the node's channels (or to the
partitions it serves), acknowledging explicitly. When the node's channels changed since the
consumer was made, the consumer is made again and reads its stream from the start (what was
applied already comes again as duplicates), so a newly subscribed channel misses nothing. Each
consumer's loop takes up to ``BusSettings.batch`` messages at a time from a pull request kept
standing on the server (:mod:`crdtmem.bus.standing`), checks them for holes
(:mod:`crdtmem.bus.gaps`) and hands them to its :class:`~crdtmem.bus.consumer.StreamConsumer`,
which acknowledges each after the commit that holds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import nats.js.errors
from nats.js import api

from ..engine.replica import Replica
from ..errors import BusError
from ..metrics import Metrics
from .cancel import reraise_if_cancelled
from .consumer import StreamConsumer
from .gaps import Gaps
from .outbox import Outbox
from .settings import BusSettings, consumer_name
from .standing import StandingPull

log = logging.getLogger("crdtmem.bus")


class Consumers:
    """The node's consumers by stream (``by_stream``) and whether all of them have drained their
    streams (``caught_up``, cleared when messages arrive)."""

    def __init__(self, replica: Replica, settings: BusSettings, metrics: Metrics, gaps: Gaps):
        self.replica = replica
        self.settings = settings
        self.metrics = metrics
        self.gaps = gaps
        self.by_stream: dict[str, StreamConsumer] = {}
        self.caught_up = asyncio.Event()
        self._applying = 0
        """Consumers between taking a batch and its acks: not caught up, whatever their lag says (a
        batch's lag is known before it is applied)."""

    async def bind(self, js: Any, outbox: Outbox) -> dict[str, Any]:
        """Make (or keep) the durable consumer on each stream and bind a pull subscription to it;
        returns the subscriptions by stream."""
        durable = consumer_name(self.replica.id)
        filters = self.settings.layout.filters(self.replica.channels, self.settings.partitions)
        subs: dict[str, Any] = {}
        for stream, subjects in filters.items():
            config = api.ConsumerConfig(
                durable_name=durable,
                name=durable,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.settings.ack_wait_s,
                max_deliver=-1,
                max_ack_pending=20_000,
                filter_subjects=subjects if len(subjects) > 1 else None,
                filter_subject=subjects[0] if len(subjects) == 1 else None,
            )
            try:
                info = await js.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                info = None
            if info is not None:
                had = sorted(info.config.filter_subjects or [info.config.filter_subject or ""])
                if had != subjects:
                    # channels changed: read the stream from its start again (what was applied
                    # already is a duplicate), so a newly subscribed channel misses nothing
                    log.info("consumer %s on %s: channels changed, re-reading the stream", durable, stream)
                    await js.delete_consumer(stream, durable)
                    info = None
            if info is None:
                try:
                    await js.add_consumer(stream, config)
                except nats.js.errors.BadRequestError as exc:
                    raise BusError(f"the bus refused consumer {durable} on {stream}: {exc}") from exc
            subs[stream] = await js.pull_subscribe_bind(durable=durable, stream=stream)
            await self.gaps.bound(js, stream, info)
            self.by_stream[stream] = StreamConsumer(
                self.replica,
                outbox,
                self.settings.principal,
                self.metrics,
                stream=stream,
                prefix=self.settings.layout.prefix,
                partitions=self.settings.layout.partitions,
            )
        return subs

    async def run(self, js: Any, stream: str, sub: Any) -> None:
        """Take batches from ``stream``'s consumer and apply them, until cancelled."""
        consumer = self.by_stream[stream]
        standing = StandingPull(sub, self.settings.batch)
        while True:
            try:
                batch = await standing.next_batch()
            except TimeoutError:  # nothing came for a second
                reraise_if_cancelled()
                consumer.lag = 0
                if not self._applying and all(c.lag == 0 for c in self.by_stream.values()):
                    self.caught_up.set()
                continue
            self.caught_up.clear()
            self._applying += 1
            try:
                await self.gaps.seen(js, stream, batch)  # a hole is recorded before anything past it is acked
                started = time.perf_counter()
                await consumer.handle(batch)
            finally:
                self._applying -= 1
            elapsed = (time.perf_counter() - started) * 1e3
            log.debug("applied %d message(s) from %s in %.1f ms", len(batch), stream, elapsed)
