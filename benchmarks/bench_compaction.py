"""Compaction: what folding the log behind the horizon gives back, for one long-lived memory.

Replica A writes one memory ``--writes`` times (default 10,000; ``--quick`` 1,000): a conversation
(one 74-character message per append) and a fact (rewritten each time). Replica B pulls everything
and A learns from B's payload what B holds, so every entry is acknowledged by every known peer.
Then A compacts. Before and after, on A's file:

- the bytes SQLite uses (pages in use, free pages left out: compaction frees pages, which SQLite
  reuses; the file shrinks only by a ``VACUUM``) and the file after ``VACUUM``, against the text the
  memory holds (the messages' UTF-8 bytes; the fact's final value);
- the memory's stored state: snapshot plus tail (what loading it reads), and the delta rows;
- the whole state of each memory (its Yrs update): folding the log leaves it as it is (Yrs keeps a
  tombstone per overwritten register entry), and the fact, mostly tombstones, is rebased by the
  compaction (``crdtmem.engine.rebase``): rebuilt from its live content as a new epoch, which B
  then takes as it pulls.

Targets (issue): state bounded once peers acknowledged; the file <= 5x the text once compacted.

Run: ``python benchmarks/bench_compaction.py`` (``--quick``, ``--writes N``, ``--json FILE``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import _common

from crdtmem import Replica

CH = "user:u1:memories"
MESSAGE = "x" * 64


def _used(path: Path) -> tuple[int, int]:
    """(bytes in use, file bytes after VACUUM) of a closed SQLite file (a copy is vacuumed)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, free, size = (
            conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
        )
        copy = Path(tempfile.mkdtemp()) / "vacuumed.db"
        conn.execute("VACUUM INTO ?", (str(copy),))
    finally:
        conn.close()
    return (pages - free) * size, copy.stat().st_size


def _stored(replica: Replica, memory_id: str) -> tuple[int, int, int]:
    """(snapshot bytes, tail bytes, delta rows) of one memory as the store holds it."""
    stored = replica.store.load_doc(memory_id)
    history = replica.store.history(memory_id)
    if stored is None:
        return 0, 0, len(history)
    return len(stored.snapshot or b""), sum(len(u) for _, u in stored.tail), len(history)


async def run(root: Path, kind: str, writes: int) -> dict[str, object]:
    path = root / f"{kind}.db"
    async with Replica(path, replica_id="a", synchronous="NORMAL") as a, Replica(replica_id="b") as b:
        if kind == "conversation":
            memory = await a.add(kind="conversation", user_id="u1")
            for n in range(writes):
                await a.append_message(memory.id, role="user", text=f"{n:08d} {MESSAGE}")
            text = sum(len(m["text"].encode()) + len(m["role"]) for m in (await a.get(memory.id)).content)
        else:
            memory = await a.add("v0", user_id="u1")
            for n in range(writes):
                await a.update(memory.id, content=f"value {n:08d}")
            text = len(json.dumps((await a.get(memory.id)).content).encode())
        await a.settle()
        while True:  # b pulls everything, page by page
            before = b.version_vectors([CH])
            await b.apply(await a.export_since([CH], before, limit=2_000))
            if b.version_vectors([CH]) == before:
                break
        await a.apply(await b.export_since([CH], a.version_vectors([CH])))  # a learns what b holds
        file_before = _used(path)
        state_before = len(a.store.load_state(memory.id) or b"")
        stored_before = _stored(a, memory.id)
        start = time.perf_counter()
        done = await a.compact()
        seconds = time.perf_counter() - start
        state_after = len(a.store.load_state(memory.id) or b"")
        stored_after = _stored(a, memory.id)
        await b.apply(await a.export_since([CH], b.version_vectors([CH])))  # b takes the rebase
        peer_state = len(b.store.load_state(memory.id) or b"")
    return {
        "kind": kind,
        "writes": writes,
        "text_bytes": text,
        "folded": done.folded,
        "compact_seconds": seconds,
        "state_bytes": [state_before, state_after],
        "rebased": done.rebased,
        "peer_state_bytes": peer_state,
        "stored": {"before": stored_before, "after": stored_after},
        "file_before": file_before,
        "file": _used(path),
    }


async def main() -> int:
    parser = _common.parser(__doc__ or "")  # --quick: 1,000 writes; --rounds is not used (bytes)
    parser.add_argument("--writes", type=int, default=None)
    args = parser.parse_args()
    writes = args.writes or (1_000 if args.quick else 10_000)
    _common.print_machine()
    results = []
    with _common.workdir(args) as root:
        for kind in ("conversation", "fact"):
            result = await run(root, kind, writes)
            results.append(result)
            before = result["file_before"]  # type: ignore[assignment]
            text = int(result["text_bytes"])  # type: ignore[call-overload]
            used, vacuumed = result["file"]  # type: ignore[misc]
            snap0, tail0, rows0 = result["stored"]["before"]  # type: ignore[index]
            snap1, tail1, rows1 = result["stored"]["after"]  # type: ignore[index]
            print(f"\n{kind}, {writes:,} writes, {text:,} bytes of text")
            print(
                f"  not compacted: {before[0]:,} bytes in use = {before[0] / text:.1f}x the text; "
                f"after VACUUM {before[1]:,} = {before[1] / text:.1f}x"
            )
            print(
                f"  compacted:     {used:,} bytes in use = {used / text:.1f}x; after VACUUM {vacuumed:,} "
                f"= {vacuumed / text:.1f}x (compact took {result['compact_seconds']:.2f} s)"
            )
            print(f"  delta rows of the memory: {rows0:,} -> {rows1:,}")
            print(f"  snapshot {snap0:,} -> {snap1:,} B, tail {tail0:,} -> {tail1:,} B")
            print(
                f"  whole state: {result['state_bytes'][0]:,} -> {result['state_bytes'][1]:,} B"  # type: ignore[index]
                f" (rebased: {result['rebased']}; on the peer after its next pull: "
                f"{result['peer_state_bytes']:,} B)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
