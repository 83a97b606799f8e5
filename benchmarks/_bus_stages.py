"""Stage stamps for ``bench_bus.py --breakdown``: where one write's write-to-visible time goes.

Each stage is stamped at a point the code under test already passes, hooked from outside (no
change to crdtmem): node A's commit (a commit listener placed ahead of the outbox's), the publish
of a message on one of the fleet's subjects (NATS ``Client.publish``, which JetStream's publishes
go through), node B's consumer handed the message (``StreamConsumer.handle``), B's commit (a commit
listener) and the event in the benchmark's hand. Only the first stamp of each stage per write
counts, so a write's own stages are the ones timed. With node A and node B in processes of their
own, each process hooks its own node and stamps with ``time.monotonic`` (CLOCK_MONOTONIC, one clock
for every process on Linux); the driver adds up the stamps both report (``Stages.record``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from nats.aio.client import Client

from crdtmem import Replica
from crdtmem.bus.consumer import StreamConsumer

STAGES = (
    ("A's durable update", "start", "a_commit"),
    ("commit -> publish handoff", "a_commit", "publish"),
    ("publish -> B's consumer receives", "publish", "b_receive"),
    ("B apply and commit", "b_receive", "b_commit"),
    ("B's commit -> event visible", "b_commit", "event"),
)


class Stages:
    """Stamps of the write in flight (``begin`` .. ``end``) and the durations of every finished one."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.stamps: dict[str, float] = {}
        self.durations: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
        self.totals: list[float] = []
        self.active = False

    def stamp(self, stage: str) -> None:
        if self.active and stage not in self.stamps:
            self.stamps[stage] = self.clock()

    def begin(self) -> None:
        self.stamps = {"start": self.clock()}
        self.active = True

    def end(self, keep: bool) -> None:
        self.stamp("event")
        self.active = False
        if keep:
            self.record(self.stamps)

    def record(self, stamps: dict[str, float]) -> None:
        """Keep one write's ``stamps`` (seconds on one clock) if every stage has its two ends."""
        if all(s in stamps for _, s, e in STAGES for s in (s, e)):
            for name, start, stop in STAGES:
                self.durations[name].append(stamps[stop] - stamps[start])
            self.totals.append(stamps["event"] - stamps["start"])

    def report(self, baselines: dict[str, float]) -> str:
        """Median of each stage (ms), their sum against the median total, beside ``baselines``."""
        if not self.totals:
            return "stage breakdown: no complete samples"
        lines = [f"stage breakdown, {len(self.totals)} writes (median ms)"]
        for name, values in self.durations.items():
            lines.append(f"  {name:<36}{statistics.median(values) * 1e3:>8.3f}")
        lines.append(f"  {'total (median of totals)':<36}{statistics.median(self.totals) * 1e3:>8.3f}")
        lines += [f"  {name:<36}{value * 1e3:>8.3f}" for name, value in baselines.items()]
        return "\n".join(lines)


@contextmanager
def hooked(stages: Stages, a: Replica | None, b: Replica | None, prefix: str) -> Iterator[None]:
    """Stamp ``stages`` from node A (``a``), node B (``b``) and publishes on subjects under ``prefix``
    (a process that holds one of the nodes passes None for the other)."""
    publish = Client.publish
    handle = StreamConsumer.handle

    async def stamped_publish(self: Client, subject: str, *args: Any, **kwargs: Any) -> None:
        if subject.startswith(prefix):
            stages.stamp("publish")
        await publish(self, subject, *args, **kwargs)

    async def stamped_handle(self: StreamConsumer, batch: list[Any]) -> None:
        if b is not None and self.replica is b:
            stages.stamp("b_receive")
        await handle(self, batch)

    def on_a(deltas: list[Any]) -> None:
        stages.stamp("a_commit")

    def on_b(deltas: list[Any]) -> None:
        if deltas:
            stages.stamp("b_commit")

    listeners: list[Callable[[list[Any]], None]] = a._publisher.listeners if a is not None else []
    listeners.insert(0, on_a)  # ahead of the outbox's listener
    unlisten_b = b.on_commit(on_b) if b is not None else (lambda: None)
    Client.publish = stamped_publish  # type: ignore[method-assign]
    StreamConsumer.handle = stamped_handle  # type: ignore[method-assign]
    try:
        yield
    finally:
        Client.publish = publish  # type: ignore[method-assign]
        StreamConsumer.handle = handle  # type: ignore[method-assign]
        listeners.remove(on_a)
        unlisten_b()
