"""A simulated network between in-process replicas, with faults.

Messages are real payloads: a :meth:`~SimulatedNetwork.send` is a pull on the receiver's behalf
(``sender.export_since(channels, receiver's version vectors)``), a :meth:`~SimulatedNetwork.push` sends
whatever the sender has not pushed to that receiver before (eager push: a lost push leaves a gap), and
a delivery is ``receiver.apply(payload)``. Between the two, a
message sits *in flight*, where the configured :class:`Faults` act on it::

    send/push ─▶ [partition? blocked] ─▶ [drop?] ─▶ [truncate / corrupt?] ─▶ in flight (+ duplicate?)
    deliver ─▶ pick a message (random order when reorder=True; held ones wait) ─▶ receiver.apply

Every decision comes from the ``random.Random`` the network is given, so a run is reproducible from
its seed (or, inside hypothesis, shrinkable when given ``st.randoms()``).

Corruption is limited to damage a replica must detect without a checksum: truncation, random bytes,
trailing garbage, a mangled format header, and deltas whose fields contradict each other. A flipped
bit inside a Yrs string would be undetectable by design (transport integrity is TLS's job), so the
network never does that. A corrupted payload must raise :class:`~crdtmem.errors.PayloadError` and
change nothing; the network checks both and raises ``AssertionError`` otherwise.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ..engine.inbound import ApplyResult
from ..engine.replica import Replica
from ..errors import PayloadError
from ..store.base import VersionVector

__all__ = ["CORRUPTIONS", "Delivery", "Faults", "Message", "NetworkStats", "SimulatedNetwork"]

CORRUPTIONS = ("truncate", "garbage", "trailing", "header", "uid", "seq", "hlc")
"""How a corrupted payload is damaged. ``truncate`` is also a fault of its own."""


@dataclass(frozen=True, slots=True)
class Faults:
    """Probabilities (0..1) of each fault per message, and how reordering works.

    Args:
        drop: the message is lost.
        duplicate: a second copy is put in flight (delivered independently, possibly much later).
        delay: the message is held back for 1..``max_delay`` delivery rounds.
        truncate: the payload is cut short.
        corrupt: the payload is damaged in one of the :data:`CORRUPTIONS` ways.
        reorder: deliver in-flight messages in random order instead of FIFO.
        max_delay: the longest hold, in delivery rounds.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    truncate: float = 0.0
    corrupt: float = 0.0
    reorder: bool = True
    max_delay: int = 3

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "delay", "truncate", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{name} is a probability in [0, 1], got {value!r}")
        if self.max_delay < 1:
            raise ValueError(f"Faults.max_delay must be at least 1, got {self.max_delay!r}")

    @classmethod
    def none(cls) -> Faults:
        """A perfect network: FIFO, nothing lost, nothing damaged."""
        return cls(reorder=False)

    @classmethod
    def chaos(cls) -> Faults:
        """Every fault, often enough to matter in short runs."""
        return cls(drop=0.15, duplicate=0.2, delay=0.25, truncate=0.05, corrupt=0.1)


@dataclass(slots=True)
class Message:
    """One payload in flight from ``sender`` to ``receiver``."""

    id: int
    sender: str
    receiver: str
    payload: bytes
    damage: str | None = None
    """None for an intact payload, else the corruption applied (one of :data:`CORRUPTIONS`)."""
    hold: int = 0
    copy_of: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What happened to a delivered message: the replica's result, or the PayloadError it raised."""

    message: Message
    result: ApplyResult | None
    error: PayloadError | None = None


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    empty: int = 0
    blocked: int = 0
    dropped: int = 0
    duplicated: int = 0
    delayed: int = 0
    truncated: int = 0
    corrupted: int = 0
    delivered: int = 0
    rejected: int = 0
    undeliverable: int = 0
    applied: int = 0
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class _Fingerprint:
    vectors: dict[str, VersionVector]
    pending: int
    docs: int


