"""Starting a coroutine at once, on the caller's stack, instead of at the event loop's next turn.

A link pushes a commit from inside the commit listener (a plain function), so that the frame is on
the socket before the writer's own work after its commit and before the loop's next turn. Sending
a WebSocket frame is a coroutine that, uncompressed and with the socket's buffer below its limit,
never suspends: :func:`start_now` runs it to its end right there. When it does suspend (flow
control, a large compressed frame), the rest of it runs in a task, exactly as it would have in one
(Python 3.12's eager task start, which 3.11 lacks). Only the first few links of a commit push from
its listener (:data:`PUSHES_PER_COMMIT`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

PUSHES_PER_COMMIT = 4
"""At most this many links send one commit from its commit listener; the others' senders send it at
the event loop's next turn. The listeners run inside the writer's commit step, so a node with many
links (a hub of devices) does not make each write wait for every link's frame."""


class CommitPushes:
    """How many links have sent the current commit from its listener. A commit is known by the list
    of deltas every listener of that commit is handed (held here, so it cannot be another's)."""

    def __init__(self, at_most: int = PUSHES_PER_COMMIT) -> None:
        self.at_most = at_most
        self._commit: object = None
        self._count = 0

    def room(self, commit: object) -> bool:
        """Whether another link may send ``commit`` from its listener."""
        if self._commit is not commit:
            self._commit, self._count = commit, 0
        return self._count < self.at_most

    def used(self, commit: object) -> None:
        """A link sent ``commit`` from its listener."""
        if self._commit is commit:
            self._count += 1


COMMIT_PUSHES = CommitPushes()
"""Shared by the replicas of the process. Replicas on loops in two threads (a ``SyncReplica``
beside another) may interleave on it: a link then leaves a push to its sender, or one more link
pushes; either is correct."""


def start_now(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first suspends: None if it finished (what it raised, it raises here),
    else the task that runs the rest of it."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_resume(coro, waiting))


async def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Go on with ``coro``, suspended on ``waiting`` (what it yielded: a future, or None for a bare
    yield), the way a task steps it: resumed once the future is done (it reads the outcome
    itself), and told of a cancellation of this task."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait([waiting])  # done, whatever its outcome; not raising it here
        except asyncio.CancelledError as exc:
            try:
                waiting = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
