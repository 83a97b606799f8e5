"""KeyedLocks: one holder per key at a time, released on errors and cancellation, no entries left."""

from __future__ import annotations

import asyncio

import pytest

from crdtmem.engine.locks import KeyedLocks


async def test_two_holders_of_a_shared_key_never_overlap() -> None:
    locks = KeyedLocks()
    inside: list[str] = []
    overlaps = 0

    async def hold(name: str, keys: list[str]) -> None:
        nonlocal overlaps
        for _ in range(20):
            async with locks.hold(keys):
                overlaps += bool(inside)
                inside.append(name)
                await asyncio.sleep(0)
                inside.remove(name)

    await asyncio.gather(hold("a", ["m1", "m2"]), hold("b", ["m2", "m3"]), hold("c", ["m3", "m1"]))
    assert overlaps == 0
    assert len(locks) == 0


async def test_holders_of_different_keys_run_side_by_side() -> None:
    locks = KeyedLocks()
    both = asyncio.Event()
    entered = 0

    async def hold(key: str) -> None:
        nonlocal entered
        async with locks.hold([key]):
            entered += 1
            if entered == 2:
                both.set()
            await asyncio.wait_for(both.wait(), 1)

    await asyncio.gather(hold("m1"), hold("m2"))
    assert len(locks) == 0


async def test_an_exception_inside_releases_every_lock() -> None:
    locks = KeyedLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold(["m1", "m2"]):
            raise RuntimeError("boom")
    assert len(locks) == 0
    async with locks.hold(["m2", "m1"]):  # taken again at once: nothing was left held
        assert len(locks) == 2
    assert len(locks) == 0


async def test_a_holder_cancelled_while_waiting_leaves_no_lock_behind() -> None:
    locks = KeyedLocks()
    release = asyncio.Event()

    async def first() -> None:
        async with locks.hold(["m2"]):
            await release.wait()

    holder = asyncio.create_task(first())
    await asyncio.sleep(0)

    async def second() -> None:
        async with locks.hold(["m1", "m2"]):  # takes m1, then waits for m2
            raise AssertionError("never entered")

    waiter = asyncio.create_task(second())
    await asyncio.sleep(0)
    assert len(locks) == 2
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with locks.hold(["m1"]):  # m1 was given back
        pass
    release.set()
    await holder
    assert len(locks) == 0


async def test_repeated_keys_are_held_once() -> None:
    locks = KeyedLocks()
    async with locks.hold(["m1", "m1", "m1"]):
        assert len(locks) == 1
    assert len(locks) == 0
