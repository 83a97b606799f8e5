"""Version-vector bookkeeping that every store adapter shares: a vector advanced over contiguous
runs (with the seqs stored past a gap kept aside), copy-on-write vectors for one commit, and
whether a peer's vector is behind a log's horizon."""

from __future__ import annotations

from .values import VersionVector


class StagedVectors:
    """Copy-on-write version vectors for one commit.

    Only the channels a commit touches are copied (copying every channel made each commit O(channels));
    :meth:`publish` swaps them in once the transaction has committed, so a failed commit leaves the
    store's vectors as they were.
    """

    def __init__(self, vectors: dict[str, VersionVector], beyond: dict[str, dict[str, set[int]]]):
        self._vectors = vectors
        self._beyond = beyond
        self.vectors: dict[str, VersionVector] = {}
        self.beyond: dict[str, dict[str, set[int]]] = {}

    def vector(self, channel: str) -> VersionVector:
        staged = self.vectors.get(channel)
        if staged is None:
            staged = self.vectors[channel] = dict(self._vectors.get(channel, {}))
            self.beyond[channel] = {o: set(s) for o, s in self._beyond.get(channel, {}).items()}
        return staged

    def is_logged(self, channel: str, origin: str, seq: int) -> bool:
        vector = self.vector(channel)
        return seq <= vector.get(origin, 0) or seq in self.beyond[channel].get(origin, ())

    def advance(self, channel: str, origin: str, seq: int) -> None:
        contiguous_advance(self.vector(channel), self.beyond[channel], origin, seq)

    def raise_to(self, channel: str, origin: str, seq: int) -> bool:
        """Claim every seq up to ``seq`` (held in document states), then whatever stored run follows;
        returns whether the vector moved."""
        vector, beyond = self.vector(channel), self.beyond[channel]
        if seq <= vector.get(origin, 0):
            return False
        vector[origin] = seq
        waiting = {s for s in beyond.get(origin, set()) if s > seq}
        while seq + 1 in waiting:
            seq += 1
            waiting.discard(seq)
        vector[origin] = seq
        if waiting:
            beyond[origin] = waiting
        else:
            beyond.pop(origin, None)
        return True

    def changed(self, channel: str) -> bool:
        return channel in self.vectors

    def publish(self) -> None:
        self._vectors.update(self.vectors)
        for channel, waiting in self.beyond.items():
            if waiting:
                self._beyond[channel] = waiting
            else:
                self._beyond.pop(channel, None)


def behind(horizon: VersionVector, vector: VersionVector) -> bool:
    """Whether a peer at ``vector`` misses entries the log no longer holds (folded up to ``horizon``)."""
    return any(vector.get(origin, 0) < seq for origin, seq in horizon.items())


def contiguous_advance(vector: VersionVector, beyond: dict[str, set[int]], origin: str, seq: int) -> None:
    """Record ``seq`` from ``origin`` as stored and advance ``vector`` over any now-contiguous run.

    ``beyond`` keeps sequence numbers stored past a gap, so a later arrival that fills the gap
    advances the vector over all of them.
    """
    current = vector.get(origin, 0)
    if seq <= current:
        return
    if seq != current + 1:
        beyond.setdefault(origin, set()).add(seq)
        return
    waiting = beyond.get(origin, set())
    while current + 1 == seq or (current + 1) in waiting:
        current += 1
        waiting.discard(current)
    vector[origin] = current
    if not waiting:
        beyond.pop(origin, None)
