"""Hypothesis fuzzing of the decoders every inbound byte of replication goes through.

- ``crdtmem.engine.payload.decode`` (the ``crdtmem.deltas`` exchange codec) and
  ``crdtmem.sync.protocol.decode_frame`` (replication WebSocket frames) get arbitrary bytes,
  arbitrary msgpack, payload- and frame-shaped maps with arbitrary fields, and valid payloads and
  frames mutated byte by byte and field by field. They return a value or raise their documented
  error (:class:`~crdtmem.errors.PayloadError`, :class:`~crdtmem.sync.protocol.FrameError`), never
  anything else.
- ``crdtmem.document.statevector`` (Yrs state vectors and update headers, decoded by crdtmem
  itself) and ``crdtmem.engine.signing.verify`` get arbitrary bytes and mutated signatures.
- A replica handed a mutated payload either takes it or refuses it with a ``PayloadError`` and is
  left exactly as it was, and keeps working.

Inputs are bounded (a few KiB, a few hundred elements), so every example costs linear time in a
small size; nothing is timed. The soak set (``-m soak``) runs the same properties with many more
examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtmem import Replica
from crdtmem.document import statevector
from crdtmem.engine import payload as wire
from crdtmem.engine import signing
from crdtmem.errors import MalformedPayload, PayloadError
from crdtmem.sync.protocol import FrameError, decode_frame, encode_frame

U1 = "user:u1:memories"
T1 = "topic:t1:updates"
MAX_BYTES = 4096
DEFAULT_EXAMPLES = 150
SOAK_EXAMPLES = 5_000
FRAME_TYPES = ["hello", "deltas", "ack", "error", "mode", "resume", "nope", ""]


def fuzz_settings(examples: int = DEFAULT_EXAMPLES) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))


# -- strategies ------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=64)
)
msgpack_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=8)
        | st.dictionaries(
            st.text(max_size=12) | st.integers(-5, 5) | st.binary(max_size=4), children, max_size=8
        )
    ),
    max_leaves=40,
)
channel_like = st.sampled_from(
    [U1, T1, "system:global", "tenant:t%3A1:shared", "user:a:b:c", "nope", ""]
) | st.text(max_size=30)
seq_like = st.integers(min_value=-3, max_value=2**64 - 1) | msgpack_values


def pack(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def wire_deltas() -> st.SearchStrategy[list[Any]]:
    field = st.one_of(
        st.text(min_size=1, max_size=20),
        st.binary(max_size=32),
        st.dictionaries(channel_like, seq_like, max_size=3),
        msgpack_values,
    )
    return st.lists(st.lists(field, min_size=6, max_size=10), max_size=4)


payload_shaped = st.fixed_dictionaries(
    {
        "format": st.just(wire.FORMAT) | st.text(max_size=20),
        "v": st.sampled_from([1, 2]) | msgpack_values,
        "from": st.text(max_size=20) | msgpack_values,
        "deltas": wire_deltas() | msgpack_values,
    },
    optional={
        "vectors": st.dictionaries(channel_like, st.dictionaries(st.text(max_size=10), seq_like, max_size=3))
        | msgpack_values,
        "keys": st.dictionaries(st.text(max_size=10), st.binary(min_size=31, max_size=33)) | msgpack_values,
    },
)
frame_shaped = st.fixed_dictionaries(
    {"t": st.sampled_from(FRAME_TYPES) | msgpack_values, "v": st.just(1) | msgpack_values},
    optional={
        "replica": st.sampled_from(["laptop", "a b", ""]) | msgpack_values,
        "channels": st.lists(channel_like, max_size=4) | msgpack_values,
        "mode": st.sampled_from(["eager", "lazy", "pull"]) | msgpack_values,
        "interval_ms": st.integers(-5, 4_000_000) | msgpack_values,
        "vectors": st.dictionaries(channel_like, st.dictionaries(st.text(max_size=10), seq_like, max_size=3))
        | msgpack_values,
        "versions": st.lists(st.integers(-2, 3), max_size=20) | msgpack_values,
        "n": st.integers(-2, 2**64 - 1) | msgpack_values,
        "payload": st.binary(max_size=64) | msgpack_values,
        "code": st.text(max_size=10) | msgpack_values,
        "message": st.text(max_size=10) | msgpack_values,
        "retry_after": st.floats() | st.integers(-5, 5000) | msgpack_values,
    },
)


def decodes_or_refuses(data: bytes) -> wire.Payload | None:
    """``wire.decode`` returns a payload or raises a PayloadError; anything else fails the test."""
    try:
        return wire.decode(data, max_bytes=MAX_BYTES * 4)
    except PayloadError:
        return None


def frame_or_refusal(data: bytes | str) -> Any:
    try:
        return decode_frame(data)
    except FrameError:
        return None


# -- the payload decoder ----------------------------------------------------------------------------


def check_arbitrary_bytes(examples: int) -> None:
    @fuzz_settings(examples)
    @given(st.binary(max_size=MAX_BYTES))
    def arbitrary(data: bytes) -> None:
        decodes_or_refuses(data)
        frame_or_refusal(data)
        with pytest.raises(MalformedPayload):  # garbage is neither a state vector nor an update
            statevector.decode(data + b"\xff")  # a varuint left open is always refused
        with contextlib.suppress(MalformedPayload):
            statevector.dependencies(data, data)

    arbitrary()


def check_arbitrary_msgpack(examples: int) -> None:
    @fuzz_settings(examples)
    @given(msgpack_values | payload_shaped)
    def arbitrary(value: Any) -> None:
        decoded = decodes_or_refuses(pack(value))
        if decoded is not None:  # whatever gets through is what the docs say a payload is
            assert isinstance(value, dict) and value["format"] == wire.FORMAT and value["v"] in wire.VERSIONS
            for delta in decoded.deltas:
                assert delta.seqs and all(0 < s < 2**63 for s in delta.seqs.values())
                assert delta.uid.startswith(f"{delta.origin}:{delta.hlc}")

    arbitrary()


def check_arbitrary_frames(examples: int) -> None:
    @fuzz_settings(examples)
    @given(msgpack_values | frame_shaped, st.text(max_size=64))
    def arbitrary(value: Any, text: str) -> None:
        frame = frame_or_refusal(pack(value))
        if frame is not None:
            assert frame.type in FRAME_TYPES[:6]
        assert frame_or_refusal(text) is None  # frames are binary

    arbitrary()


def test_arbitrary_bytes_are_refused_with_the_documented_errors() -> None:
    check_arbitrary_bytes(DEFAULT_EXAMPLES)


def test_arbitrary_msgpack_is_refused_as_a_payload_error() -> None:
    check_arbitrary_msgpack(DEFAULT_EXAMPLES)


def test_arbitrary_frames_are_refused_as_frame_errors() -> None:
    check_arbitrary_frames(DEFAULT_EXAMPLES)


@pytest.mark.parametrize(
    "data",
    [
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 G elements
        b"\xdf\xff\xff\xff\xff",  # a map claiming 4 G pairs
        b"\xc6\xff\xff\xff\xff",  # bin claiming 4 GiB
        b"\xdb\xff\xff\xff\xff",  # str claiming 4 GiB
        b"\x91" * 100_000,  # 100,000 nested arrays
        b"\x81\xa1a" * 50_000,  # 50,000 nested maps
        b"\xc1",  # the byte msgpack never uses
        b"\xd4\x01\x00",  # an extension type
    ],
    ids=["array", "map", "bin", "str", "deep-arrays", "deep-maps", "never-used", "ext"],
)
def test_declared_lengths_and_depths_cost_nothing(data: bytes) -> None:
    with pytest.raises(MalformedPayload):
        wire.decode(data)
    with pytest.raises(FrameError):
        decode_frame(data)


# -- valid payloads and frames, mutated ---------------------------------------------------------------


@dataclasses.dataclass
class Valid:
    """Valid payloads (signed version 2 and unsigned version 1) a source exported, and the event
    loop the replicas that take them run on."""

    v1: bytes
    v2: bytes
    runner: asyncio.Runner


@pytest.fixture(scope="module")
def valid() -> Iterator[Valid]:
    with asyncio.Runner() as runner:

        async def make() -> tuple[bytes, bytes]:
            async with Replica(None, replica_id="source") as source:
                first = await source.add(
                    "fact", user_id="u1", topics=["t1"], metadata={"k": [1, {"a": None}]}
                )
                await source.update(first.id, content={"any": ["json", 1.5]}, metadata={"k": 2})
                await source.add(["a", "b"], kind="list", user_id="u1")
                counter = await source.add(3, kind="counter", user_id="u1")
                await source.increment(counter.id, -2)
                chat = await source.add(kind="conversation", user_id="u1")
                await source.append_message(chat.id, role="user", text="hello")
                v1 = await source.export_since([U1, T1], version=1)
                v2 = await source.export_since([U1, T1], version=2)
            return v1, v2

        v1, v2 = runner.run(make())
        yield Valid(v1, v2, runner)


def byte_mutations(data: bytes) -> st.SearchStrategy[bytes]:
    n = len(data)
    position = st.integers(0, max(n - 1, 0))
    flip = st.tuples(position, st.integers(0, 7)).map(
        lambda p: data[: p[0]] + bytes([data[p[0]] ^ (1 << p[1])]) + data[p[0] + 1 :]
    )
    overwrite = st.tuples(position, st.binary(min_size=1, max_size=8)).map(
        lambda p: data[: p[0]] + p[1] + data[p[0] + len(p[1]) :]
    )
    insert = st.tuples(position, st.binary(min_size=1, max_size=8)).map(
        lambda p: data[: p[0]] + p[1] + data[p[0] :]
    )
    cut = st.tuples(position, st.integers(1, 64)).map(lambda p: data[: p[0]] + data[p[0] + p[1] :])
    truncate = position.map(lambda p: data[:p])
    return st.one_of(flip, overwrite, insert, cut, truncate)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def _replace(value: Any, path: tuple[Any, ...], change: Callable[[Any], Any]) -> Any:
    if not path:
        return change(value)
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: (_replace(v, rest, change) if k == head else v) for k, v in value.items()}
    return [(_replace(v, rest, change) if i == head else v) for i, v in enumerate(value)]


@st.composite
def field_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` (msgpack) with one field replaced, removed, duplicated or its bytes mutated."""
    body = msgpack.unpackb(data, raw=False)
    paths = list(_paths(body))
    path = draw(st.sampled_from(paths))
    kind = draw(st.sampled_from(["replace", "drop", "duplicate", "bytes"]))
    if kind == "replace" or not path:
        new = draw(msgpack_values)
        return pack(_replace(body, path, lambda _: new))

    def parent_change(parent: Any) -> Any:
        key = path[-1]
        if isinstance(parent, dict):
            if kind == "drop":
                return {k: v for k, v in parent.items() if k != key}
            if kind == "duplicate":
                return {**parent, f"{key}-copy": parent[key]}
            old = parent[key]
            mutated = draw(byte_mutations(old)) if isinstance(old, bytes) and old else draw(msgpack_values)
            return {**parent, key: mutated}
        items = list(parent)
        if kind == "drop":
            del items[key]
        elif kind == "duplicate":
            items.insert(key, items[key])
        else:
            old = items[key]
            items[key] = draw(byte_mutations(old)) if isinstance(old, bytes) and old else draw(msgpack_values)
        return items

    return pack(_replace(body, path[:-1], parent_change))


