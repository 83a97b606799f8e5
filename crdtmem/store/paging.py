"""Pages of the delta log for ``deltas_since`` that every store adapter shares: the order in which
the (channel, origin) streams past a peer's vector go out, the byte bound of a page, and a
coalesced delta's seqs split into its claim."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from .values import DeltaRecord


def merge_streams(streams: Iterable[list[tuple[int, int]]], limit: int | None) -> list[int]:
    """The deltas of a ``deltas_since`` page, in the order to send them.

    Each stream is one (channel, origin) log past the peer's vector, as ``(delta_id, seq)`` in seq
    order. The merge repeatedly takes the stream head logged earliest here (smallest delta id): each
    origin's deltas go out in its own order, and the first delta of a page is always the lowest seq
    some stream misses. Log order alone is not enough: a relay that got seq 1 of an origin after seqs
    2..8 logs it last, and a page cut by log order would never reach it.
    """
    streams_list = list(streams)
    heads = [(stream[0][0], i, 0) for i, stream in enumerate(streams_list) if stream]
    heapq.heapify(heads)
    chosen: list[int] = []
    seen: set[int] = set()
    while heads and (limit is None or len(chosen) < limit):
        delta_id, i, at = heapq.heappop(heads)
        if delta_id not in seen:
            seen.add(delta_id)
            chosen.append(delta_id)
        if at + 1 < len(streams_list[i]):
            heapq.heappush(heads, (streams_list[i][at + 1][0], i, at + 1))
    return chosen


DELTA_OVERHEAD = 256
"""Bytes a delta takes in a payload besides its update and deps (ids, stamp, seqs), at most, roughly."""


def within_bytes(deltas: list[DeltaRecord], max_bytes: int) -> list[DeltaRecord]:
    """The leading ``deltas`` whose payload stays under ``max_bytes`` (always at least one), so a
    page of big memories never outgrows what a receiver accepts."""
    total = 0
    for n, delta in enumerate(deltas):
        total += len(delta.update) + len(delta.deps) + DELTA_OVERHEAD
        if total > max_bytes and n > 0:
            return deltas[:n]
    return deltas


def split_covered(covered: dict[str, list[int]]) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """``{channel: [seqs]}`` -> (highest seq per channel, the others per channel), for deltas_since."""
    seqs: dict[str, int] = {}
    also: dict[str, tuple[int, ...]] = {}
    for channel, numbers in covered.items():
        ordered = sorted(numbers)
        seqs[channel] = ordered[-1]
        if len(ordered) > 1:
            also[channel] = tuple(ordered[:-1])
    return seqs, also
