"""``bench_bus.py``'s latency case with each side in a process of its own, as in a fleet.

Node A and node B, and the bare and both floor pipelines' publisher and consumer, each run in a child
process (this script run with ``--child <role> ...``) driven by JSON lines on its stdin and stdout
(``bench_sync_common.Child``). The driver tells the writer to write one change; the writer stamps
the start, the reader stamps the change in hand, both on CLOCK_MONOTONIC (one clock for every
process on Linux); once the reader has reported the change, the driver asks the writer for its
stamps (the writer reports nothing while a change is in flight, so the driver does not wake up to
compete for a core with the two sides), then sends the next write. A sample is the reader's stamp
minus the writer's, so the time a report takes to reach the driver is not in it.

What one event loop would serialize runs beside the write here, as on machines of their own: node
A's consumer receiving its own message back and acknowledging it, the rest of A's write after its
commit, B's acknowledgements.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bench_sync_common as common
from _bus_stages import Stages, hooked
from bench_sync_common import Child, emit, now_ns
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SCRIPT = str(Path(__file__).resolve())


@contextlib.asynccontextmanager
async def children(root: Path, *roles: tuple[str, list[str]]) -> AsyncIterator[list[Child]]:
    """``roles`` (a log name, the child's arguments) started in turn, each ready before the next."""
    running: list[Child] = []
    try:
        for name, args in roles:
            child = await Child(SCRIPT, args, root / f"{name}.log").start()
            running.append(child)
            await child.expect("ready")
        yield running
    finally:
        for child in reversed(running):
            await child.stop()


async def seen(reader: Child, **match: Any) -> dict[str, Any]:
    """The reader's next report of a change whose fields are ``match`` (earlier ones are skipped)."""
    while True:
        report = await reader.expect("seen", timeout=30)
        if all(report[k] == v for k, v in match.items()):
            return report


# -- the driver --------------------------------------------------------------------------------------


async def crdtmem_latency(
    root: Path,
    url: str,
    tag: str,
    writes: int,
    warmup: int,
    sync: str,
    local_writes: list[float],
    stages: Stages | None = None,
) -> list[float]:
    """Seconds from A's update call (in A's process) to B's event (in B's); A's own update's time
    goes to ``local_writes``. With ``stages``, both children stamp each write's stages."""
    breakdown = "1" if stages is not None else "0"

    def node(name: str) -> tuple[str, list[str]]:
        return f"{tag}-{name}", ["node", name, url, tag, str(root), sync, breakdown]

    async with children(root, node("b"), node("a")) as (b, a):
        a.send(cmd="seed")
        seeded = await a.expect("seeded", timeout=120)
        b.send(cmd="hold", origin=seeded["origin"], seq=seeded["seq"])
        await b.expect("held", timeout=130)
        ids = seeded["ids"]
        samples = []
        for i in range(warmup + writes):
            memory_id, content = ids[i % len(ids)], f"v{i}"
            a.send(cmd="write", m=memory_id, c=content)
            visible = await seen(b, m=memory_id, c=content)
            a.send(cmd="report")  # answered once the update has returned; its publish is done
            wrote = await a.expect("wrote")
            if i >= warmup:
                if stages is not None:
                    stages.record({**wrote["stamps"], **visible["stamps"]})
                samples.append((visible["t"] - wrote["t0"]) / 1e9)
                local_writes.append((wrote["t1"] - wrote["t0"]) / 1e9)
        return samples


async def pipeline_latency(
    root: Path, url: str, tag: str, size: int, writes: int, warmup: int, sync: str | None, crdt: bool = False
) -> list[float]:
    """Seconds from the publish call (the floors: the signature and the commit before it) in the
    publisher's process to the message in hand in the consumer's; the floor when ``sync`` is given
    (the CRDT floor with ``crdt``), else bare."""
    key = Ed25519PrivateKey.generate().private_bytes_raw().hex() if sync else "-"
    kind = ("crdt" if crdt else "floor") if sync else "bare"

    def role(name: str) -> tuple[str, list[str]]:
        return f"{tag}-{name}", ["pipeline", name, url, tag, str(size), str(root), sync or "-", key, kind]

    async with children(root, role("publisher"), role("consumer")) as (publisher, consumer):
        samples = []
        for i in range(warmup + writes):
            publisher.send(cmd="publish", i=i)
            visible = await seen(consumer, i=i)
            publisher.send(cmd="report")
            published = await publisher.expect("published")
            if i >= warmup:
                samples.append((visible["t"] - published["t0"]) / 1e9)
        return samples


# -- the children ------------------------------------------------------------------------------------


async def node(name: str, url: str, tag: str, root: str, sync: str, breakdown: bool) -> None:
    """Node ``a`` seeds the facts and writes what it is told; node ``b`` reports each event."""
    from bench_bus import U1, Fleet, holds, seed

    trace_dir = os.environ.get("CRDTMEM_BUS_TRACE")  # bench_bus.py --trace (_bus_trace.py)
    if trace_dir:
        import _bus_trace

        _bus_trace.start(profiling=bool(os.environ.get("CRDTMEM_BUS_PROFILE")))
    writes: list[tuple[float, float]] = []  # A's update calls (start, end), seconds
    seen_at: list[float] = []  # B's events in hand, seconds
    async with Fleet(Path(root), url, tag, [name], sync) as fleet:
        replica = fleet.replica(name)
        stages = Stages(clock=time.monotonic) if breakdown else None
        watcher = None
        if name == "b":
            events = replica.events([U1])

            async def watch() -> None:
                async for event in events:
                    t = now_ns()
                    seen_at.append(t / 1e9)
                    stamps = {}
                    if stages is not None:
                        stamps = {k: v for k, v in stages.stamps.items() if k in ("b_receive", "b_commit")}
                        stamps["event"] = t / 1e9
                        stages.begin()  # B's stamps of the next message start now
                    emit(event="seen", m=event.memory.id, c=event.memory.content, t=t, stamps=stamps)

            watcher = asyncio.create_task(watch())
            if stages is not None:
                stages.begin()
        t0 = t1 = 0
        with (
            hooked(
                stages,
                replica if name == "a" else None,
                replica if name == "b" else None,
                fleet.layout.prefix,
            )
            if stages is not None
            else contextlib.nullcontext()
        ):
            emit(event="ready")
            queue = await common.commands()
            while (command := await queue.get()) is not None:
                cmd = command.get("cmd")
                if cmd == "seed":
                    ids = await seed(replica, [])
                    emit(event="seeded", ids=ids, origin=replica.id, seq=len(ids))
                elif cmd == "hold":
                    await holds(replica, command["origin"], command["seq"])
                    emit(event="held")
                elif cmd == "write":
                    if stages is not None:
                        stages.begin()
                    t0 = now_ns()
                    await replica.update(command["m"], content=command["c"])
                    t1 = now_ns()
                    writes.append((t0 / 1e9, t1 / 1e9))
                elif cmd == "report":
                    stamps = {}
                    if stages is not None:
                        stages.active = False
                        stamps = stages.stamps
                    emit(event="wrote", t0=t0, t1=t1, stamps=stamps)
        if watcher is not None:
            events.end()
            watcher.cancel()
    if trace_dir:
        _bus_trace.save(Path(trace_dir) / f"{tag}-{name}.pkl", {"writes": writes, "seen": seen_at})


async def pipeline(
    role: str, url: str, tag: str, size: int, root: str, sync: str, key: str, kind: str
) -> None:
    """The bare, floor or CRDT floor (``kind``) pipeline's publisher, or its consumer reporting each
    message."""
    from _bus_bare import Bare, CrdtFloor, Floor, receive

    pipe: Bare = Bare(url, tag, size)
    if kind != "bare":
        floor = CrdtFloor if kind == "crdt" else Floor
        pipe = floor(url, tag, size, Path(root), sync, key=bytes.fromhex(key), writer=role == "publisher")
    async with pipe:
        stop = asyncio.Event()
        task = None
        if role == "consumer":

            def arrived(i: int) -> None:
                emit(event="seen", i=i, t=now_ns())

            if isinstance(pipe, Floor):
                task = await pipe.durable_consumer("c", arrived, stop)
            else:
                task = asyncio.create_task(receive(await pipe.consumer("c"), arrived, stop))
        emit(event="ready")
        queue = await common.commands()
        t0 = 0
        while (command := await queue.get()) is not None:
            if command["cmd"] == "report":
                emit(event="published", t0=t0)
                continue
            i = command["i"]
            t0 = now_ns()
            if isinstance(pipe, Floor):
                await pipe.publish_data(i, pipe.write(i))
            else:
                await pipe.publish(i)
        stop.set()
        if task is not None:
            await task


def run_child(argv: list[str]) -> None:
    if argv[0] == "node":
        name, url, tag, root, sync, breakdown = argv[1:]
        asyncio.run(node(name, url, tag, root, sync, breakdown == "1"))
    else:
        role, url, tag, size, root, sync, key, kind = argv[1:]
        asyncio.run(pipeline(role, url, tag, int(size), root, sync, key, kind))


if __name__ == "__main__":
    assert sys.argv[1] == "--child", "run by bench_bus.py, not by hand"
    run_child(sys.argv[2:])
