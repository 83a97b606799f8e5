"""Blocking calls on a worker thread, so the event loop serves others meanwhile.

What goes there: store reads and writes that wait for the store's lock, an fsync or the disk, and
reads that decode megabytes of records. SQLite releases the interpreter lock while it reads pages;
decoding holds it, but one record at a time, so the loop gets it back within the interpreter's
switch interval (5 ms) instead of after a whole page.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


async def off_loop(call: Callable[[], _T]) -> _T:
    """``call()`` in a worker thread. A cancelled caller still waits for it to finish (and is then
    cancelled), so what it uses (a store) is never closed under it."""
    done = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        while not done.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):  # the caller is cancelled
                await asyncio.shield(done)
        raise
