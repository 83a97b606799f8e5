"""A node's connection to the NATS JetStream bus: streams, the outbox publisher and the consumers.

    async with BusClient(replica, BusSettings(["nats://127.0.0.1:4222"])) as bus:
        ...   # bus.ready, bus.status()

In the background it connects (retrying with full-jitter backoff while no server answers; once
connected, nats-py reconnects across the cluster's servers by itself), makes sure every stream of
the layout exists with the subjects the layout gives it, binds one durable pull consumer per stream
filtered to the replica's channels, and runs the publisher (:mod:`crdtmem.bus.outbox`) and the
consumers (:mod:`crdtmem.bus.consumer`). Whatever ends a session (a server gone for longer than a
request, a stream refused) is logged, counted, and the session starts over; local writes never wait
for the bus: they are acknowledged once durable and published when the bus is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from ..access import OPEN, Principal
from ..engine.replica import Replica
from ..errors import BusError, CrdtmemError
from ..metrics import Metrics
from ..rates import RateLimiter
from ..store.base import VersionVector
from .consumer import StreamConsumer
from .erase import StreamEraser
from .fold import Folded, fold_stream
from .gaps import Gaps
from .outbox import Delivery, Outbox
from .partitions import check_served
from .pull import Pulled, PullServer, pull, pull_subject
from .requests import admit
from .states import Needs, StatesServer, StatesUnavailable, fetch_states, states_subject
from .subjects import Layout, StreamSpec

log = logging.getLogger("crdtmem.bus")


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


class BusClient:
    """Keeps ``replica`` connected to the bus (module docstring). ``start()``/``stop()`` or ``async with``."""

    def __init__(self, replica: Replica, settings: BusSettings, metrics: Metrics | None = None):
        check_served(settings.partitions, settings.layout.partitions)
        self.replica = replica
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.outbox: Outbox | None = None
        self.consumers: dict[str, StreamConsumer] = {}
        self.connected = False
        self.ready = False
        """Connected, streams checked, consumers bound: messages flow both ways."""
        self.last_error: str | None = None
        self.attempts = 0
        self.caught_up = asyncio.Event()
        """Set whenever every consumer has drained its stream (cleared when messages arrive)."""
        self.needs = Needs(replica)
        """What the streams dropped before this node received it (:mod:`crdtmem.bus.states`)."""
        self.gaps = Gaps(self.needs)
        self.states_server: StatesServer | None = None
        self.pull_server: PullServer | None = None
        self.limiter = RateLimiter(settings.request_rate, settings.request_burst)
        """States and pull requests per requesting node and key (:mod:`crdtmem.bus.requests`)."""
        self.eraser: StreamEraser | None = None
        self._erase_unlisten: Callable[[], None] | None = None
        self._js: Any = None
        self._task: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], None] | None = None
        self._nc: Any = None
        self._rng = random.Random()

    async def start(self) -> BusClient:
        if self._task is not None:
            return self
        self.outbox = Outbox(
            self.replica,
            self.settings.layout,
            self.metrics,
            mark_interval=self.settings.mark_interval_s,
            delivery=self.settings.delivery,
            batch_max=self.settings.publish_batch,
        )
        self.needs.load([spec.name for spec in self.settings.layout.streams])
        self.eraser = StreamEraser(self.replica, self.settings.layout, self.outbox, self.metrics)
        self.replica.compaction.holds.append(self._unpublished)  # the log keeps what the bus lacks
        self._erase_unlisten = self.replica.on_commit(self._on_erase_commit)
        self._unlisten = self.replica.on_commit(self.outbox.on_commit)
        self._task = asyncio.create_task(self._run(), name="crdtmem-bus")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.outbox is not None:
            await self.outbox.settle()
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._erase_unlisten is not None:
            self._erase_unlisten()
            self._erase_unlisten = None
        if self._unpublished in self.replica.compaction.holds:
            self.replica.compaction.holds.remove(self._unpublished)

    async def __aenter__(self) -> BusClient:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def status(self) -> dict[str, Any]:
        outbox = self.outbox
        return {
            "servers": list(self.settings.servers),
            "connected": self.connected,
            "ready": self.ready,
            "connected_url": self._server(),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "publish_lag": outbox.lag() if outbox is not None else None,
            "behind": self.needs.behind(),
            "states_served": self.states_server.served if self.states_server is not None else 0,
            "pull_pages_served": self.pull_server.served if self.pull_server is not None else 0,
            "delivery": self.settings.delivery,
            "published": outbox.published if outbox is not None else 0,
            "consumers": {
                name: {"lag": c.lag, "consumed": c.consumed} for name, c in sorted(self.consumers.items())
            },
        }

    def _server(self) -> str | None:
        url = getattr(self._nc, "connected_url", None)
        return f"nats://{url.netloc}" if url is not None else None

    # -- the session loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            self.attempts += 1
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (CrdtmemError, nats.errors.Error, OSError, TimeoutError) as exc:
                _reraise_if_cancelled()
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.inc("crdtmem_bus_errors_total", kind=type(exc).__name__)
                failures += 1
                level = logging.WARNING if failures == 1 or isinstance(exc, BusError) else logging.DEBUG
                log.log(level, "bus session ended, retrying: %s", self.last_error)
            else:
                failures = 0
            finally:
                self.connected = self.ready = False
                self.caught_up.clear()
            cap = min(self.settings.retry_cap, self.settings.retry_base * 2 ** min(failures, 16))
            await asyncio.sleep(self._rng.uniform(0, cap))

    async def _session(self) -> None:
        settings = self.settings
        options: dict[str, Any] = {}
        if settings.user is not None:
            options.update(user=settings.user, password=settings.password)
        if settings.token is not None:
            options["token"] = settings.token
        if settings.creds is not None:
            options["user_credentials"] = settings.creds

        async def quiet(exc: Exception) -> None:  # nats-py reports every failed reconnect here
            log.debug("nats: %s", exc)

        closing = False

        async def on_disconnect() -> None:
            self.connected = False
            if not closing:
                log.info("bus disconnected; reconnecting", extra={"event": "bus_disconnected"})

        async def on_reconnect() -> None:
            self.connected = True
            log.info("bus reconnected to %s", self._server(), extra={"event": "bus_reconnected"})

        nc = await nats.connect(
            servers=settings.servers,
            name=f"crdtmem-{self.replica.id}",
            connect_timeout=max(1, int(settings.connect_timeout)),
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=quiet,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            **options,
        )
        self._nc = nc
        if self.outbox is not None:  # a lazy batch travels in one message
            self.outbox.max_bytes = int(nc.max_payload) // 2
        try:
            self.connected = True
            self.metrics.inc("crdtmem_bus_connects_total")
            js = nc.jetstream(timeout=settings.publish_timeout)
            for spec in settings.layout.streams:
                await self._ensure_stream(js, spec)
            subs = await self._bind_consumers(js)
            await self._serve_states(nc, js)
            self.ready = True
            self.last_error = None
            log.info(
                "bus connected: %s, %d stream(s), consuming %s",
                self._server(),
                len(settings.layout.streams),
                ", ".join(sorted(subs)),
                extra={"event": "bus_connected"},
            )
            tasks = [asyncio.create_task(self._publish_loop(js), name="crdtmem-bus-publish")]
            tasks.append(asyncio.create_task(self._fill_loop(nc), name="crdtmem-bus-states"))
            tasks.append(asyncio.create_task(self._erase_loop(js), name="crdtmem-bus-erase"))
            self._js = js
            if settings.pull_on_start:  # pages first; the consumers, bound already, then read the rest
                await self._pull_once()
            tasks += [asyncio.create_task(self._consume(js, name, sub)) for name, sub in subs.items()]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._nc = self._js = None
            closing = True
            # bounded, and never waiting on a close that ignores its cancellation
            close = asyncio.ensure_future(nc.close())
            _, late = await asyncio.wait({close}, timeout=2.0)
            if late:
                log.warning("closing the bus connection took over 2 s; left behind")

    async def _ensure_stream(self, js: Any, spec: StreamSpec) -> None:
        subjects = self.settings.layout.stream_subjects(spec)
        try:
            info = await js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            config = api.StreamConfig(
                name=spec.name,
                subjects=subjects,
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                num_replicas=spec.replicas,
                duplicate_window=self.settings.duplicate_window_s,
                max_age=spec.max_age_s,
                max_bytes=spec.max_bytes,
            )
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                raise BusError(f"the bus refused stream {spec.name} ({', '.join(subjects)}): {exc}") from exc
            log.info("created stream %s (%s, %d replica(s))", spec.name, ", ".join(subjects), spec.replicas)
            return
        if sorted(info.config.subjects or []) != sorted(subjects):
            raise BusError(
                f"stream {spec.name} holds subjects {info.config.subjects}, but this node's bus layout "
                f"gives it {subjects}: every node of a fleet needs the same layout (docs/scale-out.md)"
            )

    async def _bind_consumers(self, js: Any) -> dict[str, Any]:
        assert self.outbox is not None
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
            self.consumers[stream] = StreamConsumer(
                self.replica,
                self.outbox,
                self.settings.principal,
                self.metrics,
                stream=stream,
                prefix=self.settings.layout.prefix,
                partitions=self.settings.layout.partitions,
            )
        return subs

    async def _publish_loop(self, js: Any) -> None:
        assert self.outbox is not None
        outbox = self.outbox
        timeout = self.settings.publish_timeout

        async def publish(subject: str, data: bytes, msg_id: str, stream: str) -> bool:
            future = await js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id}, stream=stream)
            ack = await asyncio.wait_for(future, timeout)
            return bool(ack.duplicate)

        failures = 0
        outbox.wake.set()  # a new session publishes whatever the last one left behind the marks
        lazy, first = self.settings.delivery == "lazy", True
        while True:
            await outbox.wake.wait()
            if lazy and not first:  # what commits meanwhile joins the batches; the log holds it all
                await asyncio.sleep(self.settings.batch_interval_s)
            first = False
            outbox.wake.clear()
            try:
                await outbox.publish_pending(publish)
                failures = 0
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                _reraise_if_cancelled()
                # the marks stayed behind: publish again (the stream drops what it already has)
                outbox.wake.set()
                failures += 1
                self.metrics.inc("crdtmem_bus_publish_errors_total", kind=type(exc).__name__)
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "publishing to the bus failed, retrying: %s: %s",
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(self._rng.uniform(0, min(self.settings.retry_cap, 0.1 * 2**failures)))

    async def _consume(self, js: Any, stream: str, sub: Any) -> None:
        consumer = self.consumers[stream]
        while True:
            try:
                batch = await sub.fetch(self.settings.batch, timeout=1.0)
            except TimeoutError:  # nothing to fetch (nats-py raises its own or asyncio's)
                _reraise_if_cancelled()
                consumer.lag = 0
                if all(c.lag == 0 for c in self.consumers.values()):
                    self.caught_up.set()
                continue
            self.caught_up.clear()
            await self.gaps.seen(js, stream, batch)  # a hole is recorded before anything past it is acked
            started = time.perf_counter()
            await consumer.handle(batch)
            elapsed = (time.perf_counter() - started) * 1e3
            log.debug("applied %d message(s) from %s in %.1f ms", len(batch), stream, elapsed)

    # -- document states for nodes behind their stream (crdtmem.bus.states) ----------------------

    async def _serve_states(self, nc: Any, js: Any) -> None:
        durable = consumer_name(self.replica.id)

        async def floor(stream: str) -> int | None:
            if stream not in self.consumers:
                return None
            last = int((await js.stream_info(stream)).state.last_seq)
            info = await js.consumer_info(stream, durable)
            if not info.num_pending and not info.num_ack_pending:
                return last  # everything on its channels through the last sequence read above
            return int(info.ack_floor.stream_seq) if info.ack_floor is not None else 0

        def admitted(requester: str, op: str) -> None:
            admit(self.limiter, self.metrics, requester, op)

        server = StatesServer(
            self.replica,
            self.settings.layout,
            self.settings.principal,
            self.needs,
            floor,
            max_bytes=int(nc.max_payload),
            admit=admitted,
            metrics=self.metrics,
            partitions=self.settings.partitions,
        )

        async def handle(msg: Any) -> None:
            try:
                await server.handle(msg)
                self.metrics.inc("crdtmem_bus_states_requests_total")
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.warning("could not answer a states request: %s: %s", type(exc).__name__, exc)

        layout = self.settings.layout
        await nc.subscribe(states_subject(layout), cb=handle)
        await nc.subscribe(states_subject(layout, self.replica.id), cb=handle)
        self.states_server = server

        puller = PullServer(
            self.replica,
            layout,
            self.settings.principal,
            self.limiter,
            self.metrics,
            rights_of=self.settings.rights_of,
            max_bytes=int(nc.max_payload),
        )

        async def answer(msg: Any) -> None:
            await puller.handle(nc, msg)
            self.metrics.inc("crdtmem_bus_pull_requests_total")

        # offers and pages on subscriptions of their own: nats-py runs one callback at a time per
        # subscription, so a flood of offers queues behind cheap refusals, not behind pages
        await nc.subscribe(pull_subject(layout), cb=answer)
        await nc.subscribe(pull_subject(layout, self.replica.id), cb=answer)
        self.pull_server = puller

    async def pull(self, channels: list[str] | None = None) -> Pulled:
        """Pull what the fleet holds beyond this node's version vectors for ``channels`` (None: all
        of this node's), from the node that holds the most (:mod:`crdtmem.bus.pull`), and apply it
        through the bus principal's path. Raises BusError while the bus is not connected, and
        TooManyRequests when the fleet refused this node for its rate."""
        nc = self._nc
        if nc is None or not self.connected:
            raise BusError("the bus is not connected: nothing can be pulled now")
        settings = self.settings
        pulled = await pull(
            nc,
            self.replica,
            settings.layout,
            settings.principal,
            channels,
            wait=settings.pull_wait_s,
            timeout=settings.states_timeout_s,
            partitions=settings.partitions,
        )
        self.metrics.inc("crdtmem_bus_pulled_total")
        return pulled

    async def _pull_once(self) -> None:
        try:
            await self.pull()
        except CrdtmemError as exc:  # the stream and its consumer fill the gap anyway
            _reraise_if_cancelled()
            log.warning("pulling since this node's vectors failed: %s: %s", type(exc).__name__, exc)

    async def _fill_loop(self, nc: Any) -> None:
        needs = self.needs
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
                        self.replica,
                        self.settings.layout,
                        self.settings.principal,
                        stream,
                        need,
                        wait=self.settings.states_wait_s,
                        timeout=self.settings.states_timeout_s,
                        partitions=self.settings.partitions,
                    )
                except (StatesUnavailable, CrdtmemError) as exc:
                    failures += 1
                    needs.reason[stream] = str(exc)
                    self.metrics.inc("crdtmem_bus_states_failures_total")
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    log.log(level, "not ready: %s (retrying)", exc, extra={"event": "bus_states_unavailable"})
                    continue
                failures = 0
                self.metrics.inc("crdtmem_bus_states_fetched_total")
                needs.filled(stream, covered)
            if needs.need:
                cap = min(self.settings.retry_cap, self.settings.retry_base * 2 ** min(failures, 16))
                await asyncio.sleep(self._rng.uniform(cap / 2, cap))

    # -- folding the streams, erasing from them (crdtmem.bus.fold, crdtmem.bus.erase) ------------

    async def fold(self) -> list[Folded]:
        """Purge from every stream what every node's consumer holds (the lease of the replica's
        compaction decides when an idle node stops holding it); [] while the bus is not ready."""
        js = self._js
        if js is None or not self.ready:
            return []
        lease_s = self.replica.compaction.lease_ms / 1000
        folded = []
        for spec in self.settings.layout.streams:
            try:
                done = await fold_stream(js, spec.name, lease_s=lease_s)
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("folding stream %s failed: %s: %s", spec.name, type(exc).__name__, exc)
                continue
            self.metrics.inc("crdtmem_bus_folded_messages_total", done.purged)
            folded.append(done)
        return folded

    def _unpublished(self, channel: str) -> VersionVector:
        """How far the bus holds ``channel``'s log: compaction must not fold past it."""
        return self.outbox.marks.get(channel, {}) if self.outbox is not None else {}

    def _on_erase_commit(self, deltas: list[Any]) -> None:
        if self.eraser is not None:
            self.eraser.on_commit(deltas)

    async def _erase_loop(self, js: Any) -> None:
        eraser = self.eraser
        assert eraser is not None

        async def publish(subject: str, data: bytes, msg_id: str, stream: str) -> bool:
            ack = await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}, stream=stream)
            return bool(ack.duplicate)

        while True:
            await asyncio.sleep(ERASE_EVERY_S)
            if eraser.pending:
                try:
                    await eraser.run(js, publish)
                except (nats.errors.Error, TimeoutError) as exc:
                    _reraise_if_cancelled()
                    log.warning("taking forgotten memories out of the stream failed, retrying: %s", exc)


ERASE_EVERY_S = 0.5
"""How often a node looks for forgotten memories whose content is still in a stream."""


def _reraise_if_cancelled() -> None:
    """nats-py turns a cancellation inside some calls into its own errors (a stalled publish_async
    raises TooManyStalledMsgsError, a fetch on a closed connection ConnectionClosedError): a task
    being cancelled must stop, not take that for a failure to retry."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
