"""Coroutines started on the caller's own stack, as Python 3.12's eager tasks are.

A commit listener is a plain function: it cannot await, and a task it creates first runs at the
loop's next turn, after the rest of the write that committed. :func:`start_now` runs a coroutine
(a send that only buffers and writes to a socket) on the listener's stack up to its first
suspension, so its effect is there before the listener returns; what suspends goes on in a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def start_now(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` on the caller's stack up to its first suspension; if it finishes there, the
    returned future is already done; otherwise the rest runs in a task, which is returned."""
    loop = asyncio.get_running_loop()
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        future: asyncio.Future[T] = loop.create_future()
        future.set_result(done.value)
        return future
    except BaseException as exc:  # the coroutine's own failure, handed on
        future = loop.create_future()
        future.set_exception(exc)
        return future
    return loop.create_task(_resume(coro, yielded))


async def _resume(coro: Coroutine[Any, Any, T], yielded: Any) -> T:
    """Drive ``coro`` on from a suspension, the way a task does: a yielded future is waited for
    (the coroutine reads its outcome when resumed), a bare yield is one turn of the loop; a
    cancellation cancels the future it waits on, or is thrown in at a bare yield."""
    while True:
        cancelled: asyncio.CancelledError | None = None
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False
                await asyncio.wait({yielded})
        except asyncio.CancelledError as exc:
            cancelled = exc
            if yielded is not None:
                yielded.cancel()
        try:
            # at a bare yield a cancellation is thrown in; a waited-for future was cancelled above
            yielded = coro.throw(cancelled) if cancelled is not None and yielded is None else coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
