"""Replication under faults: a fault-injecting proxy between two `crdtmem serve` processes (drop,
duplicate, delay, reorder, cut mid-transfer) and kill -9 of either side mid-batch. After the faults
stop, both converge, every acknowledged write is present, and nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.support.processes import ServerProcess
from tests.support.proxy import FaultProxy, Faults
from tests.support.rest import Api, converged, eventually

U1 = "user:u1:memories"


TRANSIENT = (TimeoutError, aiohttp.ClientError)
"""What a write may meet while its server is being killed: no answer. Any HTTP error status (a 500,
a 4xx) is not transient: it propagates and fails the test."""


@dataclass
class Ledger:
    """What was acknowledged, and what was sent without an answer (it may or may not have landed)."""

    acked_items: set[str] = field(default_factory=set)
    unanswered_items: set[str] = field(default_factory=set)
    acked_total: int = 0
    unanswered_amounts: list[int] = field(default_factory=list)

    def check_items(self, listed: set[str]) -> None:
        assert self.acked_items <= listed, f"acknowledged items lost: {sorted(self.acked_items - listed)}"
        extra = listed - self.acked_items - self.unanswered_items
        assert not extra, f"items nobody sent: {sorted(extra)}"

    def check_total(self, total: int) -> None:
        """The counter is the acknowledged increments plus some of the unanswered ones, each once."""
        assert total - self.acked_total in subset_sums(self.unanswered_amounts), (
            f"counter {total}: acknowledged {self.acked_total}, unanswered {self.unanswered_amounts}: "
            "an increment was lost or applied twice"
        )


def subset_sums(amounts: list[int]) -> set[int]:
    sums = {0}
    for amount in amounts:
        sums |= {s + amount for s in sums}
    return sums


async def run_faulty_exchange(procs, session, tmp_path, *, rounds: int, kills: int, seed: int) -> None:
    """Each side keeps writing until it has ``rounds`` acknowledged writes and every kill is over."""
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
        # both: the proxy drops and reorders, and b applies each memory's deltas as they come, so
        # the counter (made second) may be there before the list
        for memory in (items, counter):
            await eventually(lambda m=memory: _exists(api["b"], m["id"]), what="b sees the memories")

        ledger = Ledger()
        faults_over = asyncio.Event()
        max_attempts = 50 * rounds

        async def writer(side: str) -> None:
            acked = attempts = 0
            while acked < rounds or not faults_over.is_set():
                attempts += 1
                assert attempts <= max_attempts, f"{side}: {acked} of {rounds} writes acknowledged"
                item = f"{side}-{attempts}"
                try:
                    await api[side].patch(items["id"], add_items=[item])
                except TRANSIENT:
                    ledger.unanswered_items.add(item)
                    await asyncio.sleep(0.05)
                    continue
                ledger.acked_items.add(item)
                acked += 1
                amount = rng.randint(1, 5)
                try:
                    await api[side].patch(counter["id"], increment=amount)
                except TRANSIENT:
                    ledger.unanswered_amounts.append(amount)
                    await asyncio.sleep(0.05)
                    continue
                ledger.acked_total += amount

        writers = [asyncio.create_task(writer(side)) for side in "ab"]
        try:
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.2, 0.8))
                victim = rng.choice([a, b])
                victim.kill()  # mid-batch: writes and pushes are in flight right now
                await asyncio.sleep(rng.uniform(0, 0.3))
                await asyncio.to_thread(victim.start)
            faults_over.set()
            await asyncio.gather(*writers)
        finally:
            for task in writers:
                task.cancel()
        assert len(ledger.acked_items) >= 2 * rounds
        proxy.heal()
        apis = list(api.values())
        await eventually(lambda: converged(apis), timeout=60, what="convergence after faults")
        for side in apis:
            ledger.check_items(set((await side.get(items["id"]))["content"]))
            ledger.check_total((await side.get(counter["id"]))["content"])
        print(
            "proxy",
            proxy.stats,
            "acked",
            len(ledger.acked_items),
            ledger.acked_total,
            "unanswered",
            len(ledger.unanswered_items),
            ledger.unanswered_amounts,
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


def test_the_ledger_catches_a_lost_or_doubled_write():
    ledger = Ledger({"a-1", "b-1"}, {"a-2"}, acked_total=7, unanswered_amounts=[2, 5])
    ledger.check_items({"a-1", "b-1"})
    ledger.check_items({"a-1", "b-1", "a-2"})
    with pytest.raises(AssertionError, match="lost"):
        ledger.check_items({"a-1"})
    with pytest.raises(AssertionError, match="nobody sent"):
        ledger.check_items({"a-1", "b-1", "b-9"})
    for total in (7, 9, 12, 14):
        ledger.check_total(total)
    for total in (6, 8, 11, 16, 21):  # lost, or an increment applied twice
        with pytest.raises(AssertionError, match="lost or applied twice"):
            ledger.check_total(total)