async def _state(replica: Replica) -> tuple[Any, ...]:
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


def check_mutated_payloads(valid: Valid, examples: int) -> dict[str, int]:
    """Mutated payloads are decoded or refused; applied to a replica that holds a memory of its
    own, they are refused with a PayloadError that leaves it as it was, or taken, after which it
    reads every memory and keeps working."""
    seen = {"refused on decode": 0, "refused on apply": 0, "taken": 0}

    async def apply(data: bytes) -> None:
        async with Replica(None, replica_id="target") as target:
            await target.add("the target's own", user_id="u1")
            before = await _state(target)
            try:
                result = await target.apply(data)
            except PayloadError:
                assert await _state(target) == before
                seen["refused on apply"] += 1
                return
            seen["taken"] += 1
            if not (result.applied or result.parked):
                assert await _state(target) == before, result
            for memory in await target.list(include_deleted=True):
                assert (await target.get(memory.id)).id == memory.id
            own = await target.add("still writable", user_id="u1")
            assert (await target.get(own.id)).content == "still writable"

    @fuzz_settings(examples)
    @given(st.data())
    def mutated(data: st.DataObject) -> None:
        original = data.draw(st.sampled_from([valid.v1, valid.v2]))
        bad = data.draw(byte_mutations(original) | field_mutations(original))
        if decodes_or_refuses(bad) is None:
            seen["refused on decode"] += 1
            return
        valid.runner.run(apply(bad))

    mutated()
    return seen


