"""Catch-up after offline: bytes on the wire and time to converge when a replica reconnects.

Setup (not timed): replica A (a :class:`Node`, file-backed) holds ``--memories`` facts (10,000) of
varied English text (sentences from the standard library's docstrings, ``_text.py``: a small
vocabulary would flatter compression); replica B (file-backed) syncs them with a
:class:`PeerClient` whose connection goes through a counting TCP proxy, so every byte either way is
counted exactly (HTTP requests and responses, WebSocket frames, headers). Both run in this process:
a pull is strictly request -> page -> apply -> next request, so a second process would add no
overlap, and one process keeps the byte accounting exact and simple.

Each round (``--rounds``): B goes offline (``PeerClient.stop()``), A makes ``--writes`` (1,000) updates
to random existing memories (about 950 distinct ones), B reconnects (a new PeerClient: pull by
version vector in pages of 1,000, gzip-compressed by the server as always, then the WebSocket link).
Measured from the reconnect until B's version vector equals A's:

- wire bytes: everything through the proxy, both directions, until convergence plus a short settle;
- compared with the sum of the missed deltas' Yrs update sizes (the information B lacks; target:
  wire <= 1.2x of it) and with the full state of the documents that changed (what a state-based
  catch-up would have to send; target: wire >= 10x smaller). The full state of *all* documents is
  reported too, for information only: most of them did not change, and no catch-up sends them;
- time to converge (reported; no baseline).

Run: ``python benchmarks/bench_sync_catchup.py`` (about 1-2 min), ``--quick`` (2,000 memories, 200
writes per round). ``--synchronous`` sets both replicas' SQLite mode (default NORMAL: this benchmark
is about bytes, and FULL only adds fsyncs to the setup).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from typing import Any

import _text
import bench_sync_common as common
import msgpack
from bench_sync_common import CH, CountingProxy, Target

from crdtmem import Replica
from crdtmem.engine import payload as wire
from crdtmem.server.node import Node
from crdtmem.store.codec import delta_to_list
from crdtmem.sync.peer import PeerClient


async def converge(a: Replica, b: Replica, timeout: float = 120.0) -> float:
    """Wait until B's version vector for CH equals A's; returns the monotonic time it did."""
    deadline = time.perf_counter() + timeout
    target = a.version_vector(CH)
    while b.version_vector(CH) != target:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"B did not converge: {b.version_vector(CH)} vs {target}")
        await asyncio.sleep(0.001)
    return time.perf_counter()


def full_state_bytes(a: Replica) -> tuple[int, int]:
    """Bytes of every document's whole state (snapshot and tail merged, as a state sync would send)."""
    conn = a.store._r  # type: ignore[attr-defined]
    ids = [row[0] for row in conn.execute("SELECT id FROM docs")]
    return sum(len(a.store.load_state(doc_id) or b"") for doc_id in ids), len(ids)


async def catch_up(
    a: Replica,
    b: Replica,
    peer: PeerClient,
    proxy: CountingProxy,
    ids: list[str],
    rng: random.Random,
    writes: int,
    tag: str,
) -> tuple[PeerClient, dict[str, Any]]:
    """B goes offline, A makes ``writes`` updates, B reconnects; returns the new peer and the figures."""
    await peer.stop()  # offline
    before = b.version_vector(CH)
    for start in range(0, writes, 50):
        batch = [
            a.update(rng.choice(ids), content=f"update {tag}-{i}: {_text.sentence(rng)}")
            for i in range(start, min(writes, start + 50))
        ]
        await asyncio.gather(*batch)
    missed = a.store.deltas_since([CH], {CH: before})
    payload = wire.encode(wire.Payload(a.id, missed, {CH: a.version_vector(CH)}))
    changed_docs = {d.doc_id for d in missed}
    state_bytes, doc_count = full_state_bytes(a)
    row: dict[str, Any] = {
        "missed": len(missed),
        "docs_changed": len(changed_docs),
        "update_bytes": sum(len(d.update) for d in missed),
        "record_bytes": sum(len(msgpack.packb(delta_to_list(d), use_bin_type=True)) for d in missed),
        "payload_bytes": len(payload),
        "state_bytes": state_bytes,
        "changed_state_bytes": sum(len(a.store.load_state(doc_id) or b"") for doc_id in changed_docs),
        "docs": doc_count,
    }
    proxy.reset()
    t0 = time.perf_counter()
    peer = await PeerClient(b, proxy.url, channels=[CH], page=PAGE["size"]).start()
    t1 = await converge(a, b)
    row["wire_at_converge"] = proxy.up + proxy.down
    await asyncio.sleep(0.3)  # let the link's hello and acks finish
    row.update(
        seconds=t1 - t0,
        wire_bytes=proxy.up + proxy.down,
        up=proxy.up,
        down=proxy.down,
        connections=proxy.connections,
    )
    return peer, row


PAGE = {"size": 1000}


