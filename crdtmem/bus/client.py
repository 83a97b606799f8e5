"""A node's connection to the NATS JetStream bus: the session lifecycle that runs everything else.

    async with BusClient(replica, BusSettings(["nats://127.0.0.1:4222"])) as bus:
        ...   # bus.ready, bus.status()

In the background it connects (retrying with full-jitter backoff while no server answers; once
connected, nats-py reconnects across the cluster's servers by itself), makes sure every stream of
the layout exists with the subjects the layout gives it, binds the durable consumers
(:mod:`crdtmem.bus.consuming`), answers the other nodes' requests (:mod:`crdtmem.bus.serving`) and
runs the publisher (:mod:`crdtmem.bus.publisher`). Whatever ends a session (a server gone for longer than a
request, a stream refused) is logged, counted, and the session starts over; local writes never wait
for the bus: they are acknowledged once durable and published when the bus is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from ..engine.replica import Replica
from ..errors import BusError, CrdtmemError
from ..metrics import Metrics
from ..rates import RateLimiter
from ..store.base import VersionVector
from .cancel import reraise_if_cancelled
from .consuming import Consumers
from .erase import StreamEraser
from .fold import Folded, fold_stream
from .gaps import Gaps
from .outbox import Outbox
from .partitions import check_served
from .publisher import erase_loop, publish_loop
from .pull import Pulled, PullServer, pull
from .serving import fill_loop, serve
from .settings import BusSettings
from .states import Needs, StatesServer
from .subjects import StreamSpec

log = logging.getLogger("crdtmem.bus")


class BusClient:
    """Keeps ``replica`` connected to the bus (module docstring). ``start()``/``stop()`` or ``async with``."""

    def __init__(self, replica: Replica, settings: BusSettings, metrics: Metrics | None = None):
        check_served(settings.partitions, settings.layout.partitions)
        self.replica = replica
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.outbox: Outbox | None = None
        self.connected = False
        self.ready = False
        """Connected, streams checked, consumers bound: messages flow both ways."""
        self.last_error: str | None = None
        self.attempts = 0
        self.needs = Needs(replica)
        """What the streams dropped before this node received it (:mod:`crdtmem.bus.states`)."""
        self.gaps = Gaps(self.needs)
        self.consuming = Consumers(replica, settings, self.metrics, self.gaps)
        self.consumers = self.consuming.by_stream
        """The node's consumer on each stream it reads (:mod:`crdtmem.bus.consuming`)."""
        self.caught_up = self.consuming.caught_up
        """Set whenever every consumer has drained its stream (cleared when messages arrive)."""
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
                reraise_if_cancelled()
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
            assert self.outbox is not None
            subs = await self.consuming.bind(js, self.outbox)
            self.states_server, self.pull_server = await serve(
                nc, js, self.replica, settings, self.consumers, self.needs, self.limiter, self.metrics
            )
            self.ready = True
            self.last_error = None
            log.info(
                "bus connected: %s, %d stream(s), consuming %s",
                self._server(),
                len(settings.layout.streams),
                ", ".join(sorted(subs)),
                extra={"event": "bus_connected"},
            )
            assert self.eraser is not None
            publishing = publish_loop(nc, js, self.outbox, settings, self.metrics, self._rng)
            filling = fill_loop(nc, self.replica, settings, self.needs, self.metrics, self._rng)
            tasks = [asyncio.create_task(publishing, name="crdtmem-bus-publish")]
            tasks.append(asyncio.create_task(filling, name="crdtmem-bus-states"))
            tasks.append(asyncio.create_task(erase_loop(js, self.eraser), name="crdtmem-bus-erase"))
            self._js = js
            if settings.pull_on_start:  # pages first; the consumers, bound already, then read the rest
                await self._pull_once()
            tasks += [asyncio.create_task(self.consuming.run(js, name, sub)) for name, sub in subs.items()]
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
            reraise_if_cancelled()
            log.warning("pulling since this node's vectors failed: %s: %s", type(exc).__name__, exc)

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