def test_mutated_valid_payloads_are_refused_whole_and_change_nothing(valid: Valid) -> None:
    seen = check_mutated_payloads(valid, DEFAULT_EXAMPLES)
    assert seen["refused on decode"] and seen["refused on apply"], seen  # both paths were exercised


def check_mutated_frames(valid: Valid, examples: int) -> None:
    frames = [
        encode_frame(
            "hello", replica="laptop", channels=[U1], mode="lazy", interval_ms=50, vectors={U1: {"a": 3}}
        ),
        encode_frame("deltas", n=4, payload=valid.v2),
        encode_frame("ack", n=4, vectors={U1: {"a": 3}}, rejected=1),
        encode_frame("error", n=1, code="RateLimited", message="slow down", retry_after=2.5),
        encode_frame("mode", mode="pull", reason="slow"),
        encode_frame("resume", vectors={T1: {"b": 1}}),
    ]
    for frame in frames:
        assert decode_frame(frame) is not None

    @fuzz_settings(examples)
    @given(st.data())
    def mutated(data: st.DataObject) -> None:
        original = data.draw(st.sampled_from(frames))
        frame_or_refusal(data.draw(byte_mutations(original) | field_mutations(original)))

    mutated()


def test_mutated_valid_frames_are_refused_as_frame_errors(valid: Valid) -> None:
    check_mutated_frames(valid, DEFAULT_EXAMPLES)


