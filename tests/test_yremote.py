"""A merged update's appends read from the update (``document/yremote.py``) tell an array's
observer exactly what Yrs' own change delta would: a message log fed by them always equals the
array, whatever the writers did (concurrent appends at one end, removals, map entries, several
values in one transaction) and however the updates arrive (out of order, twice, before what they
depend on)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtmem.crdt.conversation import MessageLog, _record
from crdtmem.document import yremote
from crdtmem.document.yroots import YArray, YDoc, YMap

WRITERS = (11, 22, 33)
HLC = "001796520063535.000000"


def _message(n: int, by: int) -> dict[str, str]:
    return {"id": f"{by}:{n}", "role": "user", "text": f"message {n} of {by}", "hlc": HLC, "by": str(by)}


class Receiver:
    """A document whose array a message log follows, as ``MemoryDoc`` keeps it."""

    def __init__(self, base: bytes):
        self.doc = YDoc(client_id=99)
        self.doc.apply_update(base)
        self.array = YArray(self.doc, "messages")
        self.log = MessageLog(self.array.to_py())
        self.told = 0
        self._subscription = self.array.observe(self._follow)

    def _follow(self, delta: list[dict[str, Any]] | None) -> None:
        if delta is not None and self.doc.incoming is not None and self.doc.incoming.landed:
            self.told += any(told for _, _, told in self.doc.incoming.landed)
        self.log.follow(delta)

    def check(self) -> None:
        expected = [m for m in map(_record, self.array.to_py()) if m is not None]
        if not self.log.in_step:  # what MemoryDoc does when its log is out of step
            self.log.reset(self.array.to_py())
        assert list(self.log.content()) == expected


_op = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(WRITERS), st.integers(1, 3), st.booleans()),
    st.tuples(st.just("map"), st.sampled_from(WRITERS)),
    st.tuples(st.just("remove"), st.sampled_from(WRITERS), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("plain"), st.sampled_from(WRITERS)),
    st.tuples(st.just("sync"), st.sampled_from(WRITERS), st.sampled_from(WRITERS)),
    st.tuples(st.just("deliver"), st.integers(0, 200)),
    st.tuples(st.just("local"), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 6), st.lists(_op, max_size=40), st.randoms(use_true_random=False))
def test_a_log_fed_from_merged_updates_equals_the_array(base_length, ops, rng) -> None:
    saved = yremote.FAST_AT
    yremote.FAST_AT = 0  # read every merged update, however short the array
    try:
        _run(base_length, ops, rng)
    finally:
        yremote.FAST_AT = saved


def _run(base_length: int, ops: list[tuple[Any, ...]], rng: Any) -> None:
    origin = YDoc(client_id=1)
    base_array, base_map = YArray(origin, "messages"), YMap(origin, "lifecycle")
    for n in range(base_length):
        with origin.transaction():
            base_array.append(_message(n, 1))
            base_map["1"] = {"v": "active", "n": str(n)}
    base = origin.get_update()
    writers = {}
    for client in WRITERS:
        doc = YDoc(client_id=client)
        doc.apply_update(base)
        writers[client] = (doc, YArray(doc, "messages"), YMap(doc, "lifecycle"))
    receiver = Receiver(base)
    sent: list[bytes] = []
    undelivered: list[bytes] = []
    count = 0
    for op in ops:
        kind = op[0]
        if kind == "sync":
            (src, _, _), (dst, _, _) = writers[op[1]], writers[op[2]]
            if src is not dst:
                dst.apply_update(src.get_update(dst.get_state()))
            continue
        if kind == "deliver":
            if undelivered:
                update = undelivered.pop(op[1] % len(undelivered))
                receiver.doc.apply_update(update)
                receiver.check()
            elif sent:
                receiver.doc.apply_update(sent[op[1] % len(sent)])  # a duplicate
                receiver.check()
            continue
        if kind == "local":  # the receiver writes too: its own appends, or a map entry
            with receiver.doc.transaction():
                if op[1]:
                    count += 1
                    receiver.array.append(_message(count, 99))
                YMap(receiver.doc, "lifecycle")["99"] = {"v": "active", "n": str(count)}
            receiver.check()
            continue
        doc, array, lifecycle = writers[op[1]]
        with doc.transact_capturing() as captured:
            if kind == "append":
                for _ in range(op[2]):
                    count += 1
                    array.append(_message(count, op[1]))
                if op[3]:
                    lifecycle[str(op[1])] = {"v": "active", "n": str(count)}
            elif kind == "map":
                lifecycle[str(op[1])] = {"v": "active", "n": str(count)}
            elif kind == "remove":  # and maybe append after it, in the same transaction
                length = len(array.to_py())
                if length:
                    array.remove(op[2] % length)
                if op[3]:
                    count += 1
                    array.append(_message(count, op[1]))
            else:  # a value that is not a message: the log keeps its place
                array.append("not a message")
        if captured.update is not None:
            sent.append(captured.update)
            if rng.random() < 0.7:  # most arrive at once, in order; the rest later, in any order
                receiver.doc.apply_update(captured.update)
                receiver.check()
            else:
                undelivered.append(captured.update)
    for update in undelivered + sent:
        receiver.doc.apply_update(update)
        receiver.check()
    for doc, array, _ in writers.values():
        receiver.doc.apply_update(doc.get_update(receiver.doc.get_state()))
        receiver.check()
        doc.apply_update(receiver.doc.get_update(doc.get_state()))
        assert array.to_py() == receiver.array.to_py()


def test_a_remote_append_to_a_long_array_is_read_from_the_update() -> None:
    writer = YDoc(client_id=7)
    array, lifecycle = YArray(writer, "messages"), YMap(writer, "lifecycle")
    for n in range(yremote.FAST_AT + 10):
        with writer.transaction():
            array.append(_message(n, 7))
            lifecycle["7"] = {"v": "active", "n": str(n)}
    receiver = Receiver(writer.get_update())
    for n in range(30):
        with writer.transact_capturing() as captured:
            array.append(_message(10_000 + n, 7))
            lifecycle["7"] = {"v": "active", "n": str(n)}
        assert captured.update is not None
        receiver.doc.apply_update(captured.update)
        receiver.check()
    # the first one after loading is learned from Yrs' delta; every later one is read from its update
    assert receiver.told == 29 and receiver.log.in_step
    assert len(receiver.log.content()) == yremote.FAST_AT + 40


def _writer_of_three() -> tuple[YDoc, YArray, YMap]:
    """Client 7's document: three messages, each with its lifecycle entry."""
    writer = YDoc(client_id=7)
    array, lifecycle = YArray(writer, "messages"), YMap(writer, "lifecycle")
    for n in range(3):
        with writer.transaction():
            array.append(_message(n, 7))
            lifecycle["7"] = {"v": "active", "n": str(n)}
    return writer, array, lifecycle


