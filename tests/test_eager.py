"""crdtmem.eager: a coroutine stepped on the caller's stack, finished there, or resumed in a task
the way a task would run it (what it waits for, failures, cancellation)."""

from __future__ import annotations

import asyncio

import pytest

from crdtmem.eager import start_now


async def test_a_coroutine_that_does_not_suspend_finishes_on_the_callers_stack() -> None:
    ran: list[str] = []

    async def quick() -> int:
        ran.append("ran")
        return 7

    future = start_now(quick())
    assert ran == ["ran"] and future.done() and future.result() == 7


async def test_a_coroutine_that_fails_at_once_hands_its_failure_to_the_future() -> None:
    async def broken() -> None:
        raise ValueError("no")

    future = start_now(broken())
    assert future.done()
    with pytest.raises(ValueError, match="no"):
        future.result()


async def test_a_coroutine_that_suspends_goes_on_in_a_task_with_what_it_waited_for() -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def waits() -> str:
        steps.append("before")
        got = await gate
        steps.append(got)
        await asyncio.sleep(0)  # a bare yield, too
        return got + "!"

    future = start_now(waits())
    assert steps == ["before"] and not future.done()
    gate.set_result("opened")
    assert await asyncio.wait_for(future, 5) == "opened!"
    assert steps == ["before", "opened"]


async def test_a_failure_of_what_it_waits_for_is_raised_inside_the_coroutine() -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def waits() -> str:
        try:
            return await gate
        except KeyError:
            return "caught"

    future = start_now(waits())
    gate.set_exception(KeyError("k"))
    assert await asyncio.wait_for(future, 5) == "caught"


async def test_cancelling_the_rest_cancels_what_the_coroutine_waits_for() -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    cleaned: list[str] = []

    async def waits() -> str:
        try:
            return await gate
        finally:
            cleaned.append("finally")

    future = start_now(waits())
    await asyncio.sleep(0)
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await future
    assert gate.cancelled() and cleaned == ["finally"]