def test_mutated_signatures_never_verify(valid: Valid) -> None:
    delta = wire.decode(valid.v2).deltas[0]
    key = wire.decode(valid.v2).keys[delta.origin]
    assert delta.signature is not None and signing.verify(key, delta)

    @fuzz_settings()
    @given(st.data())
    def mutated(data: st.DataObject) -> None:
        signature = delta.signature
        assert signature is not None
        what = data.draw(st.sampled_from(["sig", "key", "update", "deps", "seqs", "also"]))
        public, changed = key, delta
        if what == "sig":
            changed = dataclasses.replace(
                delta, signature=dataclasses.replace(signature, sig=data.draw(byte_mutations(signature.sig)))
            )
        elif what == "key":
            public = data.draw(byte_mutations(key) | st.binary(max_size=64))
        elif what in ("update", "deps"):
            changed = dataclasses.replace(delta, **{what: data.draw(byte_mutations(getattr(delta, what)))})
        elif what == "seqs":
            seqs = {c: s + data.draw(st.integers(1, 2**32)) for c, s in signature.seqs.items()}
            changed = dataclasses.replace(delta, signature=dataclasses.replace(signature, seqs=seqs))
        else:
            also = {c: (1,) for c in signature.seqs}
            changed = dataclasses.replace(delta, signature=dataclasses.replace(signature, also=also))
        if (public, changed) != (key, delta):
            assert not signing.verify(public, changed)

    mutated()


# -- the same properties, longer ----------------------------------------------------------------------


@pytest.mark.soak
def test_soak_decoders(valid: Valid) -> None:
    check_arbitrary_bytes(SOAK_EXAMPLES)
    check_arbitrary_msgpack(SOAK_EXAMPLES)
    check_arbitrary_frames(SOAK_EXAMPLES)
    check_mutated_frames(valid, SOAK_EXAMPLES)
    seen = check_mutated_payloads(valid, SOAK_EXAMPLES)
    assert seen["refused on decode"] and seen["refused on apply"], seen


async def test_a_delta_whose_document_holds_an_invalid_id_is_a_malformed_payload():
    """A header id that is not one (a control character in ``user_id``) is the delta's fault: a
    PayloadError that changes nothing, not InvalidInput from the read. Found by the decoder soak."""
    async with Replica(None, replica_id="source") as source:
        made = await source.add("fact", user_id="u1")
        await source.update(made.id, content="fact 2")
        data = await source.export_since("user:u1:memories")
    bad = data.replace(b"user_idw\x02u1", b"user_idw\x02u\x11")
    assert bad != data
    async with Replica(None, replica_id="target") as target:
        own = await target.add("own", user_id="u1")
        with pytest.raises(MalformedPayload):
            await target.apply(bad)
        assert [m.id for m in await target.list(include_deleted=True)] == [own.id]
