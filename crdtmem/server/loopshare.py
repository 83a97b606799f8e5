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
has been served within the last :data:`CONTENDED_S` seconds: a token alone on the node may use all
of it. As with the byte rate, a request is admitted while its token is not in debt and charged in
full afterwards, so no request is refused for its size alone.

Long-lived streams (the replication WebSocket, the event feed) are not metered: they are bounded
by their own rates and pages, and their loop time would otherwise shut their token's other
requests out for as long as they run.
"""

from __future__ import annotations

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


class LoopShare:
    """Who owes the event loop what: one bucket of loop time per token."""

    def __init__(
        self,
        share: float = LOOP_SHARE,
        *,
        burst_s: float = LOOP_BURST_S,
        clock: Callable[[], float] = time.monotonic,
        step_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.share = share
        self.clock = clock
        """Seconds, for the buckets (a monotonic clock)."""
        self.step_clock = step_clock
        """Seconds, read around each step (the calling thread's time)."""
        self._buckets = VolumeLimiter(share, share * burst_s)
        self._latest: list[tuple[str, float]] = []  # the last two distinct tokens served, newest first

    def wait(self, token: str, now: float | None = None) -> float:
        """0 if ``token`` may start a request now, else the seconds until its debt is paid off (only
        while another token was served within :data:`CONTENDED_S`)."""
        if self.share <= 0:
            return 0.0
        now = self.clock() if now is None else now
        self._served(token, now)
        wait = self._buckets.wait(token, now)
        if wait > 0 and not self._contended(token, now):
            return 0.0
        return wait

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
        others = [entry for entry in self._latest if entry[0] != token]
        self._latest = [(token, now), *others[:1]]

    def _contended(self, token: str, now: float) -> bool:
        return any(name != token and now - seen <= CONTENDED_S for name, seen in self._latest)


class _Metered(Generator[Any, Any, _T]):
    """Awaitable: drives a coroutine step by step, timing each step on the calling thread."""

    def __init__(self, coro: Coroutine[Any, Any, _T], token: str, share: LoopShare) -> None:
        self._coro = coro
        self._token = token
        self._share = share
        self._clock = share.step_clock

    def __await__(self) -> Generator[Any, Any, _T]:
        return self

    def send(self, value: Any) -> Any:
        start = self._clock()
        try:
            return self._coro.send(value)
        finally:
            self._share.charge_step(self._token, self._clock() - start)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        start = self._clock()
        try:
            if val is None and tb is None:
                return self._coro.throw(typ)
            return self._coro.throw(typ, val, tb)
        finally:
            self._share.charge_step(self._token, self._clock() - start)

    def close(self) -> None:
        self._coro.close()
