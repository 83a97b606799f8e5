"""PN-counter.

Layout: a Yrs map ``{replica_id} -> {"p": "<int>", "n": "<int>", "hlc": <HLC>}``. Totals are
decimal strings so they stay exact beyond 2**53 (Yrs numbers are JavaScript doubles).

Write rule: a replica writes only its own entry, always replacing it with larger totals; increments add
to ``p`` and decrements to ``n``. Because one replica's writes are sequential and each one has observed
the previous, the Yrs map keeps exactly the latest entry per replica.
Read: sum of ``p`` minus sum of ``n`` over all entries. Merge: Yrs map merge (per-replica maximum).
"""

from __future__ import annotations

from typing import Any

from .dots import is_hlc_text


class PNCounter:
    def __init__(self, ymap: Any):
        self._map = ymap

    def _totals(self, replica: str) -> tuple[int, int]:
        raw = self._map.get(replica)
        if not isinstance(raw, dict):
            return 0, 0
        try:
            return int(raw.get("p", "0")), int(raw.get("n", "0"))
        except (TypeError, ValueError):
            return 0, 0

    def value(self) -> int:
        return sum(p - n for p, n in (self._totals(r) for r in self._map))

    def add(self, replica: str, delta: int, hlc: str) -> None:
        p, n = self._totals(replica)
        if delta >= 0:
            p += delta
        else:
            n -= delta
        self._map[replica] = {"p": str(p), "n": str(n), "hlc": hlc}

    def latest_hlc(self) -> str:
        stamps = [raw.get("hlc") for raw in self._map.values() if isinstance(raw, dict)]
        return max((s for s in stamps if is_hlc_text(s)), default="")
