"""The checks of crdtmem.testing (the ledger of acknowledged writes, store consistency) on rebased
memories (``docs/protocol.md`` §7.11): what a write observed is read across epochs, a write carried
over a rebase counts as held where its carried change is, and a superseded delta's entries are
decided against, not missing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from crdtmem import Replica
from crdtmem.testing import AcknowledgedWrites, assert_acknowledged_present, assert_store_consistent
from crdtmem.testing.checks import assert_converged
from crdtmem.testing.strategies import AddItems, Delete, MemorySpec, RemoveItems, Update
from tests.support.replicas import pull_until_quiet, rebase_everything

GLOBAL = "system:global"


@asynccontextmanager
async def _replicas(
    tmp_path: Path, acked: AcknowledgedWrites, **options: Any
) -> AsyncIterator[tuple[Replica, Replica]]:
    """Two replicas whose compactions rebase every memory they may (as RebasingMachine's do)."""
    async with (
        Replica(tmp_path / "a.db", replica_id="a", **options) as a,
        Replica(tmp_path / "b.db", replica_id="b", **options) as b,
    ):
        for replica in (a, b):
            acked.watch(replica)
            rebase_everything(replica)
        yield a, b


async def _pull(target: Replica, source: Replica) -> None:
    await pull_until_quiet(target, source, [GLOBAL])


async def _shared_and_rebased(a: Replica, b: Replica, acked: AcknowledgedWrites, spec: MemorySpec) -> str:
    """A memory a creates, b holds and acknowledges, and a rebases."""
    memory = await acked.create(a, spec, "m0")
    await _pull(b, a)
    await _pull(a, b)  # a learns that b holds nothing more
    assert (await a.compact()).rebased == 1
    return memory.id


def _check(acked: AcknowledgedWrites, *replicas: Replica) -> None:
    assert_converged(list(replicas))
    for replica in replicas:
        assert_acknowledged_present(replica, acked)
        assert_store_consistent(replica)


async def test_a_removal_on_the_new_epoch_observed_what_the_epoch_rebuilt(tmp_path: Path) -> None:
    acked = AcknowledgedWrites()
    async with _replicas(tmp_path, acked) as (a, b):
        memory_id = await _shared_and_rebased(a, b, acked, MemorySpec("list", ["x", "y"]))
        await acked.run(a, memory_id, AddItems(("z",)))
        await acked.run(a, memory_id, RemoveItems(("x",)))  # x lies in the epoch's base
        await _pull(b, a)
        assert sorted((await a.get(memory_id)).content) == ["y", "z"]
        _check(acked, a, b)


async def test_clocks_of_one_client_in_two_epochs_are_not_confused(tmp_path: Path) -> None:
    """a keeps its Yrs client on the new epoch, whose clocks start again from 0: b, still on the
    old epoch, holds a's client up to a higher clock, yet has not seen a's delete."""
    acked = AcknowledgedWrites()
    async with _replicas(tmp_path, acked) as (a, b):
        memory_id = await _shared_and_rebased(a, b, acked, MemorySpec("fact", "v0", metadata={"k": 1}))
        await acked.run(a, memory_id, Delete())  # on epoch 1
        await acked.run(b, memory_id, Update(content="from b"))  # on epoch 0, concurrently
        await _pull(b, a)  # b takes the epoch and carries its update over
        await _pull(a, b)
        assert set((await a.get(memory_id)).conflicts) >= {"lifecycle"}, "the update raced the delete"
        _check(acked, a, b)


async def test_a_write_carried_over_a_rebase_is_observed_where_its_carried_change_is(
    tmp_path: Path,
) -> None:
    acked = AcknowledgedWrites()
    async with _replicas(tmp_path, acked) as (a, b):
        memory_id = await _shared_and_rebased(a, b, acked, MemorySpec("fact", "v0"))
        await acked.run(b, memory_id, Update(content="from b"))  # on epoch 0, concurrently
        await _pull(b, a)  # b takes the epoch, carrying its update over
        await _pull(a, b)  # a holds the carried change, so its next write overwrites b's
        await acked.run(a, memory_id, Update(content="from a"))
        await _pull(b, a)
        memory = await b.get(memory_id)
        assert memory.content == "from a" and not memory.conflicts
        _check(acked, a, b)


async def test_a_superseded_delta_is_decided_against_and_its_entries_claimed(tmp_path: Path) -> None:
    acked = AcknowledgedWrites()
    async with _replicas(tmp_path, acked) as (a, b):
        memory_id = await _shared_and_rebased(a, b, acked, MemorySpec("fact", "v0"))
        await acked.run(b, memory_id, Update(content="from b"))  # on epoch 0, concurrently
        await _pull(a, b)  # superseded at a: its entry logged without it, a's vector moves past it
        assert a.version_vectors([GLOBAL])[GLOBAL]["b"] == b.version_vectors([GLOBAL])[GLOBAL]["b"]
        assert [d.delta.origin for d in a.store.decisions()] == ["b"]
        assert_store_consistent(a)
        await _pull(b, a)
        await _pull(a, b)
        _check(acked, a, b)


async def test_a_superseded_entry_stays_claimed_once_its_memory_is_forgotten(tmp_path: Path) -> None:
    """Forgetting a memory deletes its decided deltas (they hold its content); their entries stay
    logged without a delta, and the vector keeps claiming them."""
    acked = AcknowledgedWrites()
    async with _replicas(tmp_path, acked) as (a, b):
        memory_id = await _shared_and_rebased(a, b, acked, MemorySpec("fact", "v0"))
        await acked.run(b, memory_id, Update(content="from b"))  # on epoch 0, concurrently
        await _pull(a, b)  # superseded at a
        seq = b.version_vectors([GLOBAL])[GLOBAL]["b"]
        await a.forget(memory_id)
        acked.forget(memory_id)
        assert a.store.decisions() == []
        assert a.version_vectors([GLOBAL])[GLOBAL]["b"] == seq
        assert seq in a.store.entries_without_delta(GLOBAL)["b"]
        assert_store_consistent(a)
        await _pull(b, a)
        await _pull(a, b)
        _check(acked, a, b)


async def test_a_removal_carried_two_epochs_at_once_may_come_back_and_nothing_else(tmp_path: Path) -> None:
    """b removes a metadata key on epoch 0 while a rebases twice; b takes epoch 2 from a states
    page. b cannot tell whether epoch 2's entry of the key is the one it removed (a may have
    written it again on epoch 1), so it keeps it (docs/protocol.md §10): the ledger accepts the
    key back, as a removal that reached the document only carried over, and nothing more."""
    acked = AcknowledgedWrites()
    now = [1_700_000_000_000]
    # leases and retention of 1 ms: a folds what b has not acknowledged once time has passed
    async with _replicas(tmp_path, acked, wall_clock=lambda: now[0], lease_ms=1, retention_ms=1) as (a, b):
        memory_id = await _shared_and_rebased(a, b, acked, MemorySpec("fact", "v0", metadata={"k": "v"}))
        await acked.run(b, memory_id, Update(content="from b", remove_metadata=("k",)))  # epoch 0
        await acked.run(a, memory_id, Update(content="from a"))  # epoch 1
        now[0] += 1_000
        assert (await a.compact()).rebased == 1  # epoch 2, its log folded: b catches up from states
        await _pull(b, a)
        await _pull(a, b)
        memory = await b.get(memory_id)
        assert memory.metadata == {"k": "v"}, "the removal was not carried: the limit this models"
        assert "content" in memory.conflicts, "the two content writes were concurrent"
        _check(acked, a, b)
        ledger = acked.expected(memory_id)
        assert ledger["metadata.k"] == [] and acked.may_come_back(b, memory_id)["metadata.k"] == ['"v"']
