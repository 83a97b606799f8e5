"""Remote deltas applied and stored per second, in batches: ``Replica.apply`` vs raw pycrdt.

Setup (not timed): a source replica (in memory) makes D deltas, a mix of many memories with several
updates each (facts and preferences with content and metadata updates, lists, counters and
conversations across several users and topics), and exports them in payloads of B deltas with
``export_since(..., limit=B)``, paging by version vector as a syncing peer does.

Timed, interleaved round by round:

- crdtmem, acknowledged: every payload through ``await replica.apply(payload)`` on a fresh
  file-backed replica (``synchronous=FULL`` unless ``--synchronous``): validate, causal apply, check
  each touched memory's header, one durable commit per payload (delta log, version vectors, the
  memories marked stale); timed until the last payload is acknowledged;
- crdtmem, visible: the same, then ``await replica.settle()``: every memory read back (record,
  conflicts, event; once for all the payloads that touched it), so every read and event is current;
- raw pycrdt (the baseline): the same Yrs updates applied with ``Doc.apply_update`` to one pycrdt
  ``Doc`` per memory, in memory, nothing decoded, validated or stored;
- minimal durable pipeline (the target's baseline): msgpack-decode each payload, apply with pycrdt,
  and write the delta rows plus each touched document's state in one SQLite transaction per
  payload: what storing costs without any of crdtmem's checks, logs and records;
- signed durable pipeline (the like-for-like anchor, since every delta is signed at its origin): the
  minimal durable pipeline plus one origin-signature check per delta before it is applied (SHA-256
  of the signed fields, one Ed25519 verification with ``cryptography``, the key from the payload's
  ``keys``), as the trust model of docs/protocol.md requires of any receiver.

Targets: >= 50,000 deltas/s applied and stored (absolute: reported, not asserted), or >= 0.8x the
minimal durable pipeline in the same run (checked, for both crdtmem cases). The ratios to the signed
durable pipeline and to raw pycrdt are reported beside them.

Run: ``python benchmarks/bench_remote_apply.py`` (``--quick`` for about 10 s; ``--deltas 50000`` for
the full-size set, which takes minutes while generation and apply are as slow as measured).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import _common
import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pycrdt import Doc

from crdtmem import Replica
from crdtmem.store.sqlite import Synchronous

TARGET_DELTAS_PER_S = 50_000
USERS = 20
TOPICS = 5


@dataclass
class Workload:
    payloads: list[bytes]
    updates: list[list[tuple[str, bytes]]]  # per payload: (doc_id, Yrs update), in payload order
    deltas: int
    memories: int
    channels: list[str]


async def generate(count: int, seed: int = 7) -> tuple[Replica, list[str], int]:
    """Make ``count`` deltas on an in-memory source replica; returns it, its memory ids, and the count."""
    rng = random.Random(seed)
    source = Replica(None, replica_id="source")
    await source.start()
    ids: list[tuple[str, str]] = []  # (memory id, kind)
    made = 0
    memories_target = max(1, count // 5)  # about one create and four updates per memory
    while made < count:
        create = len(ids) < memories_target and (not ids or rng.random() < 0.25)
        if create:
            i = len(ids)
            user = f"u{rng.randrange(USERS)}"
            topics = [f"t{rng.randrange(TOPICS)}"] if rng.random() < 0.3 else []
            kind = rng.choices(["fact", "preference", "list", "counter", "conversation"], [5, 2, 1, 1, 1])[0]
            content: object = {
                "fact": f"user fact {i}",
                "preference": f"prefers option {i % 7}",
                "list": [f"item {i}"],
                "counter": 1,
                "conversation": [{"role": "user", "text": f"hello {i}"}],
            }[kind]
            memory = await source.add(
                content, kind=kind, user_id=user, topics=topics, metadata={"n": i, "agent": "bench"}
            )
            ids.append((memory.id, kind))
        else:
            memory_id, kind = ids[rng.randrange(len(ids))]
            step = made
            if kind in ("fact", "preference"):
                if rng.random() < 0.5:
                    await source.update(memory_id, content=f"revised {step}")
                else:
                    await source.update(memory_id, metadata={"confidence": rng.random(), "step": step})
            elif kind == "list":
                await source.add_items(memory_id, f"item {step}")
            elif kind == "counter":
                await source.increment(memory_id, rng.randrange(1, 5))
            else:
                await source.append_message(memory_id, role="assistant", text=f"reply {step}")
        made += 1
    return source, [m for m, _ in ids], made


async def export_all(source: Replica, batch: int) -> tuple[list[bytes], list[str]]:
    channels = list(source.version_vectors())
    since: dict[str, dict[str, int]] = {c: {} for c in channels}
    payloads: list[bytes] = []
    while True:
        payload = await source.export_since(channels, since, limit=batch)
        body = msgpack.unpackb(payload, raw=False)
        if not body["deltas"]:
            return payloads, channels
        payloads.append(payload)
        for delta in body["deltas"]:
            origin = delta[1]
            for channel, seq in delta[6].items():
                vector = since[channel]
                vector[origin] = max(vector.get(origin, 0), seq)


def updates_of(payloads: Sequence[bytes]) -> list[list[tuple[str, bytes]]]:
    return [[(d[2], d[5]) for d in msgpack.unpackb(p, raw=False)["deltas"]] for p in payloads]


async def build(deltas: int, batch: int) -> Workload:
    start = time.perf_counter()
    source, memory_ids, made = await generate(deltas)
    generated = time.perf_counter() - start
    payloads, channels = await export_all(source, batch)
    exported = time.perf_counter() - start - generated
    await source.stop()
    updates = updates_of(payloads)
    assert sum(len(u) for u in updates) == made, "export lost deltas"
    doc_writes = sum(len({doc_id for doc_id, _ in batch_updates}) for batch_updates in updates)
    print(
        f"workload: {made} deltas on {len(memory_ids)} memories in {len(channels)} channels, "
        f"{len(payloads)} payloads of <= {batch} ({sum(map(len, payloads)) / made:.0f} bytes/delta, "
        f"{made / doc_writes:.1f} deltas per touched memory per payload); "
        f"generated in {generated:.1f} s, exported in {exported:.1f} s (not timed)",
        flush=True,
    )
    return Workload(payloads, updates, made, len(memory_ids), channels)


async def apply_crdtmem(
    path: Path, workload: Workload, synchronous: str, visible: bool = False
) -> tuple[int, float]:
    """Every payload through ``Replica.apply``; with ``visible``, until every memory is also read
    back (records and events: ``Replica.settle``), else until the last payload is acknowledged
    (stored durably, vectors advanced)."""
    sync = cast(Synchronous, synchronous)
    async with Replica(path, replica_id="target", synchronous=sync) as target:
        applied = 0
        start = time.perf_counter()
        for payload in workload.payloads:
            result = await target.apply(payload)
            applied += result.applied
        if visible:
            await target.settle()
        elapsed = time.perf_counter() - start
        assert applied == workload.deltas, f"applied {applied} of {workload.deltas}"
        assert result.pending == 0
    return applied, elapsed


def apply_pycrdt(workload: Workload) -> tuple[int, float]:
    docs: dict[str, Doc[Any]] = {}
    applied = 0
    start = time.perf_counter()
    for batch in workload.updates:
        for doc_id, update in batch:
            doc = docs.get(doc_id)
            if doc is None:
                doc = docs[doc_id] = Doc()
            doc.apply_update(update)
            applied += 1
    return applied, time.perf_counter() - start


SIGNED_DOMAIN = b"crdtmem.delta-signature/1\n"
"""The prefix of what an origin signs (``crdtmem.engine.signing``; docs/protocol.md §7.8)."""


def check_signature(keys: dict[str, Ed25519PublicKey], payload_keys: Any, delta: list[Any]) -> None:
    """Verify one wire delta's origin signature (raises ``InvalidSignature``): SHA-256 of the signed
    fields (uid, origin, memory, stamp, deps, update and the claim), one Ed25519 verification."""
    uid, origin, doc_id, hlc, deps, update, seqs, also, sig = delta
    key = keys.get(origin)
    if key is None:
        key = keys[origin] = Ed25519PublicKey.from_public_bytes(payload_keys[origin])
    fields = [
        uid,
        origin,
        doc_id,
        hlc,
        deps,
        update,
        sorted(seqs.items()),
        sorted((channel, list(numbers)) for channel, numbers in also.items() if numbers),
    ]
    key.verify(sig, SIGNED_DOMAIN + hashlib.sha256(msgpack.packb(fields, use_bin_type=True)).digest())


def apply_minimal_durable(
    path: Path, workload: Workload, synchronous: str, verify: bool = False
) -> tuple[int, float]:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE docs (id TEXT PRIMARY KEY, state BLOB)")
    conn.execute(
        "CREATE TABLE deltas (id INTEGER PRIMARY KEY, uid TEXT UNIQUE, doc_id TEXT, hlc TEXT, [update] BLOB)"
    )
    docs: dict[str, Doc[Any]] = {}
    keys: dict[str, Ed25519PublicKey] = {}
    applied = 0
    try:
        start = time.perf_counter()
        for payload in workload.payloads:
            body = msgpack.unpackb(payload, raw=False)
            touched = set()
            rows = []
            for delta in body["deltas"]:
                if verify:  # nothing applied before its origin's signature is checked
                    check_signature(keys, body["keys"], delta)
                uid, _origin, doc_id, hlc, _deps, update = delta[:6]
                doc = docs.get(doc_id)
                if doc is None:
                    doc = docs[doc_id] = Doc()
                doc.apply_update(update)
                touched.add(doc_id)
                rows.append((uid, doc_id, hlc, update))
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO deltas(uid, doc_id, hlc, [update]) VALUES (?, ?, ?, ?)", rows)
            conn.executemany(
                "INSERT OR REPLACE INTO docs(id, state) VALUES (?, ?)",
                [(d, docs[d].get_update()) for d in touched],
            )
            conn.execute("COMMIT")
            applied += len(rows)
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return applied, elapsed


async def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--deltas", type=int, default=None, help="deltas to generate (default 10000, quick 2000)")
    p.add_argument("--batch", type=int, default=None, help="deltas per payload (default 2000, quick 1000)")
    p.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL", "OFF"])
    args = p.parse_args()
    deltas = args.deltas or (2_000 if args.quick else 10_000)
    batch = args.batch or (1_000 if args.quick else 2_000)
    rounds = _common.rounds_for(args)

    _common.print_machine()
    workload = await build(deltas, batch)
    print(f"{rounds} interleaved rounds; target replica synchronous={args.synchronous}", flush=True)

    with _common.workdir(args) as root:
        fresh = _common.FreshPaths(root)

        async def crdtmem_case() -> tuple[int, float]:
            return await apply_crdtmem(fresh("target"), workload, args.synchronous)

        async def visible_case() -> tuple[int, float]:
            return await apply_crdtmem(fresh("visible"), workload, args.synchronous, visible=True)

        async def pycrdt_case() -> tuple[int, float]:
            return apply_pycrdt(workload)

        async def durable_case() -> tuple[int, float]:
            return apply_minimal_durable(fresh("minimal"), workload, args.synchronous)

        async def signed_case() -> tuple[int, float]:
            return apply_minimal_durable(fresh("signed"), workload, args.synchronous, verify=True)

        # warm-up of every case (imports, first allocations, page cache, first fsyncs), not measured
        await crdtmem_case()
        await visible_case()
        await pycrdt_case()
        await durable_case()
        await signed_case()
        cases = {
            "crdtmem Replica.apply (file, stored)": crdtmem_case,
            "crdtmem apply, then read back (visible)": visible_case,
            "raw pycrdt apply_update (memory)": pycrdt_case,
            "pycrdt + msgpack + SQLite (info)": durable_case,
            "pycrdt + msgpack + Ed25519 verify + SQLite": signed_case,
        }
        series = await _common.interleave(cases, rounds, "deltas/s")

        if args.profile:
            await _common.profile_async(
                "crdtmem Replica.apply", lambda: apply_crdtmem(fresh("profile"), workload, args.synchronous)
            )

    labels = list(cases)
    crdtmem_rate = series[labels[0]].median
    met = crdtmem_rate >= TARGET_DELTAS_PER_S
    _common.print_table(
        f"Remote apply: {workload.deltas} deltas, {workload.memories} memories, payloads of {batch}",
        series,
    )
    print(
        f"\ntarget: crdtmem >= {TARGET_DELTAS_PER_S:,} deltas/s applied and stored: "
        f"{'MET' if met else 'NOT MET'} ({crdtmem_rate:,.0f} deltas/s, "
        f"{crdtmem_rate / TARGET_DELTAS_PER_S:.1%} of target)"
    )
    ratios = [
        _common.ratio(series, labels[0], labels[2], "crdtmem / raw pycrdt"),
        _common.ratio(
            series, labels[0], labels[3], "crdtmem acknowledged / minimal durable pipeline", target=0.8
        ),
        _common.ratio(series, labels[1], labels[3], "crdtmem visible / minimal durable pipeline", target=0.8),
        _common.ratio(series, labels[0], labels[4], "crdtmem acknowledged / signed durable pipeline"),
        _common.ratio(series, labels[1], labels[4], "crdtmem visible / signed durable pipeline"),
    ]
    return _common.finish(
        args,
        "remote_apply",
        series,
        ratios,
        {
            "target_deltas_per_s": TARGET_DELTAS_PER_S,
            "target_met": met,
            "deltas": workload.deltas,
            "memories": workload.memories,
            "batch": batch,
        },
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
