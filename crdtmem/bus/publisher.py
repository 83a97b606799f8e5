"""The publishing side of a bus session: the outbox's entries and the erasures onto the streams.

Both loops run for as long as a session is connected and publish through its JetStream context.
Nothing here decides what to publish (:mod:`crdtmem.bus.outbox`, :mod:`crdtmem.bus.erase` do);
these loops decide when, and retry with jittered backoff when the bus fails a publish: the marks
stay behind what the bus acknowledged, so a retry republishes and the stream's duplicate window
drops the copies.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import nats.errors

from ..metrics import Metrics
from .cancel import reraise_if_cancelled
from .erase import StreamEraser
from .outbox import Outbox, PublishOne
from .sendnow import start_publish, write_pending
from .settings import BusSettings

log = logging.getLogger("crdtmem.bus")

ERASE_EVERY_S = 0.5
"""How often a node looks for forgotten memories whose content is still in a stream."""


async def publish_loop(
    nc: Any, js: Any, outbox: Outbox, settings: BusSettings, metrics: Metrics, rng: random.Random
) -> None:
    """Publish what the outbox holds past its marks whenever it wakes (eager), or every
    ``batch_interval_s`` after a wake (lazy). While it runs, own writes may be published from
    their commits (:meth:`Outbox.connect`)."""
    timeout = settings.publish_timeout

    async def publish(subject: str, data: bytes, msg_id: str, stream: str) -> bool:
        future = await js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id}, stream=stream)
        # Hazard: not wait_for, which on Python 3.11 returns a PubAck that lands as the task is
        # cancelled and swallows the cancellation: the loop went on waiting, and stop() with it
        async with asyncio.timeout(timeout):
            ack = await future
        return bool(ack.duplicate)

    outbox.connect(lambda *message: start_publish(js, *message), lambda: write_pending(nc), timeout)
    try:
        await _publishing(outbox, publish, settings, metrics, rng)
    finally:
        outbox.disconnect()


async def _publishing(
    outbox: Outbox, publish: PublishOne, settings: BusSettings, metrics: Metrics, rng: random.Random
) -> None:
    failures = 0
    outbox.wake.set()  # a new session publishes whatever the last one left behind the marks
    lazy, first = settings.delivery == "lazy", True
    while True:
        reraise_if_cancelled()  # a cancellation a nats-py call swallowed still ends the loop
        await outbox.wake.wait()
        if lazy and not first:  # what commits meanwhile joins the batches; the log holds it all
            await asyncio.sleep(settings.batch_interval_s)
        first = False
        outbox.wake.clear()
        try:
            await outbox.publish_pending(publish)
            failures = 0
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            reraise_if_cancelled()
            # the marks stayed behind: publish again (the stream drops what it already has)
            outbox.wake.set()
            failures += 1
            metrics.inc("crdtmem_bus_publish_errors_total", kind=type(exc).__name__)
            log.log(
                logging.WARNING if failures == 1 else logging.DEBUG,
                "publishing to the bus failed, retrying: %s: %s",
                type(exc).__name__,
                exc,
            )
            await asyncio.sleep(rng.uniform(0, min(settings.retry_cap, 0.1 * 2**failures)))


async def erase_loop(js: Any, eraser: StreamEraser) -> None:
    """Every ``ERASE_EVERY_S``, replace the messages of forgotten memories by stubs."""

    async def publish(subject: str, data: bytes, msg_id: str, stream: str) -> bool:
        ack = await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}, stream=stream)
        return bool(ack.duplicate)

    while True:
        await asyncio.sleep(ERASE_EVERY_S)
        if eraser.pending:
            try:
                await eraser.run(js, publish)
            except (nats.errors.Error, TimeoutError) as exc:
                reraise_if_cancelled()
                log.warning("taking forgotten memories out of the stream failed, retrying: %s", exc)
