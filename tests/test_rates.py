"""Token buckets per key (crdtmem/rates.py): keys anyone may choose (a bus request names its node
and its key) keep the number of buckets bounded, without giving back what a key in use has spent."""

from __future__ import annotations

from crdtmem.rates import RateLimiter


def test_rate_buckets_of_keys_of_anyones_choosing_stay_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=2.0, max_buckets=10)
    for n in range(1000):  # one key after another, each full again two seconds later
        assert limiter.acquire(f"sybil-{n}", now=float(n)) == 0
        assert len(limiter._buckets) <= 10
    assert limiter.acquire("busy", 2.0, now=1000.0) == 0
    for n in range(4):  # fewer new keys at once than half the bound: the spent bucket stays
        limiter.acquire(f"again-{n}", now=1000.1)
    assert limiter.acquire("busy", now=1000.2) > 0
    for n in range(100):  # many at once: bounded all the same
        limiter.acquire(f"burst-{n}", now=1000.3)
        assert len(limiter._buckets) <= 10