async def main(args: Any) -> int:
    rounds = common.rounds_for(args, default=3, quick=2)
    memories = args.memories or (2_000 if args.quick else 10_000)
    writes = args.writes or (200 if args.quick else 1_000)
    rng = random.Random(11)
    common.print_machine()
    print(
        f"catch-up: {memories:,} memories, {writes:,} missed writes per round, {rounds} rounds, "
        f"synchronous={args.synchronous}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    PAGE["size"] = args.page
    with common.workdir(args) as work:
        a = Replica(work / "a.db", replica_id="a", channels=[CH], synchronous=args.synchronous)
        b = Replica(work / "b.db", replica_id="b", channels=[CH], synchronous=args.synchronous)
        node = await Node(a, port=0).start()
        await b.start()
        proxy = await CountingProxy(node.port).start()
        try:
            t = time.perf_counter()
            ids: list[str] = []
            for start in range(0, memories, 200):
                batch = [
                    a.add(f"user fact {i}: {_text.sentence(rng)}", user_id="u1", metadata={"n": str(i)})
                    for i in range(start, min(memories, start + 200))
                ]
                ids += [m.id for m in await asyncio.gather(*batch)]
            print(
                f"  setup: {memories:,} memories written on A in {time.perf_counter() - t:.1f} s", flush=True
            )

            t = time.perf_counter()
            peer = await PeerClient(b, proxy.url, channels=[CH], page=args.page).start()
            await converge(a, b)
            initial_s = time.perf_counter() - t
            await asyncio.sleep(0.2)
            state_bytes, doc_count = full_state_bytes(a)
            initial = {"seconds": initial_s, "wire_bytes": proxy.up + proxy.down, "state_bytes": state_bytes}
            print(
                f"  initial sync of {doc_count:,} memories: {initial_s:.2f} s, "
                f"{proxy.up + proxy.down:,} wire bytes (full state of all docs {state_bytes:,} bytes)",
                flush=True,
            )

            for r in range(rounds):
                peer, row = await catch_up(a, b, peer, proxy, ids, rng, writes, str(r))
                row.update(round=r + 1)
                results.append(row)
                print(
                    f"  round {r + 1}/{rounds}: {row['missed']:,} deltas ({row['docs_changed']:,} memories) "
                    f"in {row['seconds']:.3f} s, {row['wire_bytes']:,} wire bytes vs "
                    f"{row['update_bytes']:,} update bytes, "
                    f"{row['changed_state_bytes']:,} bytes of changed docs' state",
                    flush=True,
                )
            await peer.stop()
        finally:
            await proxy.stop()
            await b.stop()
            await node.stop()

    rows = [
        [
            r["round"],
            r["missed"],
            r["docs_changed"],
            r["seconds"],
            r["wire_bytes"],
            r["up"],
            r["down"],
            r["update_bytes"],
            r["record_bytes"],
            r["changed_state_bytes"],
            r["state_bytes"],
        ]
        for r in results
    ]
    common.table(
        "catch-up per round (bytes; wire = both directions through the proxy, from reconnect to converged)",
        [
            "round",
            "missed",
            "docs changed",
            "seconds",
            "wire",
            "up",
            "down",
            "updates",
            "records",
            "changed docs' state",
            "all docs' state",
        ],
        rows,
    )

    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    over = [r["wire_bytes"] / r["update_bytes"] for r in results]
    under = [r["changed_state_bytes"] / r["wire_bytes"] for r in results]
    under_all = [r["state_bytes"] / r["wire_bytes"] for r in results]
    summary = {
        "seconds": med("seconds"),
        "deltas_per_s": med("missed") / med("seconds"),
        "wire_per_delta": med("wire_bytes") / med("missed"),
        "update_per_delta": med("update_bytes") / med("missed"),
        "record_per_delta": med("record_bytes") / med("missed"),
        "wire_over_updates": statistics.median(over),
        "changed_state_over_wire": statistics.median(under),
        "all_state_over_wire": statistics.median(under_all),
    }
    print(
        f"\n  median {summary['seconds']:.3f} s to converge ({summary['deltas_per_s']:,.0f} deltas/s); "
        f"{summary['wire_per_delta']:.0f} wire bytes per missed delta "
        f"(Yrs update {summary['update_per_delta']:.0f} B, "
        f"encoded delta record {summary['record_per_delta']:.0f} B); "
        f"all docs' state / wire {summary['all_state_over_wire']:.1f}x (information: most did not change)"
    )
    print(
        f"  initial sync: {initial['seconds']:.2f} s, {initial['wire_bytes']:,} wire bytes for "
        f"{memories:,} memories ({initial['wire_bytes'] / initial['state_bytes']:.2f}x their full state)"
    )
    targets = [
        Target(
            "wire bytes / missed deltas' update bytes",
            summary["wire_over_updates"],
            1.2,
            at_most=True,
            detail=f"rounds {min(over):.2f}-{max(over):.2f}",
        ),
        Target(
            "full state of the changed docs / wire bytes",
            summary["changed_state_over_wire"],
            10.0,
            at_most=False,
            detail=f"rounds {min(under):.1f}-{max(under):.1f}",
        ),
    ]
    return common.finish(
        args,
        "sync_catchup",
        targets,
        {"rounds": results, "summary": summary, "initial": initial, "memories": memories, "writes": writes},
    )


def cli() -> int:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--memories", type=int, default=None, help="memories on A (10,000; quick 2,000)")
    p.add_argument("--writes", type=int, default=None, help="writes missed per round (1,000; quick 200)")
    p.add_argument("--page", type=int, default=1000, help="pull page size (PeerClient default 1000)")
    p.add_argument("--synchronous", default="NORMAL", choices=["FULL", "NORMAL"])
    args = p.parse_args()
    return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
