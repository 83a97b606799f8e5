"""Rebased memories under delivery faults (``docs/protocol.md`` §7.3, §7.11): a delta of an epoch
a replica has not taken yet waits for that epoch's rebase entry, whatever order they arrive in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from crdtmem import Replica
from crdtmem.access import Principal
from crdtmem.engine import payload as wire
from crdtmem.engine.statepages import decode_states
from crdtmem.testing import assert_converged, assert_store_consistent
from crdtmem.testing.strategies import MemorySpec
from tests.support.replicas import pull_until_quiet, rebase_everything

GLOBAL = "system:global"
STATE_SERVER = Principal("replica:a", ("*",), ("*",), ("*",), (), True)


class _Wall:
    """A wall clock the test moves: leases and retention of 1 ms, so a compaction folds what the
    peer has not acknowledged once time has passed, and the creator rebases again."""

    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


@asynccontextmanager
async def _replicas(tmp_path: Path, wall: _Wall) -> AsyncIterator[tuple[Replica, Replica]]:
    async with (
        Replica(tmp_path / "a.db", replica_id="a", wall_clock=wall, lease_ms=1, retention_ms=1) as a,
        Replica(tmp_path / "b.db", replica_id="b", wall_clock=wall, lease_ms=1, retention_ms=1) as b,
    ):
        for replica in (a, b):
            rebase_everything(replica)
        yield a, b


async def _pull(target: Replica, source: Replica) -> None:
    await pull_until_quiet(target, source, [GLOBAL])


async def test_a_delta_of_a_later_epoch_waits_for_its_rebase_entry(tmp_path: Path) -> None:
    """b is on epoch 1 when a's write on epoch 2 reaches it before epoch 2's rebase entry (a lost
    or reordered push): it must wait for the entry, not be taken for a delta of epoch 0 and
    superseded (its entries logged without it, so nothing would ever bring it again)."""
    wall = _Wall()
    async with _replicas(tmp_path, wall) as (a, b):
        memory = await MemorySpec("fact", "v0").create(a, "m0")
        await _pull(b, a)
        wall.ms += 1_000
        assert (await a.compact()).rebased == 1
        await _pull(b, a)  # b takes epoch 1
        await a.update(memory.id, content="on epoch 1")
        wall.ms += 1_000
        assert (await a.compact()).rebased == 1  # epoch 2
        await a.update(memory.id, content="on epoch 2")
        vector = a.version_vectors([GLOBAL])[GLOBAL]
        # only the write on epoch 2, without the rebase entry logged just before it
        payload = await a.export_since([GLOBAL], {GLOBAL: {**vector, "a": vector["a"] - 1}})
        assert len(wire.decode(payload).deltas) == 1
        await b.apply(payload)
        assert not b.store.decisions(), "a delta of a later epoch was decided against"
        assert b.store.pending(), "it waits for epoch 2's rebase entry"
        await _pull(b, a)
        assert (await b.get(memory.id)).content == "on epoch 2"
        assert_converged([a, b])
        for replica in (a, b):
            assert_store_consistent(replica)


async def test_a_delta_of_epoch_0_from_a_restarted_writer_is_superseded_not_kept_waiting(
    tmp_path: Path,
) -> None:
    """b writes on epoch 0 concurrently with a's rebase, restarts (a new Yrs client) and writes
    again: its second delta names the first one's client, which no base of the epoch holds. That
    client wrote a delta of the memory seen at a, so a places the second delta on epoch 0 and
    supersedes it (b carries both over), one delta per pull, or both at once."""
    for at_once in (False, True):
        wall = _Wall()
        root = tmp_path / str(at_once)
        root.mkdir()
        async with _replicas(root, wall) as (a, b):
            memory = await MemorySpec("fact", "v0").create(a, "m0")
            await _pull(b, a)
            await _pull(a, b)
            wall.ms += 1_000
            assert (await a.compact()).rebased == 1
            await b.update(memory.id, content="from b, first")
        async with (
            Replica(root / "a.db", replica_id="a", wall_clock=wall) as a,
            Replica(root / "b.db", replica_id="b", wall_clock=wall) as b,
        ):
            await b.update(memory.id, content="from b, again")
            if not at_once:
                for _ in range(2):
                    vectors = a.version_vectors([GLOBAL])
                    await a.apply(await b.export_since([GLOBAL], vectors, limit=1))
            await _pull(a, b)
            assert not a.store.pending(), "a delta of epoch 0 kept waiting for a later epoch"
            assert len(a.store.decisions()) == 2
            await _pull(b, a)  # b takes epoch 1, carrying its writes over
            await _pull(a, b)
            assert (await a.get(memory.id)).content == "from b, again"
            assert_converged([a, b])
            for replica in (a, b):
                assert_store_consistent(replica)


async def test_a_partial_writers_superseded_entry_on_a_channel_it_does_not_sync_is_covered(
    tmp_path: Path,
) -> None:
    """p syncs only the topic channel of a memory that is also on a user channel. Its write on
    epoch 0, concurrent with a's rebase, is logged on both channels; a supersedes it (logged
    without it, never relayed), and p folds it. c catches up from p's states: their covers must
    name p's entries on the user channel too (every state of p's memories is in the page), or c's
    vector for p on that channel stays behind a's for good."""
    wall = _Wall()
    topic, user = "topic:travel:updates", "user:alice:memories"
    both = [topic, user]
    async with (
        Replica(tmp_path / "a.db", replica_id="a", wall_clock=wall, lease_ms=1, retention_ms=1) as a,
        Replica(
            tmp_path / "p.db", replica_id="p", wall_clock=wall, lease_ms=1, retention_ms=1, channels=[topic]
        ) as p,
        Replica(tmp_path / "c.db", replica_id="c", wall_clock=wall, lease_ms=1, retention_ms=1) as c,
    ):
        for replica in (a, p, c):
            rebase_everything(replica)
        memory = await MemorySpec("fact", "v0", user_id="alice", topics=("travel",)).create(a, "m0")
        assert set(memory.channels) == set(both)
        await pull_until_quiet(p, a, [topic])
        await pull_until_quiet(a, p, [topic])
        await pull_until_quiet(c, a, both)
        wall.ms += 1_000
        assert (await a.compact()).rebased == 1
        await pull_until_quiet(c, a, both)  # c takes epoch 1 from a's log
        await p.update(memory.id, content="from p, on epoch 0")
        await pull_until_quiet(a, p, [topic])
        assert len(a.store.decisions()) == 1, "a supersedes p's write"
        assert a.version_vectors([user])[user].get("p") == 1
        wall.ms += 1_000
        await p.compact()
        await pull_until_quiet(c, p, [topic])  # behind p's horizon: states
        assert c._catchup.pages > 0
        await pull_until_quiet(c, a, both)
        await pull_until_quiet(p, a, [topic])  # p takes epoch 1 and carries its write over
        for _ in range(2):
            await pull_until_quiet(a, p, [topic])
            await pull_until_quiet(c, a, both)
            await pull_until_quiet(a, c, both)
            await pull_until_quiet(p, a, [topic])
        assert (await c.get(memory.id)).content == "from p, on epoch 0"
        assert_converged([a, c])
        assert_converged([p, a], channels=[topic])
        for replica in (a, p, c):
            assert_store_consistent(replica)


