"""Per-operation cost as the store grows: 1,000 memories against 100,000.

Each round grows one file-backed replica (``synchronous=FULL`` while measured) through the sizes in
``--sizes`` (default 1,000 and 100,000; ``--quick``: 1,000 and 10,000). The growth itself is not
timed (32 concurrent writers, so commits group). At each size a window of ``--window`` operations
of each kind is timed:

- add: a new fact with metadata and a tag, one ``await replica.add(...)`` at a time;
- update: a random existing memory's content;
- get: a random existing memory, read from the store (the replica runs without a record cache, so
  every size measures the same path, not how much of the store a cache holds);
- list: ``replica.list(user_id=..., limit=5)`` for a random user (100 users, so at least 10 each).

The ratio per operation is its rate at the largest size against the smallest, from the same round.

Target: every operation at 100,000 memories costs <= 1.2x what it costs at 1,000 (rate ratio >= 0.83).

Run: ``python benchmarks/bench_store_scaling.py`` (several minutes, mostly growing the store),
``--quick`` (about a minute).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable

import _common

from crdtmem import Replica

USERS = 100
OPS = ("add", "update", "get", "list")


async def grow(replica: Replica, ids: list[str], target: int, rng: random.Random) -> None:
    async def writer(count: int) -> None:
        for _ in range(count):
            memory = await replica.add(
                f"memory {len(ids)}: something an agent learned",
                user_id=f"u{rng.randrange(USERS)}",
                metadata={"n": len(ids)},
            )
            ids.append(memory.id)

    missing = target - len(ids)
    if missing > 0:
        await asyncio.gather(*(writer(missing // 32 + (1 if k < missing % 32 else 0)) for k in range(32)))


async def window(op: str, replica: Replica, ids: list[str], count: int, rng: random.Random) -> float:
    call: Callable[[], Awaitable[object]]

    async def add() -> None:
        memory = await replica.add(
            "a new memory", user_id=f"u{rng.randrange(USERS)}", metadata={"k": 1}, tags=["t"]
        )
        ids.append(memory.id)

    if op == "add":
        call = add
    elif op == "update":

        def call() -> Awaitable[object]:
            return replica.update(rng.choice(ids), content=f"changed {rng.random()}")

    elif op == "get":

        def call() -> Awaitable[object]:
            return replica.get(rng.choice(ids))

    else:

        def call() -> Awaitable[object]:
            return replica.list(user_id=f"u{rng.randrange(USERS)}", limit=5)

    start = time.perf_counter()
    for _ in range(count):
        await call()
    return count / (time.perf_counter() - start)


async def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="store sizes (1000 100000)")
    p.add_argument("--window", type=int, default=300, help="operations timed per kind and size (300)")
    args = p.parse_args()
    sizes = sorted(args.sizes or ([1_000, 10_000] if args.quick else [1_000, 100_000]))
    rounds = _common.rounds_for(args) if args.rounds or args.quick else 2

    _common.print_machine()
    print(f"{rounds} rounds; sizes {sizes}; windows of {args.window}", flush=True)
    series: dict[str, _common.Series] = {}
    with _common.workdir(args) as root:
        fresh = _common.FreshPaths(root)
        for number in range(rounds):
            rng = random.Random(number)
            ids: list[str] = []
            path = fresh("scaling")
            for size in sizes:
                async with Replica(path, replica_id="s", synchronous="OFF") as filling:
                    await grow(filling, ids, size, rng)
                async with Replica(path, replica_id="s", cache_size=0) as replica:
                    await window("get", replica, ids, args.window, rng)  # warm SQLite's page cache
                    order = OPS if number % 2 == 0 else OPS[::-1]
                    for op in order:
                        rate = await window(op, replica, ids, args.window, rng)
                        label = f"{op} at {size:,}"
                        series.setdefault(label, _common.Series(label, "ops/s")).rates.append(rate)
                print(f"  round {number + 1}/{rounds}: measured at {size:,} memories", flush=True)

    _common.print_table(f"Operations at {', '.join(f'{s:,}' for s in sizes)} memories", series)
    small, large = sizes[0], sizes[-1]
    ratios = [
        _common.ratio(
            series,
            f"{op} at {large:,}",
            f"{op} at {small:,}",
            f"{op}: rate at {large:,} / at {small:,}",
            1 / 1.2,
        )
        for op in OPS
    ]
    return _common.finish(args, "store_scaling", series, ratios, {"sizes": sizes})


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
