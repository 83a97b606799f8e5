"""Writes to one long-lived memory: how the cost of a write grows with the memory's history.

An agent's conversation is one memory that gets a message appended at every turn, and a fact may be
rewritten thousands of times. Each round, on a fresh file-backed replica (``synchronous=FULL``):

- conversation: create it, append N messages one ``await replica.append_message(...)`` at a time;
- fact: create it, ``await replica.update(..., content=...)`` N times.

The appends/updates per second are measured over the first and the last W writes of each run. The
ratio last / first shows how much slower a write to the memory gets once it holds N messages (or
has N overwritten values); 1.0 would mean no growth at all. Ratios are against the first window of
the same run, so the machine's speed cancels out.

What still grows, per write: the document's full state and its materialized record are rewritten
in the write's transaction (``docs/architecture.md``, "Long-lived memories"). Reading the messages
back no longer does: the document keeps them in step with the change deltas (``MessageLog``).

Run: ``python benchmarks/bench_hot_memory.py`` (about a minute; ``--quick`` about 10 s;
``--writes N`` to set N).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import _common

from crdtmem import Replica

WINDOW = 200


async def run(path: Path, kind: str, writes: int) -> tuple[float, float]:
    """Writes per second over the first and over the last ``WINDOW`` writes to one memory."""
    async with Replica(path, replica_id="hot") as replica:
        write: Callable[[int], Awaitable[object]]
        if kind == "conversation":
            memory = await replica.add([], kind="conversation", user_id="u1")

            def write(i: int) -> Awaitable[object]:
                return replica.append_message(
                    memory.id, role="user", text=f"turn {i}: the user says something"
                )

        else:
            memory = await replica.add("v0", kind="fact", user_id="u1")

            def write(i: int) -> Awaitable[object]:
                return replica.update(memory.id, content=f"value {i}: the fact as it now stands")

        # the time before write i, for the windows' edges (the two windows may touch: writes = 2 x WINDOW)
        edges = {0, WINDOW, writes - WINDOW, writes}
        at: dict[int, float] = {}
        for i in range(writes):
            if i in edges:
                at[i] = time.perf_counter()
            await write(i)
        at[writes] = time.perf_counter()
    return WINDOW / (at[WINDOW] - at[0]), WINDOW / (at[writes] - at[writes - WINDOW])


async def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--writes", type=int, default=None, help="writes per memory (default 3000, quick 800)")
    args = p.parse_args()
    writes = max(args.writes or (800 if args.quick else 3_000), 2 * WINDOW)
    rounds = _common.rounds_for(args) if args.rounds or args.quick else 3

    _common.print_machine()
    print(f"{rounds} interleaved rounds of {writes} writes per memory; windows of {WINDOW}", flush=True)
    series: dict[str, _common.Series] = {}
    with _common.workdir(args) as root:
        fresh = _common.FreshPaths(root)
        for number in range(rounds):
            for kind in ("conversation", "fact") if number % 2 == 0 else ("fact", "conversation"):
                first, last = await run(fresh(kind), kind, writes)
                for label, rate in ((f"{kind}, first {WINDOW}", first), (f"{kind}, last {WINDOW}", last)):
                    series.setdefault(label, _common.Series(label, "writes/s")).rates.append(rate)
            print(f"  round {number + 1}/{rounds} done", flush=True)

    _common.print_table(f"Writes to one memory, first vs last {WINDOW} of {writes}", series)
    ratios = [
        _common.ratio(series, f"{kind}, last {WINDOW}", f"{kind}, first {WINDOW}", f"{kind} last / first")
        for kind in ("conversation", "fact")
    ]
    return _common.finish(args, "hot_memory", series, ratios, {"writes": writes, "window": WINDOW})


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