async def _rebase_behind_a_dropped_state(tmp_path: Path, wall: _Wall) -> str:
    """a rebases m0 while b writes on it (epoch 0) and folds that write; a catches up from b's
    states (a state of epoch 0, which a, on epoch 1, drops: b carries its write over)."""
    async with _replicas(tmp_path, wall) as (a, b):
        memory = await MemorySpec("fact", "v0").create(a, "m0")
        await _pull(b, a)
        await _pull(a, b)
        await b.update(memory.id, content="from b, first")  # on epoch 0, not sent to a
        wall.ms += 1_000
        assert (await a.compact()).rebased == 1
        await b.compact()  # folds b's write: a is behind b's horizon
        await _pull(a, b)  # a states page of epoch 0, dropped by a
        assert a._catchup.pages > 0
        assert not a.store.decisions(), "b's first write reached a only in a state"
        return memory.id


async def test_a_delta_of_epoch_0_naming_a_writer_seen_only_in_a_dropped_state_is_superseded(
    tmp_path: Path,
) -> None:
    """After :func:`_rebase_behind_a_dropped_state`, b restarts (a new Yrs client) and writes on
    epoch 0 again: the delta names b's first client, which a never saw in a delta, nor holds in a
    base or its document, so it may be of a later epoch and waits. Once b's later delta of the
    memory, made on epoch 1 (carrying its writes over), reaches a, it is placed on epoch 0 and
    superseded, instead of waiting for good for a rebase entry that does not exist (a's vector for
    b would stay behind b's)."""
    wall = _Wall()
    memory_id = await _rebase_behind_a_dropped_state(tmp_path, wall)
    async with (
        Replica(tmp_path / "a.db", replica_id="a", wall_clock=wall) as a,
        Replica(tmp_path / "b.db", replica_id="b", wall_clock=wall) as b,
    ):
        await b.update(memory_id, content="from b, again")  # on epoch 0, by a new client
        await _pull(a, b)
        await _pull(b, a)  # b takes epoch 1, carrying its writes over
        await _pull(a, b)
        assert not a.store.pending(), "a delta of epoch 0 kept waiting for a later epoch"
        assert [d.delta.origin for d in a.store.decisions()] == ["b"]
        assert (await a.get(memory_id)).content == "from b, again"
        assert_converged([a, b])
        for replica in (a, b):
            assert_store_consistent(replica)


