"""Per-principal rate limits: token buckets of requests, and buckets of the volume they carry.

The server limits each token's writes, frames and pushed deltas with them; the bus limits each
node's states and pull requests (``crdtmem.bus.pull``) the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    """A token bucket per principal: ``rate`` writes per second, bursts of up to ``burst``.

    The keys may be anyone's to choose (a bus request names its node and key), so at most
    ``max_buckets`` are kept: past that, the buckets that have filled up again are dropped (a key
    without a bucket has a full one), then, if more than half remain, the least recently used ones
    down to half."""

    rate: float = 200.0
    burst: float = 400.0
    max_buckets: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def acquire(self, key: str, cost: float = 1.0, now: float | None = None) -> float:
        """Take ``cost`` tokens; returns 0 if allowed, else the seconds to wait before retrying."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_buckets and key not in self._buckets:
            self._prune(now)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (cost - tokens) / self.rate

    def _prune(self, now: float) -> None:
        kept = {k: v for k, v in self._buckets.items() if v[0] + (now - v[1]) * self.rate < self.burst}
        half = max(1, self.max_buckets // 2)
        if len(kept) > half:  # many keys in use at once: the least recently used go, as if full
            kept = dict(sorted(kept.items(), key=lambda item: item[1][1])[-half:])
        self._buckets = kept


@dataclass
class VolumeLimiter:
    """A bucket per principal of what its requests carry (deltas, or bytes): ``rate`` a second on
    average, bursts of up to ``burst``.

    What one request carries is known only once it arrived, and a single request may carry more
    than ``burst`` (a page of a catch-up): so a request is admitted while its principal's bucket is
    not in debt, and then charged in full, which may put the bucket in debt; its next request waits
    until the debt is paid off. So the volume per principal averages at most ``rate``, and no size
    of request is refused for ever.
    """

    rate: float
    burst: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def wait(self, key: str, now: float | None = None) -> float:
        """0 if ``key`` may send now, else the seconds until its bucket is out of debt."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        self._buckets[key] = (tokens, now)
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def level(self, key: str, now: float) -> float:
        """What ``key``'s bucket holds at ``now`` (negative: its debt); a full bucket if unknown."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def charge(self, key: str, amount: float, now: float | None = None) -> None:
        """Take ``amount`` (after :meth:`wait` said 0), into debt if need be."""
        if self.rate <= 0:
            return
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        self._buckets[key] = (tokens - amount, now)