class SimulatedNetwork:
    """Carries payloads between in-process :class:`~crdtmem.engine.replica.Replica` nodes, with faults.

    Args:
        rng: every random decision comes from here; an int is used as a seed.
        faults: what goes wrong, and how often.
        page_size: when set, each send exports at most a random 1..page_size deltas (the receiver
            asks again with its new version vector, as a real pull does).

    Nodes are addressed by replica id. After a restart, :meth:`join` the new ``Replica`` object with
    the same id; messages in flight to it are delivered to the new instance.
    """

    def __init__(
        self,
        rng: random.Random | int | None = None,
        faults: Faults | None = None,
        *,
        page_size: int | None = None,
    ):
        self.rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        self.faults = faults if faults is not None else Faults()
        self.page_size = page_size
        self.nodes: dict[str, Replica] = {}
        self.in_flight: list[Message] = []
        self.stats = NetworkStats()
        self.trace: list[str] = []
        """One line per event, for debugging and for checking that a seed reproduces a run (it holds
        no payload sizes: those vary with the random Yrs client ids)."""
        self._groups: dict[str, int] | None = None
        self._pushed: dict[tuple[str, str], dict[str, VersionVector]] = {}
        self._next_id = 0

    # -- membership and partitions ------------------------------------------------------------

    def join(self, replica: Replica) -> None:
        """Add ``replica`` (or replace the node with its id, e.g. after a restart)."""
        if not replica.id:
            raise ValueError("start the replica before it joins the network")
        self.nodes[replica.id] = replica

    def leave(self, replica_id: str) -> None:
        self.nodes.pop(replica_id, None)

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: nodes in different groups cannot reach each other; a node in no
        group is cut off from everyone. Messages across the cut are lost, at send or at delivery."""
        self._groups = {}
        for index, group in enumerate(groups):
            for replica_id in group:
                self._groups[replica_id] = index
        self.trace.append(f"partition {[sorted(g) for g in self._group_lists()]}")

    def heal(self) -> None:
        """End every partition."""
        self._groups = None
        self.trace.append("heal")

    @property
    def partitioned(self) -> bool:
        return self._groups is not None

    def reachable(self, a: str, b: str) -> bool:
        if self._groups is None or a == b:
            return True
        group = self._groups.get(a)
        return group is not None and group == self._groups.get(b)

    def _group_lists(self) -> list[set[str]]:
        found: dict[int, set[str]] = {}
        for replica_id, index in (self._groups or {}).items():
            found.setdefault(index, set()).add(replica_id)
        return [found[i] for i in sorted(found)]

    # -- sending ------------------------------------------------------------------------------

    def channels_between(self, sender: str, receiver: str) -> list[str]:
        """Channels the sender has deltas in and the receiver subscribes to."""
        source, target = self.nodes[sender], self.nodes[receiver]
        known = set(source.version_vectors()) | set(target.version_vectors())
        if target.channels is not None:
            known &= set(target.channels)
        if source.channels is not None:
            known &= set(source.channels)
        return sorted(known)

    async def send(self, sender: str, receiver: str, channels: Sequence[str] | None = None) -> Message | None:
        """Pull: export what ``receiver`` is missing from ``sender`` (by the receiver's version
        vectors now) and put it in flight, with faults.

        Returns the message put in flight, or None if there was nothing to send or it was lost.
        """
        names = self._route(sender, receiver, channels)
        if not names:
            return None
        since = self.nodes[receiver].version_vectors(names)
        return await self._transmit(sender, receiver, names, since, "send")

    async def push(self, sender: str, receiver: str, channels: Sequence[str] | None = None) -> Message | None:
        """Eager push: send what ``sender`` has not pushed to ``receiver`` before, whatever the
        receiver actually holds, as a WebSocket push of new commits does. A lost or reordered push
        leaves the receiver with deltas whose dependencies are missing; a later pull fills the gap.
        """
        names = self._route(sender, receiver, channels)
        if not names:
            return None
        pushed = self._pushed.setdefault((sender, receiver), {})
        since = {c: pushed.get(c, {}) for c in names}
        message = await self._transmit(sender, receiver, names, since, "push")
        pushed.update(self.nodes[sender].version_vectors(names))
        return message

    def _route(self, sender: str, receiver: str, channels: Sequence[str] | None) -> list[str]:
        if sender == receiver:
            return []
        if not self.reachable(sender, receiver):
            self.stats.blocked += 1
            self.trace.append(f"blocked {sender}->{receiver}")
            return []
        names = list(channels) if channels is not None else self.channels_between(sender, receiver)
        if not names:
            self.stats.empty += 1
        return names

    async def _transmit(
        self, sender: str, receiver: str, names: list[str], since: dict[str, VersionVector], how: str
    ) -> Message | None:
        limit = self.rng.randint(1, self.page_size) if self.page_size else None
        payload = await self.nodes[sender].export_since(names, since, limit=limit)
        self.stats.sent += 1
        message = Message(self._new_id(), sender, receiver, payload)
        self.trace.append(f"{how} #{message.id} {sender}->{receiver}")
        return message if self._put_in_flight(message) else None

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _put_in_flight(self, message: Message) -> bool:
        faults, rng = self.faults, self.rng
        if rng.random() < faults.drop:
            self.stats.dropped += 1
            self.trace.append(f"drop #{message.id}")
            return False
        if rng.random() < faults.truncate:
            self._damage(message, "truncate")
        elif rng.random() < faults.corrupt:
            self._damage(message, rng.choice(CORRUPTIONS))
        self._hold(message)
        self.in_flight.append(message)
        if rng.random() < faults.duplicate:
            copy = Message(self._new_id(), message.sender, message.receiver, message.payload, message.damage)
            copy.copy_of = message.id
            self.stats.duplicated += 1
            self.trace.append(f"duplicate #{message.id} as #{copy.id}")
            self._hold(copy)
            self.in_flight.append(copy)
        return True

    def _hold(self, message: Message) -> None:
        if self.rng.random() < self.faults.delay:
            message.hold = self.rng.randint(1, self.faults.max_delay)
            self.stats.delayed += 1
            self.trace.append(f"delay #{message.id} by {message.hold}")

    def _damage(self, message: Message, how: str) -> None:
        message.payload = corrupt_payload(message.payload, how, self.rng)
        message.damage = how
        if how == "truncate":
            self.stats.truncated += 1
        else:
            self.stats.corrupted += 1
        self.trace.append(f"damage #{message.id} {how}")

    # -- delivering ---------------------------------------------------------------------------

    async def deliver(self, count: int | None = None) -> list[Delivery]:
        """One delivery round: deliver up to ``count`` ready messages (all ready ones when None),
        then let every held message wait one round less."""
        ready = [m for m in self.in_flight if m.hold == 0]
        if self.faults.reorder:
            self.rng.shuffle(ready)
        if count is not None:
            ready = ready[:count]
        deliveries = []
        for message in ready:
            self.in_flight.remove(message)
            delivery = await self._deliver_one(message)
            if delivery is not None:
                deliveries.append(delivery)
        for message in self.in_flight:
            message.hold = max(0, message.hold - 1)
        return deliveries

    async def deliver_all(self, *, max_rounds: int = 1_000) -> list[Delivery]:
        """Deliver rounds until nothing is in flight (held messages included)."""
        deliveries: list[Delivery] = []
        for _ in range(max_rounds):
            if not self.in_flight:
                break
            deliveries += await self.deliver()
        return deliveries

    async def _deliver_one(self, message: Message) -> Delivery | None:
        receiver = self.nodes.get(message.receiver)
        if receiver is None or not self.reachable(message.sender, message.receiver):
            self.stats.undeliverable += 1
            self.trace.append(f"undeliverable #{message.id}")
            return None
        before = _fingerprint(receiver) if message.damage else None
        try:
            result = await receiver.apply(message.payload)
        except PayloadError as exc:
            if message.damage is None:
                raise
            self.stats.rejected += 1
            self.trace.append(f"rejected #{message.id} {type(exc).__name__}")
            after = _fingerprint(receiver)
            if after != before:
                raise AssertionError(
                    f"replica {receiver.id} refused a {message.damage} payload but its state changed: "
                    f"{before} -> {after}"
                ) from exc
            return Delivery(message, None, exc)
        if message.damage is not None:
            raise AssertionError(f"replica {receiver.id} accepted a payload damaged by {message.damage!r}")
        self.stats.delivered += 1
        self.stats.applied += result.applied
        self.stats.duplicates += result.duplicates
        self.trace.append(f"deliver #{message.id} applied={result.applied} dup={result.duplicates}")
        return Delivery(message, result)

    # -- whole-network helpers ----------------------------------------------------------------

    async def exchange(self, a: str, b: str) -> list[Delivery]:
        """Send both ways between ``a`` and ``b`` and deliver everything in flight."""
        await self.send(a, b)
        await self.send(b, a)
        return await self.deliver_all()

    async def settle(self, *, max_rounds: int = 100) -> int:
        """The final full exchange: heal, deliver what is in flight, then pull between every ordered
        pair of nodes over a perfect link until no version vector moves. Returns the rounds taken.

        Raises AssertionError if the nodes have not stopped changing after ``max_rounds``.
        """
        self.heal()
        await self.deliver_all()
        ids = sorted(self.nodes)
        for round_number in range(1, max_rounds + 1):
            before = {i: self.nodes[i].version_vectors() for i in ids}
            for sender in ids:
                for receiver in ids:
                    if sender == receiver:
                        continue
                    names = self.channels_between(sender, receiver)
                    if not names:
                        continue
                    target = self.nodes[receiver]
                    payload = await self.nodes[sender].export_since(names, target.version_vectors(names))
                    await target.apply(payload)
            after = {i: self.nodes[i].version_vectors() for i in ids}
            if after == before:
                self.trace.append(f"settled after {round_number} rounds")
                return round_number
        raise AssertionError(f"the network did not settle within {max_rounds} full exchange rounds")


def _fingerprint(replica: Replica) -> _Fingerprint:
    store = replica.store
    return _Fingerprint(replica.version_vectors(), len(store.pending()), store.doc_count())


def corrupt_payload(payload: bytes, how: str, rng: random.Random) -> bytes:
    """Damage ``payload`` in a way a replica must detect (see the module docstring).

    ``uid``, ``seq`` and ``hlc`` re-encode the payload with one delta whose fields contradict each
    other; for a payload without deltas they fall back to ``garbage``. Exactly one number is taken
    from ``rng`` whatever the payload, so that payload sizes (which vary with the random Yrs client
    ids) never change the sequence of decisions a seed, or a hypothesis choice sequence, drives.
    """
    local = random.Random(rng.getrandbits(64))
    if how == "truncate":
        return payload[: local.randrange(len(payload))] if payload else b""
    if how == "garbage":
        return local.randbytes(max(1, len(payload)))
    if how == "trailing":
        return payload + local.randbytes(local.randint(1, 8))
    if how == "header":
        return _mangle_format_key(payload, local)
    if how not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {how!r}; expected one of {CORRUPTIONS}")
    body: Any = msgpack.unpackb(payload, raw=False)
    deltas = body.get("deltas") if isinstance(body, dict) else None
    if not deltas:
        return local.randbytes(max(1, len(payload)))
    delta = deltas[local.randrange(len(deltas))]
    if how == "uid":
        delta[0] = delta[0] + "x"
    elif how == "seq":
        channel = local.choice(sorted(delta[6]))
        delta[6][channel] = local.choice([0, -1])
    else:
        bad = local.choice(["yesterday", "1.2", "0" * 22])
        delta[3] = bad
        delta[0] = f"{delta[1]}:{bad}"
    return bytes(msgpack.packb(body, use_bin_type=True))


def _mangle_format_key(payload: bytes, rng: random.Random) -> bytes:
    """Change one character of the ``format`` key, so the payload no longer names its format."""
    position = payload.find(b"format")
    if position < 0:
        return rng.randbytes(max(1, len(payload)))
    damaged = bytearray(payload)
    index = position + rng.randrange(6)
    damaged[index] = ord("A") + rng.randrange(26)  # an ASCII upper-case letter never matches "format"
    return bytes(damaged)
