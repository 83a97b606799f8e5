"""Starting a coroutine on the caller's stack (crdtmem.sync.eager): what does not suspend finishes
at once, what does goes on in a task, with its outcome and cancellation as in a task."""

from __future__ import annotations

import asyncio

import pytest

from crdtmem.sync.eager import start_now


async def test_a_coroutine_that_never_suspends_finishes_before_start_now_returns():
    done: list[str] = []

    async def write() -> None:
        done.append("written")

    assert start_now(write()) is None
    assert done == ["written"]


async def test_what_it_raises_before_suspending_is_raised_by_start_now():
    async def fails() -> None:
        raise ConnectionResetError("closing")

    with pytest.raises(ConnectionResetError):
        start_now(fails())


async def test_a_suspended_coroutine_goes_on_in_a_task_with_its_outcome():
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[str] = loop.create_future()
    failing: asyncio.Future[str] = loop.create_future()
    steps: list[str] = []

    async def drains() -> None:
        steps.append("written")
        steps.append(await gate)  # flow control: waits for the buffer to drain
        await asyncio.sleep(0)  # a bare yield too
        try:
            await failing
        except ValueError as exc:
            steps.append(f"saw {exc}")

    task = start_now(drains())
    assert task is not None and steps == ["written"], "the part before the first wait runs at once"
    gate.set_result("drained")
    await asyncio.sleep(0)
    failing.set_exception(ValueError("reset"))
    await asyncio.wait_for(task, 5)
    assert steps == ["written", "drained", "saw reset"]


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits():
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []

    async def waits() -> None:
        try:
            await gate
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = start_now(waits())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]
