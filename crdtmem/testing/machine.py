"""A hypothesis state machine that runs several replicas on real SQLite files under network faults.

Each example opens 2..``MAX_REPLICAS`` replicas on their own files in a temporary directory (one of
them may subscribe to only some channels), creates a few memories and shares them, and then runs
random steps: create memories, write to them, forget them, compact logs (with short leases, so
replicas fall behind the horizon and catch up from document states) (every value unique, through
:class:`~crdtmem.testing.ledger.AcknowledgedWrites`, with clocks advancing in between), resolve
conflicts, pull, push and deliver payloads through a
:class:`~crdtmem.testing.network.SimulatedNetwork` that drops, duplicates, delays, reorders,
truncates and corrupts them, partition and heal the network, and restart replicas from disk (stop,
then reopen the same file). At the end of every example (in ``teardown``) the network settles, and
then:

- every replica holds the same memories, conflict sets and version vectors (partial replicas: on
  the channels they subscribe to), with nothing pending;
- every replica holds exactly what the acknowledged writes imply (nothing lost, nothing invented);
- every store is self-consistent, and all of this still holds after reopening every file.

Use it directly, or subclass it to tune the class attributes or add rules for your own app::

    from hypothesis import settings
    from crdtmem.testing import Faults, ReplicaMachine

    class MyMachine(ReplicaMachine):
        MAX_REPLICAS = 5
        FAULTS = Faults(drop=0.3, duplicate=0.3)

    TestMyMachine = MyMachine.TestCase
    TestMyMachine.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)

The async replicas run on one event loop the machine owns (one per example), closed in ``teardown``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from ..document.records import KINDS, Kind, Memory
from ..engine.replica import Replica
from ..errors import MemoryDeleted, MemoryExists, NoSuchConflict, NotFound
from ..ids import Channel
from ..store.sqlite import Synchronous
from .checks import (
    assert_acknowledged_present,
    assert_converged,
    assert_forgotten_absent,
    assert_store_consistent,
)
from .ledger import AcknowledgedWrites
from .network import Faults, SimulatedNetwork
from .strategies import (
    DEFAULT_TENANTS,
    DEFAULT_TOPICS,
    DEFAULT_USERS,
    Operation,
    Resolve,
    json_values,
    memory_specs,
    operations,
    texts,
)

__all__ = ["ReplicaMachine", "all_channels"]

T = TypeVar("T")

_REJECTED = (MemoryDeleted, MemoryExists, NoSuchConflict, NotFound)
"""Errors a write may legitimately get in a random run; it is then simply not acknowledged."""


def all_channels(
    users: Sequence[str] = DEFAULT_USERS,
    tenants: Sequence[str] = DEFAULT_TENANTS,
    topics: Sequence[str] = DEFAULT_TOPICS,
) -> list[str]:
    """Every channel a memory drawn by :func:`~crdtmem.testing.strategies.memory_specs` can be on."""
    return sorted(
        [str(Channel.user(u)) for u in users]
        + [str(Channel.tenant(t)) for t in tenants]
        + [str(Channel.topic(t)) for t in topics]
        + ["system:global"]
    )


class ReplicaMachine(RuleBasedStateMachine):
    """Replicas on SQLite files under faults; converge and lose nothing (module docstring)."""

    MIN_REPLICAS: ClassVar[int] = 2
    MAX_REPLICAS: ClassVar[int] = 4
    PARTIAL_REPLICAS: ClassVar[int] = 1
    """At most this many replicas subscribe to a random subset of channels instead of all."""
    INITIAL_MEMORIES: ClassVar[int] = 3
    """Up to this many memories are created and shared with every replica before the first step."""
    MAX_MEMORIES: ClassVar[int] = 6
    """Few memories, so that writes on different replicas collide."""
    KINDS: ClassVar[Sequence[Kind]] = KINDS
    FAULTS: ClassVar[Faults] = Faults.chaos()
    PAGE_SIZE: ClassVar[int | None] = 4
    SYNCHRONOUS: ClassVar[Synchronous] = "OFF"
    """Restarts are clean closes, so fsync buys nothing here and costs most of the run time."""
    START_MS: ClassVar[int] = 1_700_000_000_000
    MAX_SKEW_MS: ClassVar[int] = 2_000
    """Replica clocks differ by up to this much (well inside the default max drift)."""
    REOPEN_AT_END: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, int]] = {
        "write": 4,
        "sync": 3,
        "add_memory": 1,
        "resolve_conflict": 1,
        "disturb": 1,
        "forget": 1,
        "compact": 1,
    }
    """The actions :meth:`step` chooses from, with their relative weights (0 switches one off)."""
    LEASE_MS: ClassVar[int] = 4_000
    """Peers' leases are short, so a replica that stays away loses its and falls behind the horizon."""
    RETENTION_MS: ClassVar[int | None] = 2_000
    """Log entries this old fold even if a peer whose lease ran out lacks them."""
    REBASE_AT: ClassVar[tuple[int, float] | None] = None
    """``(bytes, ratio)``: rebase memories from this state size and state-to-rebuilt ratio on
    (None: crdtmem's defaults, which the small documents of a run never reach)."""
    SNAPSHOT_EVERY = 3
    """Documents get a new snapshot after this many deltas: often, so runs mix snapshots and tails."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self._tmp = tempfile.TemporaryDirectory(prefix="crdtmem-machine-")
        self.directory = Path(self._tmp.name)
        self.replicas: dict[str, Replica] = {}
        self.subscriptions: dict[str, tuple[str, ...] | None] = {}
        self.skews: dict[str, int] = {}
        self.network: SimulatedNetwork | None = None
        self.acked = AcknowledgedWrites()
        self.now_ms = self.START_MS
        self.rejected_writes = 0
        self._tokens = 0
        self.secrets: dict[str, list[str]] = {}
        """Text written to each forgotten memory just before it was forgotten (shared or not)."""

    # -- plumbing -----------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the machine's event loop."""
        return self.loop.run_until_complete(coro)

    def _wall(self, replica_id: str) -> int:
        return self.now_ms + self.skews[replica_id]

    async def _open(self, replica_id: str) -> Replica:
        replica = Replica(
            self.directory / f"{replica_id}.db",
            replica_id=replica_id,
            channels=self.subscriptions[replica_id],
            wall_clock=lambda: self._wall(replica_id),
            synchronous=self.SYNCHRONOUS,
            snapshot_every=self.SNAPSHOT_EVERY,
            lease_ms=self.LEASE_MS,
            retention_ms=self.RETENTION_MS,
        )
        await replica.start()
        self.acked.watch(replica)
        if self.REBASE_AT is not None and replica.compaction.rebaser is not None:
            replica.compaction.rebaser.min_bytes, replica.compaction.rebaser.ratio = self.REBASE_AT
        self.replicas[replica_id] = replica
        if self.network is not None:
            self.network.join(replica)
        return replica

    async def _restart(self, replica_id: str) -> None:
        await self.replicas[replica_id].stop()
        await self._open(replica_id)

    def _token(self, replica_id: str) -> str:
        self._tokens += 1
        return f"{replica_id}.{self._tokens}"

    @property
    def ids(self) -> list[str]:
        return sorted(self.replicas)

    def _draw_replica(self, data: st.DataObject, label: str = "replica") -> str:
        return data.draw(st.sampled_from(self.ids), label=label)

    def _known_memories(self, replica_id: str) -> list[str]:
        return sorted(r["id"] for r in self.replicas[replica_id].store.query_records(include_deleted=True))

    @property
    def _net(self) -> SimulatedNetwork:
        assert self.network is not None, "the machine was not initialized"
        return self.network

    # -- setup --------------------------------------------------------------------------------

    @initialize(data=st.data(), rng=st.randoms(use_true_random=False))
    def open_replicas(self, data: st.DataObject, rng: Any) -> None:
        """Open the replicas, create a few memories and share them with every replica (so that
        writes collide from the first step, whichever rules the example uses)."""
        count = data.draw(st.integers(self.MIN_REPLICAS, self.MAX_REPLICAS), label="replicas")
        partial = data.draw(st.integers(0, min(self.PARTIAL_REPLICAS, count - 1)), label="partial")
        channels = all_channels()
        self.network = SimulatedNetwork(rng, self.FAULTS, page_size=self.PAGE_SIZE)
        for index in range(count):
            replica_id = f"r{index}"
            self.skews[replica_id] = data.draw(st.integers(-self.MAX_SKEW_MS, self.MAX_SKEW_MS), label="skew")
            self.subscriptions[replica_id] = None
            if index >= count - partial:
                subset = data.draw(
                    st.lists(st.sampled_from(channels), min_size=1, unique=True), label="channels"
                )
                self.subscriptions[replica_id] = tuple(sorted(subset))
            self.run(self._open(replica_id))
        for _ in range(data.draw(st.integers(1, self.INITIAL_MEMORIES), label="initial memories")):
            self._create(data)
        self.run(self._net.settle())

    # -- steps --------------------------------------------------------------------------------

    @precondition(lambda self: self.network is not None)
    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        """One action, drawn by :attr:`ACTIONS` weight.

        A single weighted rule rather than one rule per action: hypothesis' swarm testing switches
        rules off at random per example, which left half the examples without any writes.
        """
        action = data.draw(
            st.sampled_from([a for a, w in self.ACTIONS.items() for _ in range(w)]), label="action"
        )
        getattr(self, action)(data)

    def add_memory(self, data: st.DataObject) -> None:
        """Create a memory (a write when there are enough already)."""
        if len(self.acked.memory_ids) >= self.MAX_MEMORIES:
            self.write(data)
            return
        replica_id = self._create(data)
        if replica_id is not None:
            self._after_write(data, replica_id)

    def _create(self, data: st.DataObject) -> str | None:
        replica_id = self._draw_replica(data)
        spec = data.draw(memory_specs(self.KINDS), label="spec").uniquify(self._token(replica_id))
        replica = self.replicas[replica_id]
        if replica.channels is not None and not set(spec.channels) & set(replica.channels):
            return None  # a partial replica cannot create a memory it would not hold itself
        # Memory ids are part of what later steps draw from, so they must not be random.
        memory_id = f"m{len(self.acked.memory_ids)}"
        self.run(self.acked.create(replica, spec, memory_id))
        return replica_id

    def write(self, data: st.DataObject) -> None:
        """One to four writes, each on a replica of its own choosing, with time passing between;
        after each, the writer may push to a peer and the network may deliver a message."""
        for _ in range(data.draw(st.integers(1, 4), label="writes")):
            self.now_ms += data.draw(st.integers(0, 1_000), label="ms")
            replica_id = self._draw_replica(data)
            known = self._known_memories(replica_id)
            if not known:
                continue
            memory_id = data.draw(st.sampled_from(known), label="memory")
            replica = self.replicas[replica_id]
            memory: Memory = self.run(replica.get(memory_id))
            op = data.draw(operations(memory=memory), label="op").uniquify(self._token(replica_id))
            self._write(replica, memory_id, op)
            self._after_write(data, replica_id)

    def _after_write(self, data: st.DataObject, replica_id: str) -> None:
        """What a live system does right after a commit: eager push to a peer, while the network
        keeps delivering."""
        if data.draw(st.booleans(), label="push"):
            self.run(self._net.push(replica_id, self._draw_replica(data, "to")))
        if bool(self._net.in_flight) and data.draw(st.booleans(), label="deliver one"):
            self.run(self._net.deliver(1))

    def resolve_conflict(self, data: st.DataObject) -> None:
        """Resolve an open conflict on a replica that has one (a write when none has)."""
        candidates = [r for r in self.ids if self.replicas[r].store.conflicts()]
        if not candidates:
            self.write(data)
            return
        replica_id = data.draw(st.sampled_from(candidates), label="replica")
        replica = self.replicas[replica_id]
        conflicts = self.run(replica.conflicts())
        conflict = data.draw(st.sampled_from(conflicts), label="conflict")
        if conflict.field == "lifecycle":
            value: Any = data.draw(st.sampled_from(["active", "deleted"]), label="value")
        else:
            value = data.draw(texts() | json_values(max_leaves=2), label="value")
        op = Resolve(conflict.field, value).uniquify(self._token(replica_id))
        self._write(replica, conflict.memory_id, op)

    def _write(self, replica: Replica, memory_id: str, op: Operation) -> None:
        try:
            self.run(self.acked.run(replica, memory_id, op))
        except _REJECTED:
            self.rejected_writes += 1

    def forget(self, data: st.DataObject) -> None:
        """Write a secret into a memory, maybe push it to a peer, then forget the memory: once the
        network settles, the secret must be in no replica's files (:func:`assert_forgotten_absent`)."""
        replica_id = self._draw_replica(data)
        known = [m for m in self._known_memories(replica_id) if m not in self.acked.forgotten]
        if not known:
            return
        memory_id = data.draw(st.sampled_from(known), label="memory")
        replica = self.replicas[replica_id]
        secret = f"forget-secret-{memory_id}-{self._token(replica_id)}-end"
        try:
            self.run(replica.update(memory_id, metadata={"secret": secret}))
            self.secrets.setdefault(memory_id, []).append(secret)
            if data.draw(st.booleans(), label="share the secret"):
                self.run(self._net.push(replica_id, self._draw_replica(data, "to")))
                self.run(self._net.deliver(1))
        except _REJECTED:  # e.g. a deleted memory takes no update: forget it all the same
            pass
        self.run(replica.forget(memory_id))
        self.acked.forget(memory_id)
        self.secrets.setdefault(memory_id, [])

    def compact(self, data: st.DataObject) -> None:
        """Compact a replica's log behind its horizon; peers behind it catch up from states."""
        self.now_ms += data.draw(st.integers(0, 3_000), label="ms")
        self.run(self.replicas[self._draw_replica(data)].compact())

    # -- the network --------------------------------------------------------------------------

    def sync(self, data: st.DataObject) -> None:
        """Put one to three pulls or pushes in flight, deliver some of what is in flight, or do a
        whole two-way exchange between two replicas (which also delivers everything in flight)."""
        net = self._net
        action = data.draw(st.sampled_from(["send", "push", "deliver", "exchange"]), label="action")
        if action in ("send", "push"):
            transmit = net.send if action == "send" else net.push
            for _ in range(data.draw(st.integers(1, 3), label="messages")):
                sender = self._draw_replica(data, "sender")
                receiver = self._draw_replica(data, "receiver")
                self.run(transmit(sender, receiver))
        elif action == "deliver":
            self.run(net.deliver(data.draw(st.none() | st.integers(1, 3), label="count")))
        else:
            a = self._draw_replica(data, "a")
            b = self._draw_replica(data, "b")
            self.run(net.exchange(a, b))

    def disturb(self, data: st.DataObject) -> None:
        """Split the network in two (or heal it), or restart a replica from its file."""
        net = self._net
        choices = ["heal", "heal", "restart"] if net.partitioned else ["partition", "restart"]
        action = data.draw(st.sampled_from(choices), label="action")
        if action == "restart":
            self.run(self._restart(self._draw_replica(data)))
        elif action == "heal":
            net.heal()
        else:
            sides = data.draw(
                st.lists(st.integers(0, 1), min_size=len(self.ids), max_size=len(self.ids)), label="sides"
            )
            net.partition(
                *[[r for r, side in zip(self.ids, sides, strict=True) if side == s] for s in (0, 1)]
            )

    # -- the end of every example -------------------------------------------------------------

    def teardown(self) -> None:
        try:
            # Only check a run that got to its end: after a failed step, the step's error is the
            # report, and a second error from here would only hide it.
            if sys.exc_info()[1] is None and self.network is not None:
                self.run(self.check_final_state())
        finally:
            self.close()

    async def check_final_state(self) -> None:
        """Settle the network and run every end-of-run check (then again after reopening all)."""
        await self._net.settle()
        self.check_converged()
        if self.REOPEN_AT_END:
            for replica_id in self.ids:
                await self._restart(replica_id)
            self.check_converged()

    def check_converged(self) -> None:
        replicas = [self.replicas[i] for i in self.ids]
        full = [r for r in replicas if r.channels is None]
        assert_converged(full)
        for replica in replicas:
            if replica.channels is not None:
                assert_converged([replica, full[0]], channels=replica.channels)
        for replica in replicas:
            assert_acknowledged_present(replica, self.acked)
            assert_store_consistent(replica)
            for memory_id, secrets in self.secrets.items():
                assert_forgotten_absent(replica, memory_id, self.acked.channels_of(memory_id), secrets)

    def close(self) -> None:
        """Close every replica, the event loop and the temporary directory (idempotent)."""
        if self.loop.is_closed():
            return
        try:
            for replica in self.replicas.values():
                self.loop.run_until_complete(replica.stop())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            self._tmp.cleanup()
