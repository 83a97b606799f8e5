"""Catch-up of a node that was down for N updates, four ways, against a bare nats-py read, same run.

A local ``nats-server`` with JetStream is started for the run; crdtmem nodes are
:class:`~crdtmem.engine.replica.Replica` objects on SQLite files with their own
:class:`~crdtmem.bus.BusClient`, on one event loop. Node C holds node A's 100 facts, stops; 16
writers make N updates on A; then, timed, C catches up until it holds every update:

1. **stream, eager**: C starts again and reads the N messages A published (one entry each) from its
   durable consumer.
2. **stream, lazy**: the same with A publishing lazily (``delivery="lazy"``, batches of up to 256
   entries of one channel and origin): C reads far fewer, larger messages.
3. **pull**: C, off the streams, pulls since its version vectors over the bus (``crdtmem.bus.pull``):
   offers, then ``export_since`` pages of 1,000 deltas from A.
4. **states**: as 3, after A folded its log (``Replica.compact``): C is behind A's horizon and gets
   document states pages instead (the pages a node behind a folded stream fetches).

**bare**: a fresh durable consumer reads N messages of crdtmem's message size, acknowledging each.

Run: ``python benchmarks/bench_bus_catchup.py`` (10,000 updates, 3 rounds) or ``--quick`` (2,000).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import nats
from _common import Series, finish, parser, print_machine, ratio, workdir
from bench_bus import FACTS, U1, WRITERS, Fleet, bare_catchup, holds, message_size, seed, stream_bytes

from crdtmem import Replica
from crdtmem.access import OPEN
from crdtmem.bus import BusClient, BusSettings
from crdtmem.bus.pull import pull

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.nats import NatsServer  # the test suite's server fixture

CASES = ("stream", "lazy", "pull", "states", "bare")


async def _write(a: Replica, ids: list[str], count: int) -> None:
    queue = list(range(count))

    async def writer() -> None:
        while queue:
            i = queue.pop()
            await a.update(ids[i % FACTS], content=f"v{i}")

    await asyncio.gather(*(writer() for _ in range(WRITERS)))


async def _published(bus: BusClient) -> None:
    assert bus.outbox is not None
    while bus.outbox.lag():
        await asyncio.sleep(0.01)


async def from_stream(root: Path, url: str, tag: str, count: int, lazy: bool) -> dict[str, float]:
    async with Fleet(root, url, tag, ["a", "c"], "FULL") as fleet:
        a, c = fleet.replica("a"), fleet.replica("c")
        if lazy:  # A publishes its updates in batches
            await fleet.stop("a")
            a = await _lazy(fleet, "a")
        ids = await seed(a, [c])
        await fleet.stop("c")
        stream = fleet.layout.stream_of(U1).name
        before = await stream_bytes(url, stream)
        await _write(a, ids, count)
        await _published(fleet.nodes["a"][1])
        grown = await stream_bytes(url, stream) - before
        started = time.perf_counter()
        c = await fleet.start("c")
        await holds(c, a.id, FACTS + count, timeout=600)
        elapsed = time.perf_counter() - started
        outbox = fleet.nodes["a"][1].outbox
        messages = outbox.messages if outbox is not None else 0
        return {"seconds": elapsed, "bytes": grown, "messages": messages}


async def _lazy(fleet: Fleet, name: str) -> Replica:
    replica = Replica(fleet.root / f"{fleet.tag}-{name}.db", replica_id=f"{fleet.tag}-{name}")
    await replica.start()
    settings = BusSettings([fleet.url], layout=fleet.layout, delivery="lazy", batch_interval_s=0.05)
    bus = await BusClient(replica, settings).start()
    fleet.nodes[name] = (replica, bus)
    while not bus.ready:
        await asyncio.sleep(0.01)
    return replica


async def by_pull(root: Path, url: str, tag: str, count: int, fold: bool) -> dict[str, float]:
    async with Fleet(root, url, tag, ["a"], "FULL") as fleet:
        a = fleet.replica("a")
        async with Replica(root / f"{tag}-c.db", replica_id=f"{tag}-c") as c:
            ids = await seed(a, [])
            await c.apply(await a.export_since(U1))
            await _write(a, ids, count)
            await _published(fleet.nodes["a"][1])
            if fold:
                await a.compact()
                assert a.behind([U1], c.version_vectors([U1])), "a's log folded past c's vectors"
            nc = await nats.connect(url)
            try:
                started = time.perf_counter()
                pulled = await pull(nc, c, fleet.layout, OPEN, [U1], wait=0.2)
                elapsed = time.perf_counter() - started
            finally:
                await nc.close()
            await holds(c, a.id, FACTS + count, timeout=1)
            return {"seconds": elapsed, "pages": pulled.pages + pulled.states_pages, "deltas": pulled.deltas}


async def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--catchup", type=int, default=None, help="updates the node misses (10000; quick 2000)")
    args = p.parse_args()
    count = args.catchup or (2000 if args.quick else 10_000)
    rounds = args.rounds or (1 if args.quick else 3)
    print_machine()
    seconds: dict[str, list[float]] = {case: [] for case in CASES}
    extra: dict[str, Any] = {}
    with workdir(args) as root:
        server = NatsServer(root, "bench").start()
        try:
            size = await message_size(root)
            for n in range(rounds):
                order = CASES[n % len(CASES) :] + CASES[: n % len(CASES)]
                for case in order:
                    tag = f"k{CASES.index(case)}r{n}"
                    if case == "stream":
                        got = await from_stream(root, server.url, tag, count, lazy=False)
                    elif case == "lazy":
                        got = await from_stream(root, server.url, tag, count, lazy=True)
                    elif case == "pull":
                        got = await by_pull(root, server.url, tag, count, fold=False)
                    elif case == "states":
                        got = await by_pull(root, server.url, tag, count, fold=True)
                    else:
                        got = {"seconds": await bare_catchup(server.url, tag, size, count)}
                    seconds[case].append(got["seconds"])
                    extra[case] = got
                print(
                    f"  round {n + 1}/{rounds}: "
                    + ", ".join(f"{case} {seconds[case][-1]:.2f} s" for case in CASES),
                    flush=True,
                )
        finally:
            server.kill()
    bare = statistics.median(seconds["bare"])
    print(f"\ncatch-up of a node down for {count:,} updates (median of {rounds}; message {size} B)")
    print(f"{'case':<8}{'seconds':>10}{'updates/s':>12}{'x bare':>8}  detail")
    for case in CASES:
        s = statistics.median(seconds[case])
        detail = {k: round(v) for k, v in extra[case].items() if k != "seconds"}
        print(f"{case:<8}{s:>10.2f}{count / s:>12,.0f}{s / bare:>8.1f}  {detail}")
    series = {case: Series(case, "updates/s", [count / t for t in seconds[case]]) for case in CASES}
    ratios = [ratio(series, case, "bare", f"catch-up {case} vs bare (information)") for case in CASES[:-1]]
    ratios.append(ratio(series, "lazy", "stream", "catch-up lazy vs eager stream (information)"))
    return finish(args, "bench_bus_catchup", series, ratios, {"updates": count, "detail": extra})


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
