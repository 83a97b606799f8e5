"""Helpers for tests of replicas in one process: pulling until nothing changes, and making every
compaction rebase what it may."""

from __future__ import annotations

from collections.abc import Sequence

from crdtmem import Replica


async def pull_until_quiet(target: Replica, source: Replica, channels: Sequence[str]) -> None:
    """Pull ``channels`` from ``source`` into ``target`` until ``target``'s vectors stop moving (a
    states page first, when ``target`` is behind ``source``'s horizon)."""
    names = list(channels)
    while True:
        before = target.version_vectors(names)
        await target.apply(await source.export_since(names, before))
        if target.version_vectors(names) == before:
            return


def rebase_everything(replica: Replica) -> None:
    """Make ``replica``'s compactions rebase every memory they may, whatever its size and share of
    tombstones (as the rebasing convergence machine's do)."""
    assert replica.compaction.rebaser is not None
    replica.compaction.rebaser.min_bytes, replica.compaction.rebaser.ratio = 0, 0.0
