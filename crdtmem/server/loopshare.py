"""Each token's share of the event loop: a request is charged the loop time it takes.

The byte, delta and write rates bound what a token sends, not what its requests cost here. Some
accepted requests cost the event loop 10-50 ms in one piece (a create of 1,000 metadata keys and
1,000 tags, a pushed memory of 20,000 keys applied and then rejected), so two clients of one
token sending them back to back hold the loop almost all the time, and every other token's
requests queue behind theirs.

So each request of a token runs *metered*: the time the event loop's thread works in its steps (from
the auth middleware down: reading its body, decoding, applying, answering; not the time it waits
for a commit, nor other requests' steps in between; thread time, so a step is not charged for
waiting for the interpreter lock while other threads hold it), past the first :data:`STEP_FREE_S`
of each step (the loop takes ready steps in turn, so short steps share it fairly by themselves), is
charged to the token's bucket while another token is being served, and the bucket refills at
``share`` seconds of loop time per second. A token whose bucket is in debt gets ``429``
with ``retry_after`` before a byte of its next request's body is read, but only while another token
served within the last :data:`CONTENDED_S` seconds is less in debt than it: a token alone on the
node may use all of it, and a token that ran into debt by a rare long step is not refused while the
token that holds the loop is deeper in debt (the heaviest is held back first).

A step is not charged a garbage collection it did not cause: a collection walks what every request
allocated, and it runs in whichever step happens to allocate past the collector's threshold (a 26 ms
collection in a bystander's 1 ms write, right after another token's pushed memory of 20,000 keys,
put the bystander in debt). It is charged the collections its own allocations brought
(:class:`_Collections`): a request that builds many objects pays for collecting them.

As with the byte rate, a request is admitted while its token is not in debt and charged in full
afterwards, so no request is refused for its size alone.

Long-lived streams (the replication WebSocket, the event feed) are not metered as requests: their
loop time would otherwise shut their token's other requests out for as long as they run. The work
of each deltas frame a replication WebSocket receives is metered instead (``Link``'s ``meter``), and
a frame of a token in debt is refused like a push (an error frame with ``retry_after``): a frame
carries what a push carries.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from ..rates import VolumeLimiter

_T = TypeVar("_T")

LOOP_SHARE = 0.25
"""Seconds of event-loop time per second a token's requests may take on average while another
token is being served (``crdtmem serve --loop-share``; 0: no limit). A quarter, not a half: what a
heavy request also costs off its metered steps (its commit, indexing it, its answer sent) contends
with the loop too, and at a half two clients of one token sending 1,000-key creates still kept the
loop busy (``docs/benchmarks.md``, ``bench_hostile.py``, 2026-12-06); short steps are free anyway."""
LOOP_BURST_S = 0.1
"""Seconds at ``share`` a token may bank: its bucket holds ``share * LOOP_BURST_S`` of loop time.
Small on purpose: a large bank lets a token hold the loop for the whole of it."""
STEP_FREE_S = 0.002
"""What a step may take uncharged: the loop takes ready steps in turn, so short steps share it by
construction; only the time a step holds it past this is taken from the others."""
CONTENDED_S = 1.0
"""A token is refused for its debt only if another token was served within this many seconds."""
UNMETERED = ("/v1/events", "/v1/sync/ws")
"""Paths of long-lived streams (module docstring)."""


class _Collections:
    """The thread time of garbage collections a metered step did not cause, per thread
    (``gc.callbacks``; a collection runs on the thread that crossed the collector's threshold).

    A collection is the step's own when the step's allocations make at least half of the young
    generation it found (``gc.get_count()``, counted from the step's start, and from each collection
    within it): a step that builds many objects pays for the collections they bring, and a step
    that only crossed a threshold others had nearly reached does not."""

    def __init__(self) -> None:
        self._local = threading.local()
        gc.callbacks.append(self._observe)

    def begin(self) -> float:
        """A metered step starts on this thread; returns :meth:`seconds` so far."""
        local = self._local
        local.base = gc.get_count()[0]
        return float(getattr(local, "total", 0.0))

    def end(self) -> None:
        self._local.base = None

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        local = self._local
        if phase == "start":
            base = getattr(local, "base", None)
            young = gc.get_count()[0]
            local.foreign = base is None or (young - base) * 2 < young
            if base is not None:
                local.base = 0  # the next collection in this step finds only what came after this one
            local.start = time.thread_time()
        elif (start := getattr(local, "start", None)) is not None:
            if getattr(local, "foreign", True):
                local.total = getattr(local, "total", 0.0) + time.thread_time() - start
            local.start = None

    def seconds(self) -> float:
        """The thread time collections not caused by a metered step took on this thread so far."""
        return float(getattr(self._local, "total", 0.0))


_COLLECTIONS = _Collections()


class LoopShare:
    """Who owes the event loop what: one bucket of loop time per token."""

    def __init__(
        self,
        share: float = LOOP_SHARE,
        *,
        burst_s: float = LOOP_BURST_S,
        clock: Callable[[], float] = time.monotonic,
        step_clock: Callable[[], float] = time.thread_time,
        collections: Callable[[], float] = _COLLECTIONS.seconds,
    ) -> None:
        self.share = share
        self.clock = clock
        """Seconds, for the buckets (a monotonic clock)."""
        self.step_clock = step_clock
        """Seconds, read around each step (the calling thread's time)."""
        self.collections = collections
        """Seconds collections a metered step did not cause took on the calling thread so far (left
        out of the step they ran in)."""
        self._buckets = VolumeLimiter(share, share * burst_s)
        self._served_at: dict[str, float] = {}  # token -> when it last started a request

    def wait(self, token: str, now: float | None = None) -> float:
        """0 if ``token`` may start a request now, else the seconds until its debt is paid off (only
        while another token was served within :data:`CONTENDED_S`)."""
        if self.share <= 0:
            return 0.0
        now = self.clock() if now is None else now
        wait = self._buckets.wait(token, now)
        if wait > 0 and self._lighter_served(token, now):
            return wait  # refused: not served, so its retries do not hold others back
        self._served(token, now)
        return 0.0

    def charge(self, token: str, seconds: float, now: float | None = None) -> None:
        """Take ``seconds`` of loop time from ``token``'s bucket, only while another token is being
        served (alone on the node, it takes nothing from anyone, and owes nothing later)."""
        if self.share <= 0 or seconds <= 0:
            return
        now = self.clock() if now is None else now
        if self._contended(token, now):
            self._buckets.charge(token, seconds, now)

    def charge_step(self, token: str, seconds: float, now: float | None = None) -> None:
        """Charge one step of a metered request: what it took past :data:`STEP_FREE_S`."""
        self.charge(token, seconds - STEP_FREE_S, now)

    def metered(self, token: str, coro: Coroutine[Any, Any, _T]) -> _Metered[_T]:
        """``coro``, its steps on the event loop charged to ``token`` (await the result)."""
        return _Metered(coro, token, self)

    def _served(self, token: str, now: float) -> None:
        served = self._served_at
        served[token] = now
        if len(served) > 64:  # forget the tokens not served within CONTENDED_S
            for name in [name for name, seen in served.items() if now - seen > CONTENDED_S]:
                del served[name]

    def _others(self, token: str, now: float) -> list[str]:
        return [name for name, seen in self._served_at.items() if name != token and now - seen <= CONTENDED_S]

    def _contended(self, token: str, now: float) -> bool:
        return bool(self._others(token, now))

    def _lighter_served(self, token: str, now: float) -> bool:
        """Whether another token served within :data:`CONTENDED_S` is less in debt than ``token``."""
        mine = self._buckets.level(token, now)
        return any(self._buckets.level(name, now) > mine for name in self._others(token, now))


class _Metered(Generator[Any, Any, _T]):
    """Awaitable: drives a coroutine step by step, timing each step on the calling thread."""

    def __init__(self, coro: Coroutine[Any, Any, _T], token: str, share: LoopShare) -> None:
        self._coro = coro
        self._token = token
        self._share = share
        self._clock = share.step_clock
        self._collections = share.collections

    def __await__(self) -> Generator[Any, Any, _T]:
        return self

    def send(self, value: Any) -> Any:
        start, collected = self._clock(), self._begin()
        try:
            return self._coro.send(value)
        finally:
            self._charge(start, collected)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        start, collected = self._clock(), self._begin()
        try:
            if val is None and tb is None:
                return self._coro.throw(typ)
            return self._coro.throw(typ, val, tb)
        finally:
            self._charge(start, collected)

    def _begin(self) -> float:
        _COLLECTIONS.begin()
        return self._collections()

    def _charge(self, start: float, collected: float) -> None:
        _COLLECTIONS.end()
        took = self._clock() - start - (self._collections() - collected)
        self._share.charge_step(self._token, took)

    def close(self) -> None:
        self._coro.close()
