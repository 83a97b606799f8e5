"""Partition and heal: 8 replica processes, split into two halves, written to on both sides, healed.

Why processes: eight replicas in one event loop would serialize every apply, commit and frame on one
core and one GIL, so the figures would say little about a real deployment; eight processes (each a
:class:`Node` embedded in a child of this script) exercise real sockets, real parallel commits and
the OS scheduler. The machine has 2 cores, so the 8 processes contend for them: convergence times
are upper bounds for a machine with a core per replica.

Topology: two halves {n0..n3} and {n4..n7}; a full mesh inside each half (6 links each) and one
cross link per pair (n0-n4, n1-n5, n2-n6, n3-n7). Every link is one :class:`PeerClient` (the lower
index dials; eager push both ways over one WebSocket, pull by version vector on connect).

Each round: the cross links are cut (the dialing side stops its PeerClient); every node makes
``writes / 8`` writes (10,000 in all: 70% updates of memories every node shares, so the halves
write the same registers concurrently and conflicts are detected, 30% new memories), with up to 16
writes in flight per node; each half converges inside itself; counters are reset; the cross links
are re-dialled ("heal") and the time until every node's version vector equals the union of all
writes is measured (each node reports the CLOCK_MONOTONIC instant its vector reached the target).

Exchanged after the heal, summed over all nodes: deltas sent on links and served by pulls (with
duplicates: a delta reaching a node over several paths counts each time) and bytes:
WebSocket frames as encoded by the link (counted where they are sent), pull request and response
bodies (counted at the puller); HTTP and WebSocket framing headers are not counted (a few dozen bytes
per frame or request). The minimum is every node receiving each delta of the other half once.

Run: ``python benchmarks/bench_sync_partition.py`` (one round of 10,000 writes: about 1.5-2 min on the
2-core machine; ``--rounds 3`` repeats the partition/heal cycle and reports medians, about 6 min),
``--quick`` (2,000 writes, 1 round: about 20 s). ``--link-page`` and ``--ack-timeout`` set the
links' :class:`LinkSettings` (defaults 2000 deltas per frame and 2 s, crdtmem's own), to compare a
tuning. No ratio target: the figures are reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import bench_sync_common as common
from bench_sync_common import CH, Child, emit, now_ns

SCRIPT = str(Path(__file__).resolve())
NODES = 8
HALF = NODES // 2


# -- one replica (child process) -----------------------------------------------------------------


async def child_node(index: int, work: str, synchronous: str, page: int, ack_timeout: float) -> None:
    import msgpack

    from crdtmem import Replica
    from crdtmem.server.node import Node
    from crdtmem.sync import link as link_mod
    from crdtmem.sync import peer as peer_mod
    from crdtmem.sync import protocol
    from crdtmem.sync import server as server_mod
    from crdtmem.sync.peer import PeerClient
    from crdtmem.sync.settings import LinkSettings

    counts = {"frame_bytes": 0, "frames": 0, "pull_request_bytes": 0, "pull_response_bytes": 0, "pulls": 0}

    def counting_encode_frame(frame_type: Any, **body: Any) -> bytes:
        data = protocol.encode_frame(frame_type, **body)
        counts["frame_bytes"] += len(data)
        counts["frames"] += 1
        counts[f"bytes_{frame_type}"] = counts.get(f"bytes_{frame_type}", 0) + len(data)
        return data

    def counting_packb(obj: Any, **kw: Any) -> bytes:
        data: bytes = msgpack.packb(obj, **kw)
        counts["pull_request_bytes"] += len(data)
        return data

    for module in (link_mod, peer_mod, server_mod):
        module.encode_frame = counting_encode_frame  # type: ignore[attr-defined]
    peer_mod.msgpack = types.SimpleNamespace(packb=counting_packb)  # type: ignore[attr-defined]

    rid = f"n{index}"
    replica = Replica(Path(work) / f"{rid}.db", replica_id=rid, channels=[CH], synchronous=synchronous)  # type: ignore[arg-type]
    apply = replica.apply

    async def counting_apply(data: bytes) -> Any:  # PeerClient.pull hands every pulled page here
        counts["pull_response_bytes"] += len(data)
        counts["pulls"] += 1
        return await apply(data)

    replica.apply = counting_apply  # type: ignore[method-assign]
    settings = LinkSettings(page=page, ack_timeout=ack_timeout)
    node = await Node(replica, port=0, settings=settings).start()
    peers: dict[str, PeerClient] = {}
    hung_stops = [0]

    async def stop_peer(peer: PeerClient) -> None:
        """``PeerClient.stop()``, bounded: it can hang when its cancel lands while the link is tearing
        down (``Link.run`` suppresses CancelledError around ``await sender``); a second cancel ends it."""
        stopping = asyncio.ensure_future(peer.stop())
        done, _ = await asyncio.wait({stopping}, timeout=3.0)
        if not done:
            hung_stops[0] += 1
            print(f"{rid}: PeerClient.stop() hung; cancelling its task again", file=sys.stderr, flush=True)
            if peer._task is not None:
                peer._task.cancel()
            await stopping

    watches: list[tuple[dict[str, int], str]] = []

    def check_watches(*_: Any) -> None:
        if not watches:
            return
        mine = replica.store.version_vector(CH)
        for watch in list(watches):
            target, tag = watch
            if all(mine.get(origin, 0) >= seq for origin, seq in target.items()):
                watches.remove(watch)
                emit(event="converged", tag=tag, t=now_ns())

    replica.on_commit(check_watches)

    baseline: dict[str, float] = {}  # counters at the last reset (prometheus counters only go up)
    counted = (
        "crdtmem_deltas_sent_total",
        "crdtmem_pull_deltas_total",
        "crdtmem_frames_resent_total",
        "crdtmem_peers_moved_to_pull_total",
    )

    def metric(name: str) -> float:
        return node.metrics.total(name) - baseline.get(name, 0.0)

    def snapshot() -> dict[str, Any]:
        return {
            **counts,
            "deltas_sent_links": metric("crdtmem_deltas_sent_total"),
            "deltas_served_pulls": metric("crdtmem_pull_deltas_total"),
            "hung_peer_stops": hung_stops[0],
            "frames_resent": metric("crdtmem_frames_resent_total"),
            "moved_to_pull": metric("crdtmem_peers_moved_to_pull_total"),
        }

    emit(event="ready", url=node.url)
    rng = random.Random(index)
    queue = await common.commands()
    try:
        while (command := await queue.get()) is not None:
            cmd = command["cmd"]
            if cmd == "connect":
                for url in command["peers"]:
                    peers[url] = await PeerClient(
                        replica,
                        url,
                        channels=[CH],
                        metrics=node.metrics,
                        settings=dataclasses.replace(settings),
                    ).start()
                emit(event="connected")
            elif cmd == "disconnect":
                for url in command["peers"]:
                    await stop_peer(peers.pop(url))
                emit(event="disconnected")
            elif cmd == "create":
                made = await asyncio.gather(
                    *(
                        replica.add(f"shared fact {i}", user_id="u1", metadata={"i": str(i)})
                        for i in range(command["n"])
                    )
                )
                emit(event="created", ids=[m.id for m in made], vector=replica.version_vector(CH))
            elif cmd == "write":
                t0 = time.perf_counter()

                async def lane(lane_number: int, ids: list[str], n: int, tag: str) -> None:
                    for i in range(lane_number, n, 16):
                        if rng.random() < 0.7:
                            await replica.update(rng.choice(ids), content=f"{rid} says {tag}-{i}")
                        else:
                            await replica.add(f"{rid} new fact {tag}-{i}", user_id="u1")

                await asyncio.gather(
                    *(lane(k, command["ids"], command["n"], command["tag"]) for k in range(16))
                )
                emit(event="written", seconds=time.perf_counter() - t0, vector=replica.version_vector(CH))
            elif cmd == "watch":
                watches.append((command["target"], command["tag"]))
                check_watches()
            elif cmd == "status":
                emit(
                    event="status",
                    vector=replica.version_vector(CH),
                    docs=replica.store.doc_count(),
                    conflicts=len(await replica.conflicts()),
                    **snapshot(),
                )
            elif cmd == "reset":
                for key in list(counts):
                    counts[key] = 0
                for name in counted:
                    baseline[name] = node.metrics.total(name)
                for p in peers.values():
                    p.state.pulled_deltas = 0
                emit(event="reset")
            elif cmd == "quit":
                break
    finally:
        t = time.perf_counter()
        for p in peers.values():
            await stop_peer(p)
        await node.stop()
        emit(event="bye", hung_peer_stops=hung_stops[0], seconds=time.perf_counter() - t)


# -- the driver ----------------------------------------------------------------------------------


def links() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    inside = [(i, j) for half in (range(HALF), range(HALF, NODES)) for i in half for j in half if i < j]
    across = [(i, i + HALF) for i in range(HALF)]
    return inside, across


async def everyone(children: list[Child], event: str, timeout: float = 300.0) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(c.expect(event, timeout) for c in children)))


async def converge(children: list[Child], members: list[int], target: dict[str, int], tag: str) -> list[int]:
    for i in members:
        children[i].send(cmd="watch", target=target, tag=tag)
    done = await everyone([children[i] for i in members], "converged")
    return [d["t"] for d in done]


def union(vectors: list[dict[str, int]]) -> dict[str, int]:
    target: dict[str, int] = {}
    for vector in vectors:
        for origin, seq in vector.items():
            target[origin] = max(target.get(origin, 0), seq)
    return target


async def main(args: Any) -> int:
    rounds = common.rounds_for(args, default=1, quick=1)
    writes = args.writes or (2_000 if args.quick else 10_000)
    shared = args.shared or (200 if args.quick else 1_000)
    common.print_machine()
    print(
        f"partition: {NODES} processes, {rounds} round(s) of {writes:,} writes during the partition, "
        f"{shared:,} shared memories, synchronous={args.synchronous}, link page {args.link_page} deltas, "
        f"ack timeout {args.ack_timeout:g} s",
        flush=True,
    )
    inside, across = links()
    results = []
    shutdown_hangs = 0
    with common.workdir(args) as work:
        children = [
            Child(
                SCRIPT,
                ["node", str(i), str(work), args.synchronous, str(args.link_page), str(args.ack_timeout)],
                work / f"n{i}.log",
            )
            for i in range(NODES)
        ]
        started = time.perf_counter()
        await asyncio.gather(*(c.start() for c in children))
        try:
            urls = [m["url"] for m in await everyone(children, "ready")]
            print(f"  {NODES} processes serving after {time.perf_counter() - started:.1f} s", flush=True)
            for i, child in enumerate(children):
                child.send(cmd="connect", peers=[urls[j] for a, j in inside + across if a == i])
            await everyone(children, "connected")
            children[0].send(cmd="create", n=shared)
            created = await children[0].expect("created")
            ids = created["ids"]
            await converge(children, list(range(NODES)), created["vector"], "seed")
            print(
                f"  seeded {shared:,} shared memories on all {NODES} nodes "
                f"after {time.perf_counter() - started:.1f} s",
                flush=True,
            )

            for r in range(rounds):
                dialers = [i for i, _ in across]
                for i in dialers:
                    children[i].send(cmd="disconnect", peers=[urls[i + HALF]])
                await everyone([children[i] for i in dialers], "disconnected")
                t0 = time.perf_counter()
                per_node = writes // NODES
                for child in children:
                    child.send(cmd="write", ids=ids, n=per_node, tag=f"r{r}")
                written = await everyone(children, "written")
                write_s = time.perf_counter() - t0
                halves = [list(range(HALF)), list(range(HALF, NODES))]
                half_vectors = [union([written[i]["vector"] for i in half]) for half in halves]
                for half, vector in zip(halves, half_vectors, strict=True):
                    await converge(children, half, vector, f"half{r}")
                inside_s = time.perf_counter() - t0
                for child in children:
                    child.send(cmd="reset")
                await everyone(children, "reset")

                target = union([w["vector"] for w in written])
                watch = asyncio.ensure_future(converge(children, list(range(NODES)), target, f"heal{r}"))
                await asyncio.sleep(0.05)  # the watches are registered
                t_heal = now_ns()
                for i in dialers:
                    children[i].send(cmd="connect", peers=[urls[i + HALF]])
                times = await watch
                await asyncio.sleep(0.5)  # trailing acks and hellos
                for child in children:
                    child.send(cmd="status")
                status = await everyone(children, "status")
                vectors = {tuple(sorted(s["vector"].items())) for s in status}
                docs = {s["docs"] for s in status}
                conflicts = {s["conflicts"] for s in status}
                per_node_s = [(t - t_heal) / 1e9 for t in times]

                def total(key: str, rows: list[dict[str, Any]] = status) -> float:
                    return sum(s[key] for s in rows)

                minimum = sum(
                    len(half) * (seq - vector.get(origin, 0))
                    for half, vector in zip(halves, half_vectors, strict=True)
                    for origin, seq in target.items()
                )
                row = {
                    "round": r + 1,
                    "writes": per_node * NODES,
                    "write_seconds": write_s,
                    "inside_halves_seconds": inside_s,
                    "converge_seconds": max(per_node_s),
                    "converge_median_node_seconds": statistics.median(per_node_s),
                    "equal_vectors": len(vectors) == 1,
                    "docs": sorted(docs),
                    "conflicts": sorted(conflicts),
                    "minimum_deliveries": minimum,
                    "deltas_sent_links": total("deltas_sent_links"),
                    "deltas_served_pulls": total("deltas_served_pulls"),
                    "frame_bytes": total("frame_bytes"),
                    "frames": total("frames"),
                    "pull_bytes": total("pull_request_bytes") + total("pull_response_bytes"),
                    "pulls": total("pulls"),
                    "frames_resent": total("frames_resent"),
                    "moved_to_pull": total("moved_to_pull"),
                    "hung_peer_stops": total("hung_peer_stops"),
                    "bytes_by_frame": {
                        k[6:]: total(k)
                        for k in sorted({k for s in status for k in s})
                        if k.startswith("bytes_")
                    },
                }
                row["deltas_exchanged"] = row["deltas_sent_links"] + row["deltas_served_pulls"]
                row["bytes"] = row["frame_bytes"] + row["pull_bytes"]
                results.append(row)
                print(
                    f"  round {r + 1}/{rounds}: writes {write_s:.1f} s, "
                    f"halves converged at {inside_s:.1f} s; "
                    f"heal -> all {NODES} equal in {row['converge_seconds']:.2f} s; "
                    f"{row['deltas_exchanged']:,.0f} deltas, {row['bytes']:,.0f} bytes exchanged",
                    flush=True,
                )
            for child in children:
                child.send(cmd="quit")
            byes = await everyone(children, "bye", timeout=60)
            shutdown_hangs = sum(b["hung_peer_stops"] for b in byes)
            print(
                f"  {NODES} nodes stopped (slowest {max(b['seconds'] for b in byes):.1f} s); "
                f"PeerClient.stop() hung and needed a second cancel {shutdown_hangs} time(s) in all",
                flush=True,
            )
        finally:
            await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)

    rows = [
        [
            r["round"],
            r["writes"],
            r["write_seconds"],
            r["converge_seconds"],
            r["converge_median_node_seconds"],
            r["minimum_deliveries"],
            r["deltas_exchanged"],
            r["deltas_served_pulls"],
            r["deltas_exchanged"] / r["minimum_deliveries"],
            r["bytes"],
            r["pull_bytes"],
            r["frames"],
            "yes" if r["equal_vectors"] else "NO",
        ]
        for r in results
    ]
    common.table(
        f"partition of {NODES} processes, heal and converge "
        "(deltas and bytes summed over all nodes, after the heal)",
        [
            "round",
            "writes",
            "write s",
            "converge s",
            "median node s",
            "min deliveries",
            "deltas exchanged",
            "of which pulled",
            "exchanged/min",
            "bytes",
            "of which pulls",
            "frames",
            "vectors equal",
        ],
        rows,
    )
    for r in results:
        per = r["bytes"] / max(1, r["deltas_exchanged"])
        print(
            f"  round {r['round']}: {per:.0f} bytes per delta exchanged; memories per node {r['docs']}; "
            f"open conflicts per node {r['conflicts']}; frames resent {r['frames_resent']:.0f}; "
            f"links moved to pull {r['moved_to_pull']:.0f}; PeerClient.stop() hangs so far "
            f"{r['hung_peer_stops']:.0f}; frame bytes by type {r['bytes_by_frame']}"
        )
    ok = all(r["equal_vectors"] and len(r["docs"]) == 1 and len(r["conflicts"]) == 1 for r in results)
    print(
        f"\nconverged (all version vectors, memory counts and conflict counts equal): {'yes' if ok else 'NO'}"
    )
    median = statistics.median(r["converge_seconds"] for r in results)
    print(f"median time to convergence after heal: {median:.2f} s")
    code = common.finish(
        args,
        "sync_partition",
        [],
        {"rounds": results, "nodes": NODES, "writes": writes, "hung_peer_stops_total": shutdown_hangs},
    )
    return code if ok else 1


def cli() -> int:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument(
        "--writes", type=int, default=None, help="writes during each partition (10,000; quick 2,000)"
    )
    p.add_argument("--shared", type=int, default=None, help="memories all nodes share (1,000; quick 200)")
    p.add_argument("--synchronous", default="NORMAL", choices=["FULL", "NORMAL"])
    p.add_argument("--link-page", type=int, default=2000, help="LinkSettings.page: deltas per frame (2000)")
    p.add_argument(
        "--ack-timeout",
        type=float,
        default=2.0,
        help="LinkSettings.ack_timeout: resend after this many s (2.0)",
    )
    args = p.parse_args()
    if args.child is not None:
        asyncio.run(
            child_node(
                int(args.child[1]), args.child[2], args.child[3], int(args.child[4]), float(args.child[5])
            )
        )
        return 0
    return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
