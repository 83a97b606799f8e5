"""The simulated network (crdtmem.testing.network): each fault happens as configured, refused
payloads change nothing, partitions block and heal, and a seed reproduces a run."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from crdtmem import ApplyResult, MalformedPayload, PayloadError, Replica
from crdtmem.testing import Faults, SimulatedNetwork, assert_converged
from crdtmem.testing.network import CORRUPTIONS, corrupt_payload

CLOCK_MS = 1_700_000_000_000


def _clock() -> int:
    return CLOCK_MS


@pytest.fixture
async def trio() -> AsyncIterator[tuple[Replica, Replica, Replica]]:
    async with (
        Replica(None, replica_id="a", wall_clock=_clock) as a,
        Replica(None, replica_id="b", wall_clock=_clock) as b,
        Replica(None, replica_id="c", wall_clock=_clock) as c,
    ):
        yield a, b, c


def _network(replicas: tuple[Replica, ...], faults: Faults, seed: int = 1, **kwargs: int) -> SimulatedNetwork:
    net = SimulatedNetwork(random.Random(seed), faults, **kwargs)
    for replica in replicas:
        net.join(replica)
    return net


async def _fill(replica: Replica, count: int = 3) -> None:
    for i in range(count):
        await replica.add(f"fact {i} from {replica.id}", user_id="u1")


async def _ids(replica: Replica) -> set[str]:
    return {m.id for m in await replica.list(include_deleted=True)}


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError, match="probability"):
        Faults(drop=1.5)
    with pytest.raises(ValueError, match="max_delay"):
        Faults(max_delay=0)


async def test_perfect_network_delivers_everything_in_order(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, _ = trio
    net = _network(trio, Faults.none())
    await _fill(a)
    first = await net.send("a", "b")
    await a.add("one more", user_id="u1")
    second = await net.send("a", "b")
    deliveries = await net.deliver()
    assert [d.message for d in deliveries] == [first, second]  # FIFO
    assert deliveries[0].result is not None and deliveries[0].result.applied == 3
    assert deliveries[1].result is not None and deliveries[1].result.duplicates == 3
    assert await _ids(b) == await _ids(a)
    assert net.stats.sent == net.stats.delivered == 2


async def test_drop_loses_every_message(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, _ = trio
    net = _network(trio, Faults(drop=1.0))
    await _fill(a)
    assert await net.send("a", "b") is None
    assert not net.in_flight
    assert net.stats.dropped == 1
    assert await _ids(b) == set()


async def test_duplicate_delivers_twice_and_the_copy_is_harmless(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, _, _ = trio
    net = _network(trio, Faults(duplicate=1.0, reorder=False))
    await _fill(a)
    original = await net.send("a", "b")
    assert original is not None and len(net.in_flight) == 2
    assert net.in_flight[1].copy_of == original.id
    first, copy = await net.deliver()
    assert first.result is not None and first.result.applied == 3
    assert copy.result is not None and (copy.result.applied, copy.result.duplicates) == (0, 3)
    assert net.stats.duplicated == 1


async def test_delay_holds_a_message_for_its_rounds(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, _ = trio
    net = _network(trio, Faults(delay=1.0, max_delay=2))
    await _fill(a)
    message = await net.send("a", "b")
    assert message is not None and 1 <= message.hold <= 2
    hold, rounds = message.hold, 0
    while not await net.deliver():
        rounds += 1
    assert rounds == hold
    assert net.stats.delayed == 1 and await _ids(b) == await _ids(a)


async def test_reorder_shuffles_delivery_and_fifo_does_not(trio: tuple[Replica, Replica, Replica]) -> None:
    a, _, _ = trio
    await _fill(a, 1)
    orders = []
    for seed in range(8):
        net = _network(trio, Faults(), seed=seed)
        sent = [await net.send("a", target) for target in ("b", "c", "b", "c")]
        delivered = [d.message for d in await net.deliver()]
        assert sorted(m.id for m in delivered) == sorted(m.id for m in sent if m is not None)
        orders.append([m.id for m in delivered])
    assert any(order != sorted(order) for order in orders)
    fifo = _network(trio, Faults.none())
    for target in ("b", "c", "b"):
        await fifo.send("a", target)
    assert [d.message.id for d in await fifo.deliver()] == [1, 2, 3]


async def test_truncated_payloads_are_refused_and_change_nothing(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, b, _ = trio
    net = _network(trio, Faults(truncate=1.0))
    await _fill(a)
    await net.send("a", "b")
    (delivery,) = await net.deliver()
    assert isinstance(delivery.error, MalformedPayload) and delivery.result is None
    assert net.stats.truncated == net.stats.rejected == 1
    assert await _ids(b) == set() and b.version_vectors() == {}


@pytest.mark.parametrize("how", CORRUPTIONS)
async def test_every_corruption_is_detected(how: str, trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, _ = trio
    await _fill(a)
    await _fill(b, 1)
    before = (await _ids(b), b.version_vectors())
    payload = await a.export_since("user:u1:memories", b.version_vector("user:u1:memories"))
    for seed in range(20):
        damaged = corrupt_payload(payload, how, random.Random(seed))
        assert damaged != payload
        with pytest.raises(PayloadError):
            await b.apply(damaged)
    assert (await _ids(b), b.version_vectors()) == before
    await b.apply(payload)  # the intact payload still applies afterwards
    assert await _ids(a) <= await _ids(b)


async def test_corrupting_network_refuses_everything(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, _ = trio
    net = _network(trio, Faults(corrupt=1.0))
    await _fill(a)
    for _ in range(10):
        await net.send("a", "b")
    deliveries = await net.deliver_all()
    assert len(deliveries) == 10 and all(d.error is not None for d in deliveries)
    assert net.stats.corrupted == net.stats.rejected == 10
    assert await _ids(b) == set()


async def test_a_replica_accepting_a_damaged_payload_fails_the_check(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, _, _ = trio

    class NoStore:
        def pending(self) -> list[object]:
            return []

        def doc_count(self) -> int:
            return 0

    class Gullible:
        id = "gullible"
        channels = None
        store = NoStore()

        def version_vectors(self, channels: object = None) -> dict[str, dict[str, int]]:
            return {}

        async def apply(self, data: bytes) -> ApplyResult:
            return ApplyResult(0, 0, 0, 0)

    net = _network((a,), Faults(truncate=1.0))
    net.nodes["gullible"] = Gullible()  # type: ignore[assignment]
    await _fill(a, 1)
    await net.send("a", "gullible")
    with pytest.raises(AssertionError, match="accepted a payload damaged"):
        await net.deliver()


async def test_partition_blocks_sends_and_in_flight_messages(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, c = trio
    net = _network(trio, Faults.none())
    await _fill(a)
    await net.send("a", "b")  # in flight when the partition starts
    net.partition(["a", "c"], ["b"])
    assert net.partitioned and net.reachable("a", "c") and not net.reachable("a", "b")
    assert await net.send("a", "b") is None
    assert await net.deliver() == []
    assert net.stats.blocked == 1 and net.stats.undeliverable == 1
    await net.exchange("a", "c")
    assert await _ids(c) == await _ids(a) and await _ids(b) == set()


async def test_a_node_in_no_group_is_cut_off(trio: tuple[Replica, Replica, Replica]) -> None:
    net = _network(trio, Faults.none())
    net.partition(["a", "b"])
    assert net.reachable("a", "b")
    assert not net.reachable("a", "c") and not net.reachable("c", "b")


async def test_partition_heals_and_the_sides_converge(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, c = trio
    net = _network(trio, Faults.none())
    first = await a.add("shared fact", user_id="u1")
    await net.exchange("a", "b")
    await net.exchange("a", "c")
    net.partition(["a"], ["b", "c"])
    await a.update(first.id, content="a's side")
    await b.update(first.id, content="b's side")
    await _fill(c, 2)
    await net.exchange("b", "c")
    await net.exchange("a", "b")  # blocked
    assert (await b.get(first.id)).content == "b's side"
    net.heal()
    assert not net.partitioned
    await net.exchange("a", "b")
    await net.exchange("b", "c")
    await net.exchange("a", "c")
    assert_converged(trio)
    conflict = (await a.get(first.id)).conflicts
    assert conflict == ("content",)


async def test_push_leaves_a_gap_that_a_pull_fills(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, _ = trio
    net = _network(trio, Faults.none())
    memory = await a.add("v1", user_id="u1")
    await net.push("a", "b")
    net.in_flight.clear()  # the first push is lost
    await a.update(memory.id, content="v2")
    await net.push("a", "b")  # carries only v2, which depends on the lost v1
    (delivery,) = await net.deliver()
    assert delivery.result is not None and delivery.result.pending == 1
    assert await _ids(b) == set()
    await net.send("a", "b")  # a pull asks by b's version vector and fills the gap
    await net.deliver()
    assert (await b.get(memory.id)).content == "v2"
    assert_converged([a, b])


async def test_page_size_bounds_each_message(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, _ = trio
    net = _network(trio, Faults.none(), page_size=2)
    await _fill(a, 5)
    sends = 0
    while await _ids(b) != await _ids(a):
        await net.send("a", "b")
        (delivery,) = await net.deliver()
        assert delivery.result is not None and delivery.result.applied <= 2
        sends += 1
    assert sends >= 3


async def test_settle_converges_after_chaos(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, c = trio
    net = _network(trio, Faults.chaos(), seed=3, page_size=3)
    rng = random.Random(5)
    for step in range(40):
        replica = rng.choice(trio)
        await replica.add(f"fact {step}", user_id=rng.choice(["u1", "u2"]), topics=rng.choice([[], ["t"]]))
        sender, receiver = rng.sample(["a", "b", "c"], 2)
        await (net.push if step % 2 else net.send)(sender, receiver)
        if step % 3 == 0:
            await net.deliver(2)
        if step == 10:
            net.partition(["a"], ["b", "c"])
    assert net.stats.dropped + net.stats.rejected > 0
    rounds = await net.settle()
    assert rounds >= 1 and not net.partitioned and not net.in_flight
    assert_converged([a, b, c])
    assert len(await _ids(a)) == 40


async def _scripted_run(seed: int) -> list[str]:
    async with (
        Replica(None, replica_id="a", wall_clock=_clock) as a,
        Replica(None, replica_id="b", wall_clock=_clock) as b,
    ):
        net = _network((a, b), Faults.chaos(), seed=seed, page_size=2)
        for step in range(12):
            await (a if step % 3 else b).add(f"fact {step}", user_id="u1")
            await net.send("a", "b")
            await net.push("b", "a")
            if step % 4 == 3:
                await net.deliver()
        await net.settle()
        assert_converged([a, b])
        return net.trace


async def test_a_seed_reproduces_the_run() -> None:
    first, again, other = await _scripted_run(11), await _scripted_run(11), await _scripted_run(12)
    assert first == again
    assert first != other