async def test_a_waiting_delta_a_states_page_covers_is_dropped(tmp_path: Path) -> None:
    """As above, but b folds its carried change before a pulls again: a catches up from b's states
    (of epoch 1, holding the carried change), whose covers move a's vector for b past the delta
    still waiting. Nothing would ever apply it (a duplicate, as it would be on arrival): it is
    dropped, not left waiting for good."""
    wall = _Wall()
    memory_id = await _rebase_behind_a_dropped_state(tmp_path, wall)
    async with (
        Replica(tmp_path / "a.db", replica_id="a", wall_clock=wall, lease_ms=1, retention_ms=1) as a,
        Replica(tmp_path / "b.db", replica_id="b", wall_clock=wall, lease_ms=1, retention_ms=1) as b,
    ):
        await b.update(memory_id, content="from b, again")  # on epoch 0, by a new client
        await _pull(a, b)
        assert a.store.pending(), "it may be of a later epoch: it waits"
        await _pull(b, a)  # b takes epoch 1, carrying its writes over
        wall.ms += 1_000
        await b.compact()  # folds the carried change: a is behind b's horizon again
        pages = a._catchup.pages
        await _pull(a, b)
        assert a._catchup.pages > pages
        assert not a.store.pending(), "a delta the vectors hold kept waiting"
        assert (await a.get(memory_id)).content == "from b, again"
        assert_converged([a, b])
        for replica in (a, b):
            assert_store_consistent(replica)


async def test_the_rebase_entry_of_an_epoch_taken_from_a_state_is_logged_and_relayed(tmp_path: Path) -> None:
    """a rebases m1 between two pages of the states run b catches up from: the second page holds
    m1's state of epoch 1, but the covers, read before the first page, do not hold its rebase
    entry, which b then pulls as a delta. b's document holds it already: it is logged (a
    duplicate's effect), not superseded as one of an earlier epoch, which would leave it out of b's
    log for good (b's history would not replay to its document, and b would never relay the entry
    to c, whose deltas of the epoch would wait for it for ever)."""
    wall = _Wall()
    async with (
        _replicas(tmp_path, wall) as (a, b),
        Replica(tmp_path / "c.db", replica_id="c", wall_clock=wall) as c,
    ):
        assert a.compaction.rebaser is not None
        a.compaction.rebaser.min_bytes = 1 << 40  # the first compaction folds, and rebases nothing
        await MemorySpec("fact", "m0 v0").create(a, "m0")
        memory = await MemorySpec("fact", "m1 v0").create(a, "m1")
        await _pull(b, a)
        await a.update("m0", content="m0 v1")
        await a.update(memory.id, content="m1 v1")
        await _pull(c, a)  # c holds what b's states hold: it pulls deltas from b, not states
        wall.ms += 1_000
        assert (await a.compact()).rebased == 0
        assert a.behind([GLOBAL], b.version_vectors([GLOBAL])), "b catches up from states"
        first = decode_states(a.export_states([GLOBAL], limit=1), max_bytes=1 << 20)
        assert [doc_id for doc_id, _ in first.states] == ["m0"] and first.next is not None
        await b.apply_states(a.export_states([GLOBAL], limit=1), sender=STATE_SERVER)
        rebase_everything(a)
        assert (await a.compact()).rebased == 2  # logged after the covers were read, not folded
        second = a.export_states([GLOBAL], after=first.next, covers=first.covers, cursor=first.cursor)
        await b.apply_states(second, sender=STATE_SERVER)
        assert b.store.load_state(memory.id) is not None
        assert (await b.get(memory.id)).content == "m1 v1"
        await b.update(memory.id, content="m1 from b, on epoch 1")
        await _pull(b, a)  # the rebase entries, as deltas
        assert not b.store.decisions(), "the entry of the epoch b holds was superseded"
        assert not b.store.pending()
        assert not b.behind([GLOBAL], c.version_vectors([GLOBAL]))
        await _pull(c, b)  # c syncs with b alone: b relays both rebase entries
        assert not c.store.pending(), "a delta of epoch 1 waits for an entry b never relays"
        assert (await c.get(memory.id)).content == "m1 from b, on epoch 1"
        await _pull(a, b)
        assert_converged([a, b, c])
        for replica in (a, b, c):
            assert_store_consistent(replica)
    # b's log holds its write of epoch 1 before the epoch's entry: the entry, held already, does
    # not replace the document read back from the store
    async with Replica(tmp_path / "b.db", replica_id="b", wall_clock=wall) as b:
        assert (await b.get(memory.id)).content == "m1 from b, on epoch 1"
        assert_store_consistent(b)
