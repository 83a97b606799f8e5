"""Replicas on SQLite files under drops, duplicates, reordering, corruption, partitions and restarts
converge, and every acknowledged write is present afterwards (see crdtmem.testing.machine)."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant, run_state_machine_as_test

from crdtmem.engine.replica import Replica
from crdtmem.testing import Faults, ReplicaMachine
from crdtmem.testing.strategies import Operation, Revive

_FAST = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class ChaosMachine(ReplicaMachine):
    """The default machine: every fault, one partial replica at most, restarts."""


class PerfectNetworkMachine(ReplicaMachine):
    """No faults, no paging: isolates CRDT and causal-delivery bugs from fault handling."""

    FAULTS = Faults.none()
    PAGE_SIZE = None


class LossyMachine(ReplicaMachine):
    """Most messages lost or held back: long divergence, then catch-up."""

    FAULTS = Faults(drop=0.5, duplicate=0.3, delay=0.5, max_delay=6)
    MAX_REPLICAS = 3


class RebasingMachine(ReplicaMachine):
    """Every compaction rebases what it may: writes made on replicas cut off meanwhile are made on
    the old epoch and must be carried over (docs/protocol.md §7.11)."""

    REBASE_AT = (0, 0.0)
    ACTIONS: ClassVar[dict[str, int]] = {**ReplicaMachine.ACTIONS, "compact": 3}

    seen: ClassVar[Counter[str]] = Counter()

    def teardown(self) -> None:
        for replica in self.replicas.values():
            self.seen["rebased"] += replica.compaction.status()["rebased"]
            self.seen["carried"] += replica.trust_status()["carried"]
        super().teardown()


TestChaos = ChaosMachine.TestCase
TestChaos.settings = _FAST

TestPerfectNetwork = PerfectNetworkMachine.TestCase
TestPerfectNetwork.settings = settings(_FAST, max_examples=10)

TestLossy = LossyMachine.TestCase
TestLossy.settings = settings(_FAST, max_examples=10)


def test_the_rebasing_machine_rebases_and_loses_nothing() -> None:
    """The bounded version of TestRebasing, for the default run: a few short runs, which must rebase
    memories (a run that never does would pass vacuously), converge and lose no acknowledged write.
    Whether a run also carries a change over depends on the examples drawn, and those vary with the
    modules imported before it in the process: hypothesis mixes constants it finds in the loaded
    modules of crdtmem into what it draws, derandomized or not (so a selection of test files draws
    other examples than this test alone). It is counted, not required, here: tests/test_carry.py,
    test_rebase_faults.py and test_carry_processes.py carry changes over deterministically."""
    RebasingMachine.seen.clear()
    run_state_machine_as_test(
        RebasingMachine,
        settings=settings(_FAST, max_examples=16, stateful_step_count=30, derandomize=True, database=None),
    )
    assert RebasingMachine.seen["rebased"] > 0, RebasingMachine.seen


@pytest.mark.soak
class TestRebasing(RebasingMachine.TestCase):
    settings = settings(_FAST, max_examples=20)


@pytest.mark.soak
class TestSoak(ChaosMachine.TestCase):
    settings = settings(_FAST, max_examples=1_000, stateful_step_count=80)


class _CountingMachine(ChaosMachine):
    """The chaos machine, counting what happened, for the self-check below."""

    seen: ClassVar[Counter[str]] = Counter()

    @invariant()
    def count(self) -> None:
        for replica in self.replicas.values():
            self.seen["conflicted replica-steps"] += bool(replica.store.conflicts())
            self.seen["replica-steps with pending deltas"] += bool(replica.store.pending())

    async def _restart(self, replica_id: str) -> None:
        self.seen["restarts"] += 1
        await super()._restart(replica_id)

    def _write(self, replica: Replica, memory_id: str, op: Operation) -> None:
        before = self.acked.acknowledged
        super()._write(replica, memory_id, op)
        if isinstance(op, Revive) and self.acked.acknowledged > before:
            self.seen["revivals"] += 1

    def teardown(self) -> None:
        if self.network is not None:
            stats = self.network.stats
            self.seen["acknowledged writes"] += self.acked.acknowledged
            for fault in ("dropped", "duplicated", "delayed", "truncated", "corrupted", "blocked", "applied"):
                self.seen[fault] += getattr(stats, fault)
            channels = {c for i in self.acked.memory_ids for c in self.acked.channels_of(i)}
            self.seen["memories on escaped channels"] += any("%" in c for c in channels)
            self.seen["forgotten memories"] += len(self.acked.forgotten)
            self.seen["entries folded"] += sum(r.compaction.folded_entries for r in self.replicas.values())
            self.seen["states pages applied"] += sum(r._catchup.pages for r in self.replicas.values())
            erased = sum(r.store.is_erased(m) for r in self.replicas.values() for m in self.acked.forgotten)
            self.seen["erasures taken from a peer"] += erased - len(self.acked.forgotten)
        super().teardown()


def test_the_machine_exercises_every_fault_and_concurrency() -> None:
    """Guards the harness itself: a run that never conflicts, never buffers out-of-order deltas,
    never revives a deleted memory, never uses ids that escape in channel names or never meets a
    fault would pass vacuously."""
    _CountingMachine.seen.clear()
    run_state_machine_as_test(
        _CountingMachine, settings=settings(_FAST, max_examples=12, derandomize=True, database=None)
    )
    seen = _CountingMachine.seen
    assert seen["acknowledged writes"] >= 100, seen
    for happening in (
        "conflicted replica-steps",
        "replica-steps with pending deltas",
        "restarts",
        "revivals",
        "memories on escaped channels",
        "forgotten memories",
        "entries folded",
        "states pages applied",
        "erasures taken from a peer",
        "dropped",
        "duplicated",
        "delayed",
        "truncated",
        "corrupted",
        "blocked",
        "applied",
    ):
        assert seen[happening] > 0, f"no {happening} in {dict(seen)}"
