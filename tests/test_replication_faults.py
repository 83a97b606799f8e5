"""Replication under faults: a fault-injecting proxy between two `crdtmem serve` processes (drop,
duplicate, delay, reorder, cut mid-transfer) and kill -9 of either side mid-batch. After the faults
stop, both converge, every acknowledged write is present, and nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest

from tests.support.processes import ServerProcess
from tests.support.proxy import FaultProxy, Faults
from tests.support.rest import Api, converged, eventually

U1 = "user:u1:memories"


async def run_faulty_exchange(procs, session, tmp_path, *, rounds: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    a = ServerProcess(tmp_path, "a", channels=[U1], extra=["--ack-timeout", "2"]).start()
    procs.append(a)
    async with FaultProxy(
        a.url, Faults(drop=0.1, duplicate=0.1, delay=0.01, reorder=0.1, cut=0.02), seed=seed
    ) as proxy:
        b = ServerProcess(
            tmp_path, "b", channels=[U1], peers=[proxy.url], extra=["--slow-after", "3", "--ack-timeout", "2"]
        ).start()
        procs.append(b)
        api = {"a": Api(session, a.url), "b": Api(session, b.url)}
        items = await api["a"].add([], kind="list", user_id="u1")
        counter = await api["a"].add(0, kind="counter", user_id="u1")
        await eventually(lambda: _exists(api["b"], counter["id"]), what="b sees the memories")

        acked_items: set[str] = set()
        tried_items: set[str] = set()
        totals = {"acked": 0, "tried": 0}

        async def writer(side: str) -> None:
            for i in range(rounds):
                item = f"{side}-{i}"
                amount = rng.randint(1, 5)
                tried_items.add(item)
                totals["tried"] += amount
                try:
                    await api[side].patch(items["id"], add_items=[item])
                    acked_items.add(item)
                    await api[side].patch(counter["id"], increment=amount)
                    totals["acked"] += amount
                except (TimeoutError, aiohttp.ClientError, AssertionError):
                    await asyncio.sleep(0.05)

        writers = [asyncio.create_task(writer(side)) for side in "ab"]
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            victim = rng.choice([a, b])
            victim.kill()  # mid-batch: writes and pushes are in flight right now
            await asyncio.sleep(rng.uniform(0, 0.3))
            await asyncio.to_thread(victim.start)
        await asyncio.gather(*writers)
        acked_total, tried_total = totals["acked"], totals["tried"]
        proxy.heal()
        apis = list(api.values())
        await eventually(lambda: converged(apis), timeout=60, what="convergence after faults")
        for side in apis:
            listed = set((await side.get(items["id"]))["content"])
            assert acked_items <= listed <= tried_items, "an acknowledged write was lost"
            total = (await side.get(counter["id"]))["content"]
            assert acked_total <= total <= tried_total, "a delta was applied twice or lost"
        print(
            "proxy",
            proxy.stats,
            "acked",
            len(acked_items),
            acked_total,
            "tried",
            len(tried_items),
            tried_total,
        )
        assert proxy.stats["dropped"] + proxy.stats["duplicated"] + proxy.stats["reordered"] > 0


async def test_faulty_network_and_kill9_converge(procs, session, tmp_path):
    await run_faulty_exchange(procs, session, tmp_path, rounds=80, kills=2, seed=7)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(5))
async def test_faulty_network_soak(procs, session, tmp_path, seed):
    await run_faulty_exchange(procs, session, tmp_path, rounds=600, kills=10, seed=seed)


async def _exists(api: Api, memory_id: str) -> bool:
    return await api.get(memory_id) is not None
