"""The request/reply side of a bus session: what a node answers for the others, and what it asks.

- :func:`serve` subscribes the node's :class:`~crdtmem.bus.states.StatesServer` and
  :class:`~crdtmem.bus.pull.PullServer` to the fleet-wide and node-addressed request subjects,
  each request admitted per verified requesting node by the rate limiter
  (:mod:`crdtmem.bus.requests`);
- :func:`fill_loop` fetches document states from another node for every stream this node is
  behind (:class:`~crdtmem.bus.states.Needs`), retrying with jittered backoff while none can serve.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import nats.errors

from ..engine.replica import Replica
from ..errors import CrdtmemError
from ..metrics import Metrics
from ..rates import RateLimiter
from .consumer import StreamConsumer
from .pull import PullServer, pull_subject
from .requests import admit
from .settings import BusSettings, consumer_name
from .states import Needs, StatesServer, StatesUnavailable, fetch_states, states_subject

log = logging.getLogger("crdtmem.bus")


async def serve(
    nc: Any,
    js: Any,
    replica: Replica,
    settings: BusSettings,
    consumers: dict[str, StreamConsumer],
    needs: Needs,
    limiter: RateLimiter,
    metrics: Metrics,
) -> tuple[StatesServer, PullServer]:
    """Answer states and pull requests on ``nc`` for as long as it is open."""
    durable = consumer_name(replica.id)

    async def floor(stream: str) -> int | None:
        if stream not in consumers:
            return None
        last = int((await js.stream_info(stream)).state.last_seq)
        info = await js.consumer_info(stream, durable)
        if not info.num_pending and not info.num_ack_pending:
            return last  # everything on its channels through the last sequence read above
        return int(info.ack_floor.stream_seq) if info.ack_floor is not None else 0

    def admitted(requester: str, op: str) -> None:
        admit(limiter, metrics, requester, op)

    states = StatesServer(
        replica,
        settings.layout,
        settings.principal,
        needs,
        floor,
        max_bytes=int(nc.max_payload),
        admit=admitted,
        metrics=metrics,
        partitions=settings.partitions,
    )

    async def handle(msg: Any) -> None:
        try:
            await states.handle(msg)
            metrics.inc("crdtmem_bus_states_requests_total")
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.warning("could not answer a states request: %s: %s", type(exc).__name__, exc)

    layout = settings.layout
    await nc.subscribe(states_subject(layout), cb=handle)
    await nc.subscribe(states_subject(layout, replica.id), cb=handle)

    puller = PullServer(
        replica,
        layout,
        settings.principal,
        limiter,
        metrics,
        rights_of=settings.rights_of,
        max_bytes=int(nc.max_payload),
    )

    async def answer(msg: Any) -> None:
        await puller.handle(nc, msg)
        metrics.inc("crdtmem_bus_pull_requests_total")

    # offers and pages on subscriptions of their own: nats-py runs one callback at a time per
    # subscription, so a flood of offers queues behind cheap refusals, not behind pages
    await nc.subscribe(pull_subject(layout), cb=answer)
    await nc.subscribe(pull_subject(layout, replica.id), cb=answer)
    return states, puller


async def fill_loop(
    nc: Any, replica: Replica, settings: BusSettings, needs: Needs, metrics: Metrics, rng: random.Random
) -> None:
    """Fill every need from another node's document states, until cancelled."""
    failures = 0
    while True:
        needs.changed.clear()
        if not needs.need:
            await needs.changed.wait()
            continue
        for stream, need in sorted(needs.need.items()):
            try:
                covered = await fetch_states(
                    nc,
                    replica,
                    settings.layout,
                    settings.principal,
                    stream,
                    need,
                    wait=settings.states_wait_s,
                    timeout=settings.states_timeout_s,
                    partitions=settings.partitions,
                )
            except (StatesUnavailable, CrdtmemError) as exc:
                failures += 1
                needs.reason[stream] = str(exc)
                metrics.inc("crdtmem_bus_states_failures_total")
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "not ready: %s (retrying)", exc, extra={"event": "bus_states_unavailable"})
                continue
            failures = 0
            metrics.inc("crdtmem_bus_states_fetched_total")
            needs.filled(stream, covered)
        if needs.need:
            cap = min(settings.retry_cap, settings.retry_base * 2 ** min(failures, 16))
            await asyncio.sleep(rng.uniform(cap / 2, cap))
