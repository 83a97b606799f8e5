"""A thin synchronous wrapper around :class:`~crdtmem.engine.replica.Replica`, for scripts and notebooks.

It runs the replica on a private event loop in a background thread; every method blocks until the
async call finishes and returns its result (or raises its error)::

    with crdtmem.SyncReplica("notes.db", replica_id="laptop") as r:
        m = r.add("User prefers dark mode", user_id="u1")
        print(r.get(m.id).content)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import ReplicaClosed
from .replica import Replica

T = TypeVar("T")

_LIFECYCLE = {"start", "stop"}
"""Replica methods the facade runs itself (it starts the replica on open and stops it in close)."""


class SyncReplica:
    """Blocking facade: same arguments as :class:`Replica`, same method names, no ``await``.

    Every coroutine method of :class:`Replica` (``add`` ... ``search``, ``export_since``, ``apply``)
    blocks here until it finishes; other attributes are the replica's own. ``close()`` (or leaving
    the ``with`` block) stops the replica.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="crdtmem-sync", daemon=True)
        self._thread.start()
        try:
            self.replica: Replica = self._run(self._make(args, kwargs))
        except BaseException:
            self._shutdown_loop()
            raise

    @staticmethod
    async def _make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Replica:
        return await Replica(*args, **kwargs).start()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop closed after the caller looked: never leave coro unawaited
            coro.close()
            raise ReplicaClosed("this SyncReplica was closed; open a new one") from None
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            # close() cancelled it: a call from another thread must not wait for a stopped loop
            raise ReplicaClosed("this SyncReplica was closed while the call ran") from None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine that uses :attr:`replica` on the replica's loop; block until it finishes."""
        if self._loop.is_closed():
            coro.close()
            raise ReplicaClosed("this SyncReplica was closed; open a new one")
        return self._run(coro)

    def __getattr__(self, name: str) -> Any:
        if name in _LIFECYCLE:
            raise AttributeError(
                f"SyncReplica starts the replica on open and stops it in close(); no {name}()"
            )
        method = getattr(self.replica, name)
        if not inspect.iscoroutinefunction(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._loop.is_closed():
                raise ReplicaClosed("this SyncReplica was closed; open a new one")
            return self._run(method(*args, **kwargs))

        call.__name__ = name
        call.__doc__ = method.__doc__
        return call

    @property
    def id(self) -> str:
        return self.replica.id

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private event loop the replica runs on (adapters schedule the replica's coroutines on it)."""
        return self._loop

    def version_vector(self, channel: str) -> dict[str, int]:
        return self.replica.version_vector(channel)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.replica.stop())
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        # calls still running (from other threads) are cancelled, not left on a loop that stops
        asyncio.run_coroutine_threadsafe(_cancel_the_rest(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncReplica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _cancel_the_rest() -> None:
    running = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