def test_an_update_merged_before_its_dependencies_puts_the_log_out_of_step_not_wrong(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(yremote, "FAST_AT", 0)
    writer, array, lifecycle = _writer_of_three()
    receiver = Receiver(writer.get_update())
    updates = []
    for n in range(4):
        with writer.transact_capturing() as captured:
            array.append(_message(100 + n, 7))
            lifecycle["7"] = {"v": "active", "n": str(n)}
        updates.append(captured.update)
    receiver.doc.apply_update(updates[0])
    receiver.check()
    receiver.doc.apply_update(updates[2])  # waits inside Yrs for updates[1]
    receiver.check()
    receiver.doc.apply_update(updates[1])  # both integrate now: not what the update alone says
    receiver.check()
    receiver.doc.apply_update(updates[3])
    receiver.check()
    assert [m["id"] for m in receiver.log.content()][-4:] == [f"7:{100 + n}" for n in range(4)]


@pytest.mark.parametrize("length", [0, 1])
def test_learning_needs_exactly_one_item_holding_the_values(length: int) -> None:
    from crdtmem.document import ystructs

    writer = YDoc(client_id=7)
    array, lifecycle = YArray(writer, "messages"), YMap(writer, "lifecycle")
    for n in range(length):
        array.append(_message(n, 7))
    with writer.transact_capturing() as captured:
        array.append({"same": "value"})
        lifecycle["x"] = {"same": "value"}  # the same value elsewhere: which one is the array's?
    assert captured.update is not None
    assert yremote.learned(ystructs.read(captured.update), [{"same": "value"}]) is None


def test_items_yrs_held_back_that_integrate_with_an_update_are_never_taken_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fourth update (remove the third's message, append another) arrives first, so Yrs holds
    it back; with the third both integrate: the array grows by one, as the third alone would make
    it, but by the fourth's message."""
    monkeypatch.setattr(yremote, "FAST_AT", 0)
    writer, array, lifecycle = _writer_of_three()
    receiver = Receiver(writer.get_update())
    updates = []
    for n in range(3):
        with writer.transact_capturing() as captured:
            if n == 2:  # the fourth
                array.remove(len(array.to_py()) - 1)
            array.append(_message(100 + n, 7))
            if n < 2:
                lifecycle["7"] = {"v": "active", "n": str(n)}
        assert captured.update is not None
        updates.append(captured.update)
    receiver.doc.apply_update(updates[2])  # held back by Yrs: it needs the third
    receiver.doc.apply_update(updates[0])  # the tail is learned from Yrs' own delta
    receiver.check()
    told = receiver.told
    receiver.doc.apply_update(updates[1])  # read from the update, then found not to be all of it
    assert receiver.told == told + 1
    receiver.check()
    assert [m["id"] for m in receiver.log.content()][-2:] == ["7:100", "7:102"]


async def test_replicas_following_a_long_conversation_read_its_appends_from_their_updates(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Three replicas append to one conversation, concurrently at times, and apply each other's
    deltas one payload at a time: their records, and what their stores hold, stay equal."""
    from crdtmem import Replica
    from crdtmem.testing import assert_store_consistent

    monkeypatch.setattr(yremote, "FAST_AT", 4)
    read_from_updates: list[yremote.Landing] = []
    landed = YArray.landed

    def counting(self: YArray, landing: yremote.Landing | None, told: bool) -> None:
        if landing is not None and told:
            read_from_updates.append(landing)
        landed(self, landing, told)

    monkeypatch.setattr(YArray, "landed", counting)
    channel = "user:u1:memories"
    replicas = [Replica(tmp_path / f"{name}.db", replica_id=name) for name in ("a", "b", "c")]
    for replica in replicas:
        await replica.start()
    try:
        a, b, c = replicas
        memory = await a.add([], kind="conversation", user_id="u1")

        async def sync(src: Replica, dst: Replica) -> None:
            while True:  # one delta per payload, as a live peer sends them
                payload = await src.export_since([channel], dst.version_vectors([channel]), limit=1)
                result = await dst.apply(payload)
                if not result.applied and not result.duplicates:
                    return

        for n in range(30):
            await a.append_message(memory.id, role="user", text=f"a {n}")
            if n % 7 == 3:  # b and c append concurrently with a, at the same end
                await sync(a, b)
                await b.append_message(memory.id, role="user", text=f"b {n}")
                await sync(a, c)
                await c.append_message(memory.id, role="user", text=f"c {n}")
            await sync(a, b)
            await sync(b, c)
            await sync(c, a)
        for src in replicas:
            for dst in replicas:
                if src is not dst:
                    await sync(src, dst)
        records = [await r.get(memory.id) for r in replicas]
        assert [m["text"] for m in records[0].content] == [m["text"] for m in records[1].content]
        assert [m["text"] for m in records[1].content] == [m["text"] for m in records[2].content]
        assert len(records[0].content) == 30 + 2 * len([n for n in range(30) if n % 7 == 3])
        assert len(read_from_updates) >= 30, "remote appends were not read from their updates"
        for replica in replicas:
            assert_store_consistent(replica)
    finally:
        for replica in replicas:
            await replica.stop()
