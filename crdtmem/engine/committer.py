"""Group commit: one thread owns the store's write path and commits queued work in batches.

Writers on the event loop hand over a :class:`~crdtmem.store.base.Commit` and await its future; the
commit thread drains everything queued, commits it in one transaction (one fsync for the group), and
resolves the futures only after the transaction committed. A write is therefore acknowledged only when
it is durable. If a group fails, each unit is retried alone so one bad unit cannot fail the others.
The thread does not take units strictly in queue order: small units go ahead of large ones already
queued, and large units commit one at a time (:mod:`.commitorder` has the rule and why it keeps the
order the engine relies on), so a small write waits behind at most one large commit.

A lone writer does not need the thread: with nothing else in flight there is no group to form, and the
hop to the thread and back costs as much as the SQL. ``submit(work, alone=True)`` commits such a unit on
the caller's thread when the commit thread is idle. The event loop waits for that one fsync, which is
what the writer waits for anyway. The replica says ``alone`` only when no other write is in flight and
nothing else is queued on the loop: otherwise the thread lets writers group and lets other work (event
delivery, sockets) run during the fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ReplicaClosed, StorageError
from ..store.base import Commit, CommitResult, Store
from .commitorder import UnitShape, next_group, shape_of

_STOP = object()


@dataclass(slots=True)
class _Job:
    work: Commit
    future: asyncio.Future[CommitResult]
    loop: asyncio.AbstractEventLoop
    shape: UnitShape


class GroupCommitter:
    """Owns the store's write path on a dedicated thread. Use ``start()``/``stop()``."""

    def __init__(self, store: Store, *, max_group: int = 512, inline: bool = False):
        self._store = store
        self.inline = inline
        """Commit on the caller's thread: for stores whose commit does not wait for the disk
        (in-memory, or SQLite without fsync on commit), where the thread hop costs more than it saves."""
        self._max_group = max_group
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.groups = self.units = 0
        self.inline_units = 0
        self.overtaking_units = 0
        """Units committed ahead of a unit queued before them (commit thread only)."""
        self._outstanding = 0  # units handed to the thread and not yet settled (loop thread only)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="crdtmem-commit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    async def submit(
        self,
        work: Commit,
        *,
        alone: bool = False,
        on_landed: Callable[[CommitResult], object] | None = None,
    ) -> CommitResult:
        """Commit ``work``; returns once it is durable.

        Args:
            alone: the caller knows no other write is in flight; if the commit thread is idle too,
                the unit is committed on this thread, saving the hop to the thread and back.
            on_landed: called with the result when the caller is cancelled while its unit commits
                and the commit lands anyway (the caller still gets the cancellation): what follows a
                commit must follow it then too.
        """
        if self._thread is None:
            raise ReplicaClosed("the replica is closed")
        if (alone and not self._outstanding) or self.inline:
            try:
                result = self._store.commit([work])[0]
            except Exception as exc:
                raise _as_storage_error(exc) from exc
            self.groups += 1
            self.units += 1
            self.inline_units += 1
            return result
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CommitResult] = loop.create_future()
        self._outstanding += 1  # until the thread has settled it (see _settle)
        self._queue.put(_Job(work, future, loop, shape_of(work)))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # the thread commits the unit whatever happens here: a caller that gives up must not
            # go on (release its locks, reload its documents) while that commit is still landing
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(future)
            if on_landed is not None and not future.cancelled() and future.exception() is None:
                on_landed(future.result())
            raise

    def _run(self) -> None:
        queued: list[_Job] = []
        overtook = stopping = False
        while True:
            if not queued:
                if stopping:
                    return
                first = self._queue.get()
                if first is _STOP:
                    return
                queued.append(first)  # type: ignore[arg-type]
            while not stopping:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True  # what is queued still commits
                else:
                    queued.append(item)  # type: ignore[arg-type]
            positions, overtook = next_group([job.shape for job in queued], self._max_group, overtook)
            taken = set(positions)
            self.overtaking_units += sum(1 for k, p in enumerate(positions) if p != k)
            group = [queued[p] for p in positions]
            queued = [job for i, job in enumerate(queued) if i not in taken]
            self._commit(group)

    def _commit(self, jobs: list[_Job]) -> None:
        try:
            results = self._store.commit([job.work for job in jobs])
        except Exception as exc:
            if len(jobs) > 1:
                for job in jobs:
                    self._commit([job])
                return
            self._settle(jobs[0], None, _as_storage_error(exc))
            return
        self.groups += 1
        self.units += len(jobs)
        for job, result in zip(jobs, results, strict=True):
            self._settle(job, result, None)

    def _settle(self, job: _Job, result: CommitResult | None, error: BaseException | None) -> None:
        def settle() -> None:
            self._outstanding -= 1
            if job.future.done():
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)  # type: ignore[arg-type]

        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody awaits this any more
            job.loop.call_soon_threadsafe(settle)


def _as_storage_error(exc: Exception) -> BaseException:
    if isinstance(exc, StorageError):
        return exc
    return StorageError(f"commit failed, nothing was written: {exc!r}")
