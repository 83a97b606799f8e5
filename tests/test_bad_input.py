"""Bad input is refused with the right error and changes nothing.

Remote payloads are untrusted: every malformed one must raise a :class:`crdtmem.PayloadError`
subclass and leave the replica exactly as it was (memories, conflicts, version vectors, pending
deltas, the log, the event feed), and the replica must keep working afterwards. Local API misuse
raises the matching :class:`crdtmem.InvalidInput` (or NotFound, MemoryDeleted, ...) subclass, also
without changing anything.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pycrdt
import pytest

from crdtmem import (
    ClockSkewError,
    CrdtmemError,
    InvalidChannel,
    InvalidInput,
    MalformedPayload,
    MemoryDeleted,
    NoSuchConflict,
    NotFound,
    PayloadError,
    PayloadTooLarge,
    Replica,
    ReplicaClosed,
    UnknownKind,
    UnsupportedVersion,
    WrongKind,
)
from crdtmem.clock import Hlc
from crdtmem.document.memory import MemoryDoc
from crdtmem.engine import payload as wire
from crdtmem.store.base import DeltaRecord

START_MS = 1_700_000_000_000
USER = "u1"
CHANNEL = f"user:{USER}:memories"


class ManualClock:
    """An injected wall clock that only moves when told to."""

    def __init__(self, now_ms: int = START_MS):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def tick(self, ms: int = 1) -> None:
        self.now_ms += ms


async def sync(source: Replica, target: Replica) -> None:
    channels = source.store.channels()
    await target.apply(await source.export_since(channels, target.version_vectors(channels)))


async def snapshot(replica: Replica) -> tuple[Any, ...]:
    """Everything a refused payload or a refused call must leave untouched."""
    channels = replica.store.channels()
    return (
        [m.to_dict() for m in await replica.list(include_deleted=True)],
        [c.to_dict() for c in await replica.conflicts()],
        replica.version_vectors(),
        sorted(d.uid for d in replica.store.pending()),
        [(d.uid, d.seqs) for d in replica.store.deltas_since(channels, {})],
        replica.store.doc_count(),
        replica.feed.published,
    )


def repack(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    body = msgpack.unpackb(data, raw=False)
    change(body)
    return bytes(msgpack.packb(body, use_bin_type=True))


def pack(obj: Any) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


class World:
    """A source replica and a target replica whose state is worth protecting.

    The target holds its own memory, a synced memory with an open content conflict, a deleted
    memory, and one pending delta (its causal dependency withheld). ``payload`` is a fresh, valid
    change from the source that the target has not seen yet.
    """

    source: Replica
    target: Replica
    payload: bytes
    clock: ManualClock


@pytest.fixture
async def world(tmp_path: Path) -> Any:
    clock = ManualClock()
    source = Replica(tmp_path / "source.db", replica_id="source", wall_clock=clock)
    target = Replica(tmp_path / "target.db", replica_id="target", wall_clock=clock)
    async with source, target:
        await target.add("target's own", user_id=USER)
        gone = await target.add("to delete", user_id=USER)
        await target.delete(gone.id)
        shared = await source.add("shared", user_id=USER)
        await sync(source, target)
        clock.tick()
        await source.update(shared.id, content="from source")
        await target.update(shared.id, content="from target")
        await sync(source, target)
        assert [c.field for c in await target.conflicts()] == ["content"]

        # a pending delta: send the second change of a memory without the first
        withheld = await source.add("withheld v1", user_id=USER)
        before = source.version_vectors([CHANNEL])
        await source.update(withheld.id, content="withheld v2")
        (second,) = source.store.deltas_since([CHANNEL], before)
        result = await target.apply(wire.encode(wire.Payload("source", [second])))
        assert result.pending == 1

        clock.tick()
        channels = [CHANNEL, "topic:t1:updates"]
        since = source.version_vectors(channels)
        await source.add("fresh", user_id=USER, topics=["t1"], metadata={"k": "v"})
        # version 1, unsigned: these tests change its fields one by one (a changed signed delta is
        # refused before its fields are looked at: test_trust.py)
        payload = await source.export_since(channels, since, version=1)
        assert len(msgpack.unpackb(payload, raw=False)["deltas"]) == 1

        w = World()
        w.source, w.target, w.payload, w.clock = source, target, payload, clock
        yield w


async def assert_refused(
    world: World, data: bytes, error: type[PayloadError], *, replica: Replica | None = None
) -> None:
    """``data`` is refused with ``error``, nothing changes, and the replica keeps working."""
    target = replica or world.target
    before = await snapshot(target)
    with pytest.raises(error):
        await target.apply(data)
    assert await snapshot(target) == before


async def assert_still_works(world: World) -> None:
    result = await world.target.apply(world.payload)
    assert result.applied == 1
    assert any(m.content == "fresh" for m in await world.target.list())
    memory = await world.target.add("still writable", user_id=USER)
    assert (await world.target.get(memory.id)).content == "still writable"


# -- payloads that are not crdtmem payloads at all -----------------------------------------------


async def test_empty_bytes(world: World) -> None:
    await assert_refused(world, b"", MalformedPayload)
    await assert_still_works(world)


@pytest.mark.parametrize("data", ["a string", None, 42, ["list"], {"a": 1}])
async def test_not_bytes(world: World, data: Any) -> None:
    await assert_refused(world, data, MalformedPayload)
    await assert_still_works(world)


async def test_random_garbage(world: World) -> None:
    rng = random.Random(7)
    before = await snapshot(world.target)
    for _ in range(300):
        data = rng.randbytes(rng.randrange(1, 200))
        with pytest.raises(MalformedPayload):
            await world.target.apply(data)
    for data in (b"\x00", b"\xc1", b"\xff" * 10, b"\x80", b"\x90", b"hello world"):
        with pytest.raises(MalformedPayload):
            await world.target.apply(data)
    assert await snapshot(world.target) == before
    await assert_still_works(world)


async def test_every_truncation_of_a_valid_payload(world: World) -> None:
    data = world.payload
    before = await snapshot(world.target)
    for length in range(len(data)):
        with pytest.raises(MalformedPayload):
            await world.target.apply(data[:length])
    assert await snapshot(world.target) == before
    await assert_still_works(world)


async def test_trailing_bytes_after_a_valid_payload(world: World) -> None:
    await assert_refused(world, world.payload + b"\x00", MalformedPayload)
    await assert_still_works(world)


async def test_oversized_payload(world: World, tmp_path: Path) -> None:
    async with Replica(
        tmp_path / "small.db", replica_id="small", max_payload_bytes=len(world.payload) - 1
    ) as small:
        await assert_refused(world, world.payload, PayloadTooLarge, replica=small)
        await assert_refused(world, b"\x00" * (len(world.payload) * 10), PayloadTooLarge, replica=small)
        small.max_payload_bytes = len(world.payload)  # the limit is inclusive
        assert (await small.apply(world.payload)).applied == 1


@pytest.mark.parametrize(
    "body",
    [
        [1, 2, 3],
        "crdtmem.deltas",
        42,
        None,
        {},
        {"format": "automerge", "v": 1, "from": "x", "deltas": []},
        {"format": b"crdtmem.deltas", "v": 1, "from": "x", "deltas": []},
        {"type": "sync", "payload": b"\x00\x01"},
    ],
)
async def test_foreign_msgpack(world: World, body: Any) -> None:
    await assert_refused(world, pack(body), MalformedPayload)
    await assert_still_works(world)


@pytest.mark.parametrize("version", [0, 3, 99, "1", None, 1.0001])
async def test_unsupported_format_version(world: World, version: Any) -> None:
    await assert_refused(world, repack(world.payload, lambda b: b.update(v=version)), UnsupportedVersion)
    await assert_still_works(world)


async def test_missing_format_version(world: World) -> None:
    await assert_refused(world, repack(world.payload, lambda b: b.pop("v")), UnsupportedVersion)


# -- crdtmem payloads with malformed fields ------------------------------------------------------


def _set_payload(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.update({key: value})


def _set_delta_field(index: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["deltas"][0][index] = value

    return change


UID, ORIGIN, DOC_ID, HLC, DEPS, UPDATE, SEQS = range(7)


def _stray_root_update() -> bytes:
    doc = pycrdt.Doc()
    doc["stray"] = stray = pycrdt.Map()
    stray["key"] = "value"
    return doc.get_update()


MALFORMED_FIELDS: dict[str, Callable[[dict[str, Any]], None]] = {
    "from missing": lambda body: body.pop("from"),
    "from empty": _set_payload("from", ""),
    "from not a string": _set_payload("from", 7),
    "deltas missing": lambda body: body.pop("deltas"),
    "deltas not a list": _set_payload("deltas", {"a": 1}),
    "vectors not a map": _set_payload("vectors", [1, 2]),
    "vector not a map": _set_payload("vectors", {CHANNEL: 3}),
    "vector seq not an int": _set_payload("vectors", {CHANNEL: {"source": "3"}}),
    "delta not a list": _set_payload("deltas", ["delta"]),
    "delta too short": lambda body: body["deltas"][0].pop(),
    "delta too long": lambda body: body["deltas"][0].append(1),
    "uid not a string": _set_delta_field(UID, 5),
    "uid empty": _set_delta_field(UID, ""),
    "uid not origin:hlc": _set_delta_field(UID, "source:001700000000000.000999"),
    "origin not a string": _set_delta_field(ORIGIN, None),
    "doc_id empty": _set_delta_field(DOC_ID, ""),
    "doc_id too long": _set_delta_field(DOC_ID, "d" * 300),
    "hlc not an hlc": lambda body: body["deltas"][0].__setitem__(
        slice(0, 4), ["source:soon", "source", body["deltas"][0][2], "soon"]
    ),
    "deps not bytes": _set_delta_field(DEPS, "\x00"),
    "deps garbage": _set_delta_field(DEPS, b"\xff\xff"),
    "deps trailing bytes": _set_delta_field(DEPS, b"\x00\x00"),
    "update not bytes": _set_delta_field(UPDATE, "update"),
    "update garbage": _set_delta_field(UPDATE, b"\x07garbage\xff\xfe"),
    "update truncated": lambda body: body["deltas"][0].__setitem__(UPDATE, body["deltas"][0][UPDATE][:-9]),
    "update empty": _set_delta_field(UPDATE, b""),
    # a well-formed update that writes a root no memory has (the empty update, b"\x00\x00", is
    # the stub of a forgotten memory's delta, which has a meaning of its own: test_erasure.py)
    "update creates no memory": _set_delta_field(UPDATE, _stray_root_update()),
    "seqs empty": _set_delta_field(SEQS, {}),
    "seqs not a map": _set_delta_field(SEQS, [1]),
    "seq zero": lambda body: body["deltas"][0][SEQS].update({CHANNEL: 0}),
    "seq negative": lambda body: body["deltas"][0][SEQS].update({CHANNEL: -1}),
    "seq bool": lambda body: body["deltas"][0][SEQS].update({CHANNEL: True}),
    "seq string": lambda body: body["deltas"][0][SEQS].update({CHANNEL: "1"}),
    "seq float": lambda body: body["deltas"][0][SEQS].update({CHANNEL: 1.0}),
}


async def test_an_empty_update_on_empty_deps_without_a_marker_is_refused_as_forged(world: World) -> None:
    """The stub of an erased delta (protocol §7.9) looks exactly like this: for a memory with no
    erase marker here or in the payload it is a forged delta, refused, and nothing changes."""
    target = world.target
    before = await snapshot(target)
    forged = target.erasure.counts["forged"]
    result = await target.apply(repack(world.payload, _set_delta_field(UPDATE, b"\x00\x00")))
    assert (result.applied, result.unauthenticated) == (0, 1)
    assert target.erasure.counts["forged"] == forged + 1
    assert await snapshot(target) == before
    await assert_still_works(world)


@pytest.mark.parametrize("case", sorted(MALFORMED_FIELDS))
async def test_malformed_fields(world: World, case: str) -> None:
    await assert_refused(world, repack(world.payload, MALFORMED_FIELDS[case]), MalformedPayload)
    await assert_still_works(world)


async def test_one_bad_delta_refuses_the_whole_payload(world: World) -> None:
    """A payload is all or nothing: a valid delta next to a broken one is not applied either."""
    valid = msgpack.unpackb(world.payload, raw=False)["deltas"][0]
    broken = list(valid)
    broken[UPDATE] = b"\x01\x02garbage"
    broken[UID] = broken[UID][:-1] + "9"
    broken[HLC] = broken[HLC][:-1] + "9"
    for order in ([valid, broken], [broken, valid]):
        await assert_refused(world, repack(world.payload, _set_payload("deltas", order)), MalformedPayload)
    await assert_still_works(world)


async def test_update_of_another_memory_under_this_doc_id(world: World) -> None:
    """A delta whose doc_id is not the memory its Yrs update creates is malformed."""
    await assert_refused(
        world, repack(world.payload, _set_delta_field(DOC_ID, "not-the-memory")), MalformedPayload
    )
    await assert_still_works(world)


async def test_seq_beyond_64_bits(world: World) -> None:
    """msgpack carries unsigned 64-bit ints; a sequence number SQLite cannot store is malformed
    input, not a storage failure."""
    for seq in (2**63, 2**64 - 1):
        data = repack(world.payload, lambda body, s=seq: body["deltas"][0][SEQS].update({CHANNEL: s}))
        await assert_refused(world, data, MalformedPayload)
    await assert_still_works(world)


@pytest.mark.parametrize(
    "hlc",
    [
        "00170000000000\u00b2.000000",  # superscript two: str.isdigit() but not int()
        "\u0660\u0660\u0661\u0667" + "\u0660" * 11 + ".000000",  # Arabic-Indic digits
    ],
)
async def test_hlc_with_non_ascii_digits(world: World, hlc: str) -> None:
    """Only the canonical ASCII form is an HLC; other digits would sort above every real one."""

    def change(body: dict[str, Any]) -> None:
        delta = body["deltas"][0]
        delta[HLC] = hlc
        delta[UID] = f"{delta[ORIGIN]}:{hlc}"

    await assert_refused(world, repack(world.payload, change), MalformedPayload)
    await assert_still_works(world)


@pytest.mark.parametrize("channel", ["bogus", "user:u1:shared", ""])
async def test_unknown_channel_name(world: World, channel: str) -> None:
    def change(body: dict[str, Any]) -> None:
        body["deltas"][0][SEQS] = {channel: 1}

    await assert_refused(world, repack(world.payload, change), MalformedPayload)
    await assert_still_works(world)


# -- clocks ----------------------------------------------------------------------------------------


async def test_clock_far_in_the_future(world: World, tmp_path: Path) -> None:
    drift = world.target.clock.max_drift_ms
    future = ManualClock(START_MS + drift + 60_000)
    async with Replica(tmp_path / "future.db", replica_id="future", wall_clock=future) as ahead:
        memory = await ahead.add("from the future", user_id=USER)
        data = await ahead.export_since(CHANNEL)
        last_before = world.target.clock.last
        await assert_refused(world, data, ClockSkewError)
        assert world.target.clock.last == last_before  # the bad timestamp was not observed
        world.clock.now_ms = future.now_ms - drift  # exactly at the limit: accepted
        assert (await world.target.apply(data)).applied == 1
        assert (await world.target.get(memory.id)).content == "from the future"
    await assert_still_works(world)


async def test_skew_is_checked_per_delta(world: World, tmp_path: Path) -> None:
    """One delta too far ahead refuses the whole payload, including the valid delta next to it."""
    future = ManualClock(START_MS + world.target.clock.max_drift_ms + 60_000)
    async with Replica(tmp_path / "future.db", replica_id="future", wall_clock=future) as ahead:
        await ahead.add("from the future", user_id=USER)
        bad = msgpack.unpackb(await ahead.export_since(CHANNEL, version=1), raw=False)["deltas"][0]
    mixed = repack(world.payload, lambda body: body["deltas"].append(bad))
    await assert_refused(world, mixed, ClockSkewError)
    await assert_still_works(world)


# -- the local API -------------------------------------------------------------------------------


Call = Callable[[Replica, dict[str, str]], Awaitable[Any]]


@pytest.fixture
async def local(tmp_path: Path) -> Any:
    async with Replica(tmp_path / "local.db", replica_id="local", wall_clock=ManualClock()) as replica:
        ids = {
            "fact": (await replica.add("a fact", user_id=USER)).id,
            "counter": (await replica.add(3, kind="counter", user_id=USER)).id,
            "list": (await replica.add(["x"], kind="list", user_id=USER)).id,
            "conversation": (await replica.add([{"role": "user", "text": "hi"}], kind="conversation")).id,
            "deleted": (await replica.add("deleted", user_id=USER)).id,
        }
        await replica.delete(ids["deleted"])
        yield replica, ids


LOCAL_MISUSE: dict[str, tuple[type[CrdtmemError], Call]] = {
    "unknown kind": (UnknownKind, lambda r, ids: r.add("x", kind="note")),  # type: ignore[arg-type]
    "unknown kind, no content": (UnknownKind, lambda r, ids: r.add(kind="")),  # type: ignore[arg-type]
    "list by unknown kind": (UnknownKind, lambda r, ids: r.list(kind="note")),  # type: ignore[arg-type]
    "fact content NaN": (InvalidInput, lambda r, ids: r.add(float("nan"))),
    "fact content missing": (InvalidInput, lambda r, ids: r.add()),
    "fact content set": (InvalidInput, lambda r, ids: r.add({"x"})),
    "preference content bytes": (InvalidInput, lambda r, ids: r.add([b"dark"], kind="preference")),
    "fact without content": (InvalidInput, lambda r, ids: r.add(kind="fact")),
    "list content string": (InvalidInput, lambda r, ids: r.add("abc", kind="list")),
    "list content int": (InvalidInput, lambda r, ids: r.add(3, kind="list")),
    "counter content string": (InvalidInput, lambda r, ids: r.add("3", kind="counter")),
    "counter content float": (InvalidInput, lambda r, ids: r.add(1.5, kind="counter")),
    "counter content bool": (InvalidInput, lambda r, ids: r.add(True, kind="counter")),
    "conversation content string": (InvalidInput, lambda r, ids: r.add("hi", kind="conversation")),
    "conversation message no role": (
        InvalidInput,
        lambda r, ids: r.add([{"text": "hi"}], kind="conversation"),
    ),
    "conversation message text int": (
        InvalidInput,
        lambda r, ids: r.add([{"role": "user", "text": 1}], kind="conversation"),
    ),
    "list item not JSON": (InvalidInput, lambda r, ids: r.add([object()], kind="list")),
    "metadata value not JSON": (InvalidInput, lambda r, ids: r.add("x", metadata={"k": {1, 2}})),
    "tag not JSON": (InvalidInput, lambda r, ids: r.add("x", tags=[object()])),
    "metadata not a dict": (InvalidInput, lambda r, ids: r.add("x", metadata=[("k", "v")])),  # type: ignore[arg-type]
    "metadata string": (InvalidInput, lambda r, ids: r.update(ids["fact"], metadata="k=v")),  # type: ignore[arg-type]
    "metadata key with #": (InvalidInput, lambda r, ids: r.add("x", metadata={"a#b": 1})),
    "metadata key not a string": (InvalidInput, lambda r, ids: r.update(ids["fact"], metadata={1: "v"})),
    "metadata key empty": (InvalidInput, lambda r, ids: r.update(ids["fact"], metadata={"": "v"})),
    "tags a string": (InvalidInput, lambda r, ids: r.add("x", tags="urgent")),
    "topics a string": (InvalidInput, lambda r, ids: r.add("x", topics="t1")),
    "bad topic": (InvalidInput, lambda r, ids: r.add("x", topics=["a\nb"])),
    "bad user id": (InvalidInput, lambda r, ids: r.add("x", user_id="u\x001")),
    "empty user id": (InvalidInput, lambda r, ids: r.add("x", user_id="")),
    "bad tenant id": (InvalidInput, lambda r, ids: r.add("x", tenant_id="")),
    "bad agent id": (InvalidInput, lambda r, ids: r.add("x", agent_id="a\rb")),
    "bad memory id": (InvalidInput, lambda r, ids: r.add("x", memory_id="..")),
    "memory id too long": (InvalidInput, lambda r, ids: r.add("x", memory_id="m" * 257)),
    "memory id not a string": (InvalidInput, lambda r, ids: r.update(7)),  # type: ignore[arg-type]
    "memory id taken": (InvalidInput, lambda r, ids: r.add("x", memory_id=ids["fact"])),
    "update bad id": (InvalidInput, lambda r, ids: r.update("a\u2028b", content="x")),
    "update missing": (NotFound, lambda r, ids: r.update("missing", content="x")),
    "delete missing": (NotFound, lambda r, ids: r.delete("missing")),
    "increment missing": (NotFound, lambda r, ids: r.increment("missing")),
    "get missing": (NotFound, lambda r, ids: r.get("missing")),
    "history missing": (NotFound, lambda r, ids: r.history("missing")),
    "increment a fact": (WrongKind, lambda r, ids: r.increment(ids["fact"])),
    "decrement a list": (WrongKind, lambda r, ids: r.decrement(ids["list"])),
    "add_items to a counter": (WrongKind, lambda r, ids: r.add_items(ids["counter"], "x")),
    "remove_items from a fact": (WrongKind, lambda r, ids: r.remove_items(ids["fact"], "x")),
    "append_message to a list": (WrongKind, lambda r, ids: r.append_message(ids["list"], role="u", text="t")),
    "update content of a counter": (WrongKind, lambda r, ids: r.update(ids["counter"], content="4")),
    "update content of a list": (WrongKind, lambda r, ids: r.update(ids["list"], content="x")),
    "fact content not JSON on update": (InvalidInput, lambda r, ids: r.update(ids["fact"], content=object())),
    "increment by a float": (InvalidInput, lambda r, ids: r.increment(ids["counter"], 1.5)),  # type: ignore[arg-type]
    "increment by a bool": (InvalidInput, lambda r, ids: r.increment(ids["counter"], True)),
    "decrement by a string": (InvalidInput, lambda r, ids: r.decrement(ids["counter"], "1")),  # type: ignore[arg-type]
    "message with empty role": (
        InvalidInput,
        lambda r, ids: r.append_message(ids["conversation"], role="", text="t"),
    ),
    "message text not a string": (
        InvalidInput,
        lambda r, ids: r.append_message(ids["conversation"], role="u", text=None),  # type: ignore[arg-type]
    ),
    "update after delete": (MemoryDeleted, lambda r, ids: r.update(ids["deleted"], content="back")),
    "metadata after delete": (MemoryDeleted, lambda r, ids: r.update(ids["deleted"], metadata={"k": 1})),
    "resolve without conflict": (
        NoSuchConflict,
        lambda r, ids: r.resolve(ids["fact"], field="content", value="x"),
    ),
    "resolve unknown field": (
        NoSuchConflict,
        lambda r, ids: r.resolve(ids["fact"], field="colour", value="x"),
    ),
    "resolve content of a counter": (
        NoSuchConflict,
        lambda r, ids: r.resolve(ids["counter"], field="content", value=1),
    ),
    "resolve lifecycle without conflict": (
        NoSuchConflict,
        lambda r, ids: r.resolve(ids["deleted"], field="lifecycle", value="active"),
    ),
    "resolve missing": (NotFound, lambda r, ids: r.resolve("missing", field="content", value="x")),
    "list topic and channel": (InvalidInput, lambda r, ids: r.list(topic="t1", channel="topic:t1:updates")),
    "list unknown channel": (InvalidChannel, lambda r, ids: r.list(channel="news")),
    "list bad topic": (InvalidInput, lambda r, ids: r.list(topic="a\tb")),
    "export unknown channel": (InvalidChannel, lambda r, ids: r.export_since("user:u1")),
    "export since not a vector": (
        InvalidInput,
        lambda r, ids: r.export_since([CHANNEL, "system:global"], {"local": 3}),
    ),
    "export since non-int seq": (InvalidInput, lambda r, ids: r.export_since(CHANNEL, {"local": "3"})),
}


async def _call_sync_or_async(value: Any) -> Any:
    return await value if isinstance(value, Awaitable) else value


@pytest.mark.parametrize("case", sorted(LOCAL_MISUSE))
async def test_local_misuse(local: tuple[Replica, dict[str, str]], case: str) -> None:
    replica, ids = local
    error, call = LOCAL_MISUSE[case]
    before = await snapshot(replica)
    with pytest.raises(error):
        await call(replica, ids)
    assert await snapshot(replica) == before
    # the memories touched by the refused call still take writes
    await replica.update(ids["fact"], content="still fine")
    await replica.increment(ids["counter"])
    await replica.add_items(ids["list"], "y")
    await replica.append_message(ids["conversation"], role="user", text="again")
    assert (await replica.get(ids["counter"])).content == 4


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.version_vector("news"),
        lambda r: r.version_vectors(["user:u1:memories", "nope"]),
        lambda r: r.events(["nope"]),
    ],
)
async def test_unknown_channel_in_sync_calls(local: tuple[Replica, dict[str, str]], call: Any) -> None:
    replica, _ = local
    with pytest.raises(InvalidChannel):
        call(replica)


async def test_use_after_close(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "closed.db", replica_id="closed")
    with pytest.raises(ReplicaClosed):  # never started
        await replica.add("x")
    await replica.start()
    memory = await replica.add("x", user_id=USER)
    data = await replica.export_since(CHANNEL)
    await replica.stop()
    calls: list[Callable[[], Any]] = [
        lambda: replica.add("y"),
        lambda: replica.update(memory.id, content="y"),
        lambda: replica.update(memory.id, metadata={"k": 1}),
        lambda: replica.delete(memory.id),
        lambda: replica.get(memory.id),
        lambda: replica.list(),
        lambda: replica.history(memory.id),
        lambda: replica.increment(memory.id),
        lambda: replica.decrement(memory.id),
        lambda: replica.add_items(memory.id, "x"),
        lambda: replica.remove_items(memory.id, "x"),
        lambda: replica.append_message(memory.id, role="u", text="t"),
        lambda: replica.set_embedding(memory.id, [0.1], "m"),
        lambda: replica.resolve(memory.id, field="content", value="z"),
        lambda: replica.conflicts(),
        lambda: replica.export_since(CHANNEL),
        lambda: replica.apply(data),
        lambda: replica.version_vector(CHANNEL),
        lambda: replica.version_vectors(),
        lambda: replica.events(),
    ]
    for call in calls:
        with pytest.raises(ReplicaClosed):
            await _call_sync_or_async(call())
    await replica.stop()  # stopping twice is harmless
    async with Replica(tmp_path / "closed.db", replica_id="closed") as reopened:
        assert (await reopened.get(memory.id)).content == "x"


async def test_constructor_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        Replica(tmp_path / "x.db", replica_id="not ok")
    with pytest.raises(InvalidChannel):
        Replica(tmp_path / "x.db", channels=["user:u1"])
    with pytest.raises(InvalidChannel):
        Replica(tmp_path / "x.db", channels="user:u1:memories")  # type: ignore[arg-type]
    async with Replica(tmp_path / "owned.db", replica_id="owner") as owner:
        await owner.add("mine", user_id=USER)
    with pytest.raises(InvalidInput, match="owner"):
        await Replica(tmp_path / "owned.db", replica_id="intruder").start()
    async with Replica(tmp_path / "owned.db") as reopened:  # no id: the stored one
        assert reopened.id == "owner"
        assert len(await reopened.list()) == 1


# -- deltas whose channels do not fit their memory --------------------------------------------------

STAMP = Hlc(START_MS + 60_000, 0).encode()  # later than anything the world wrote, within the drift


async def test_a_delta_logged_on_a_channel_its_memory_is_not_on(world: World) -> None:
    """The ``seqs`` of a delta name its channels; relabelled onto another user's channel, the payload is
    refused (its memory, read from the document, is on this user's channel only)."""
    relabelled = repack(world.payload, lambda b: b["deltas"][0].__setitem__(6, {"user:mallory:memories": 1}))
    await assert_refused(world, relabelled, MalformedPayload)
    await assert_still_works(world)


async def test_a_delta_that_moves_a_memory_to_another_scope(world: World) -> None:
    """A memory's scope is fixed at creation: an update rewriting ``header.scope`` is refused."""
    (memory,) = [m for m in await world.source.list() if m.content == "from source"]
    doc = MemoryDoc.from_state(memory.id, world.source.store.load_state(memory.id) or b"", client_id=4242)
    with doc.change():
        doc._header["scope"] = {"user_id": "mallory", "tenant_id": None, "topics": [], "shared": False}
    delta = DeltaRecord(
        f"source:{STAMP}",
        "source",
        memory.id,
        STAMP,
        doc.last_delta.deps,
        doc.last_delta.update,
        (),
        {CHANNEL: 99},
    )
    await assert_refused(world, wire.encode(wire.Payload("source", [delta])), MalformedPayload)
    await assert_still_works(world)


async def test_a_waiting_delta_of_a_known_memory_is_checked_when_it_arrives(world: World) -> None:
    """A delta that must wait for its dependencies is still checked against its memory when the memory
    is known here, so a bad one is never parked to spoil the payload that would complete it."""
    (memory,) = [m for m in await world.source.list() if m.content == "from source"]
    doc = MemoryDoc.from_state(memory.id, world.source.store.load_state(memory.id) or b"", client_id=4243)
    with doc.change():
        doc._content["ghost"] = {"v": '"x"', "hlc": STAMP, "by": "ghost"}
    deps = bytes.fromhex("01ffff0305")  # a dependency nobody has: client 65535 at clock 5
    delta = DeltaRecord(
        f"ghost:{STAMP}",
        "ghost",
        memory.id,
        STAMP,
        deps,
        doc.last_delta.update,
        (),
        {"user:mallory:memories": 1},
    )
    await assert_refused(world, wire.encode(wire.Payload("ghost", [delta])), MalformedPayload)
    await assert_still_works(world)
