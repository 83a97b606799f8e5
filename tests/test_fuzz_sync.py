"""Hypothesis fuzzing of a real ``crdtmem serve`` process's replication surface, beyond the OpenAPI
document: the WebSocket frames of ``/v1/sync/ws`` after the upgrade, and ``/v1/sync/push`` checked
for what it leaves behind.

- A replication WebSocket opened with a token gets sequences of frames: arbitrary bytes and text, a
  hello with fields mutated, then ``deltas`` frames carrying valid, mutated and arbitrary payloads,
  and acks, errors, modes and resumes with arbitrary fields. Everything the node sends back is a
  valid frame (an ``error`` frame names a code and a message); a bad hello closes the socket with
  4400 or 4403; nothing else closes it.
- A push that is not answered 200 changes nothing the caller's principal or an admin can see
  (memories, version vectors, waiting deltas).
- Afterwards the node's log holds no traceback and the node still writes, reads and replicates.

Bounded in the default run; ``-m soak`` runs many more sequences.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtmem import Replica
from crdtmem.engine import payload as wire
from crdtmem.sync.protocol import decode_frame, encode_frame
from tests.support.processes import ServerProcess
from tests.test_fuzz_decoders import byte_mutations, field_mutations, frame_shaped, msgpack_values

ADMIN = "sync-fuzz-admin-token-0001"
TENANT = "sync-fuzz-tenant-token-001"
ACME = "tenant:acme:shared"
U1 = "user:u1:memories"
DEFAULT_EXAMPLES = 40
SOAK_EXAMPLES = 1_500
QUIET = 0.15  # how long a socket may stay silent before the sequence's answers are taken as read


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))


def pack(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


class World:
    """The node under test, payloads its tokens may push, the replica that wrote some of them, and
    an event loop with an HTTP session."""

    def __init__(self, node: ServerProcess, payloads: list[bytes], runner: asyncio.Runner, laptop: Replica):
        self.node = node
        self.laptop = laptop  # the admin token may introduce its deltas
        self.payloads = payloads
        self.runner = runner
        self.session: aiohttp.ClientSession | None = None
        self.closes: dict[int, int] = {}
        self.answers: dict[str, int] = {}

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)

    async def http(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        return self.session


def _tokens(tmp: Path) -> Path:
    path = tmp / "tokens.json"
    entries = [
        {"token": ADMIN, "principal": "user:admin", "read": ["*"], "write": ["*"], "origins": ["laptop"]},
        {
            "token": TENANT,
            "principal": "replica:acme-phone",
            "read": [ACME],
            "write": [ACME],
            "origins": ["acme-phone"],
        },
    ]
    path.write_text(json.dumps({"tokens": entries}))
    return path


async def _payloads(laptop: Replica) -> list[bytes]:
    async with Replica(None, replica_id="acme-phone") as phone:
        memory = await phone.add("acme note", tenant_id="acme")
        first = await phone.export_since([ACME])
        await phone.update(memory.id, content="acme note, edited", metadata={"k": [1]})
        second = await phone.export_since([ACME], {ACME: {"acme-phone": 1}})  # waits for the first
        unsigned = await phone.export_since([ACME], version=1)
    await laptop.add("u1 note", user_id="u1", topics=["t1"])
    return [first, second, unsigned, await laptop.export_since([U1])]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("sync-fuzzed")
    node = ServerProcess(tmp, "hub", tokens=_tokens(tmp)).start()
    with asyncio.Runner() as runner:
        laptop = Replica(None, replica_id="laptop")
        runner.run(laptop.start())
        w = World(node, runner.run(_payloads(laptop)), runner, laptop)
        try:
            yield w
        finally:
            if w.session is not None:
                runner.run(w.session.close())
            runner.run(laptop.stop())
            node.stop()


# -- the replication WebSocket --------------------------------------------------------------------


def hellos(world: World) -> st.SearchStrategy[bytes]:
    valid = [
        encode_frame("hello", replica="acme-phone", channels=[ACME], mode="eager", versions=[1, 2]),
        encode_frame("hello", replica="laptop", channels=[U1, ACME], mode="lazy", interval_ms=10, vectors={}),
        encode_frame("hello", replica="acme-phone", channels=[U1]),  # a channel it may not read
    ]
    return st.sampled_from(valid) | st.sampled_from(valid).flatmap(
        lambda f: byte_mutations(f) | field_mutations(f)
    )


def frames_after_hello(world: World) -> st.SearchStrategy[bytes | str]:
    payloads = st.sampled_from(world.payloads)
    payload = (
        payloads
        | payloads.flatmap(lambda p: byte_mutations(p) | field_mutations(p))
        | msgpack_values.map(pack)
    )
    deltas = st.builds(lambda n, p: encode_frame("deltas", n=n, payload=p), st.integers(0, 2**40), payload)
    return st.one_of(
        deltas,
        deltas.flatmap(lambda f: byte_mutations(f) | field_mutations(f)),
        frame_shaped.map(pack),
        st.binary(max_size=256),
        st.text(max_size=64),
    )


async def _read_answers(ws: aiohttp.ClientWebSocketResponse) -> list[aiohttp.WSMessage]:
    answers = []
    while True:
        try:
            message = await ws.receive(timeout=QUIET)
        except TimeoutError:
            return answers
        answers.append(message)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return answers


async def play(world: World, token: str | None, first: bytes | str, rest: list[bytes | str]) -> None:
    session = await world.http()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        ws = await session.ws_connect(f"{world.node.url}/v1/sync/ws", headers=headers, max_msg_size=0)
    except aiohttp.WSServerHandshakeError as exc:
        assert token is None and exc.status == 401, exc
        world.answers["401"] = world.answers.get("401", 0) + 1
        return
    async with ws:
        answers: list[aiohttp.WSMessage] = []
        for frame in [first, *rest]:
            if ws.closed:
                break
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
            answers += await _read_answers(ws)
        hello_ok = False
        for message in answers:
            if message.type == aiohttp.WSMsgType.BINARY:
                decoded = decode_frame(message.data)  # the node only ever sends valid frames
                world.answers[decoded.type] = world.answers.get(decoded.type, 0) + 1
                hello_ok = hello_ok or decoded.type == "hello"
            elif message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ):
                pass
            else:
                raise AssertionError(f"the node sent a {message.type.name} message: {message.data!r:.200}")
        if ws.closed and ws.close_code is not None:
            world.closes[ws.close_code] = world.closes.get(ws.close_code, 0) + 1
            # only a refused hello closes the link (or a frame over the size limit: not sent here)
            assert not hello_ok and ws.close_code in (4400, 4403), (ws.close_code, answers)


def check_websocket(world: World, examples: int) -> None:
    @fuzz_settings(examples)
    @given(
        st.sampled_from([ADMIN, TENANT, None]),
        hellos(world) | st.binary(max_size=128) | st.text(max_size=32),
        st.lists(frames_after_hello(world), max_size=4),
    )
    def sequence(token: str | None, first: bytes | str, rest: list[bytes | str]) -> None:
        world.run(play(world, token, first, rest))

    sequence()


# -- /v1/sync/push leaves nothing behind when it refuses ------------------------------------------


async def _seen(world: World) -> tuple[Any, ...]:
    session = await world.http()
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with session.get(f"{world.node.url}/v1/status", headers=headers) as r:
        status = await r.json()
    async with session.get(f"{world.node.url}/v1/memories?include_deleted=true", headers=headers) as r:
        memories = await r.json()
    return status["version_vectors"], status["pending_deltas"], memories


async def push(world: World, token: str, data: bytes) -> None:
    session = await world.http()
    before = await _seen(world)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-crdtmem-deltas"}
    async with session.post(f"{world.node.url}/v1/sync/push", data=data, headers=headers) as r:
        assert r.status < 500 and r.content_type == "application/json", (r.status, await r.text())
        body = await r.json()
    key = str(r.status)
    world.answers[key] = world.answers.get(key, 0) + 1
    if r.status != 200:
        assert set(body) == {"error", "message"}, body
        assert await _seen(world) == before, (body, before, await _seen(world))
    elif not (body["applied"] or body["pending"] or body["refused"]):
        # duplicates may log entries the node lacked (filling a gap moves a vector up), nothing else
        (vectors, waiting, memories), (old_vectors, old_waiting, old_memories) = await _seen(world), before
        assert (waiting, memories) == (old_waiting, old_memories), (body, before, await _seen(world))
        for channel, vector in old_vectors.items():
            assert all(vectors[channel][origin] >= seq for origin, seq in vector.items()), body


async def _settled(world: World) -> None:
    """Wait until what an admin sees stops changing (sockets of the frames test are closed, but
    the node may still be finishing what they sent)."""
    seen = await _seen(world)
    for _ in range(50):
        await asyncio.sleep(0.2)
        now = await _seen(world)
        if now == seen:
            return
        seen = now


def check_push(world: World, examples: int) -> None:
    payloads = st.sampled_from(world.payloads)
    world.run(_settled(world))

    @fuzz_settings(examples)
    @given(
        st.sampled_from([ADMIN, TENANT]),
        payloads
        | payloads.flatmap(lambda p: byte_mutations(p) | field_mutations(p))
        | msgpack_values.map(pack),
    )
    def pushed(token: str, data: bytes) -> None:
        world.run(push(world, token, data))

    pushed()


def test_replication_websocket_frames(world: World) -> None:
    check_websocket(world, DEFAULT_EXAMPLES)
    assert world.answers.get("hello") and world.answers.get("error"), world.answers
    assert 4400 in world.closes, world.closes


def test_a_refused_push_changes_nothing(world: World) -> None:
    check_push(world, DEFAULT_EXAMPLES)
    assert world.answers.get("400") and world.answers.get("200"), world.answers


@pytest.mark.soak
def test_soak_replication_surface(world: World) -> None:
    check_websocket(world, SOAK_EXAMPLES)
    check_push(world, SOAK_EXAMPLES)


def test_the_node_keeps_serving_and_replicating(world: World) -> None:
    """Runs last: no traceback in the node's log; it still takes a valid push and serves it."""
    assert world.node.alive
    log = world.node.log.read_text()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
    print("answers:", world.answers, "closes:", world.closes)  # shown with -s

    async def still() -> None:
        session = await world.http()
        await world.laptop.add("after the fuzz", user_id="u1")
        data = await world.laptop.export_since([U1])
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with session.post(f"{world.node.url}/v1/sync/push", data=data, headers=headers) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["applied"] >= 1
        body = pack({"channels": [U1], "vectors": {}, "v": 2})
        async with session.post(f"{world.node.url}/v1/sync/pull", data=body, headers=headers) as r:
            assert r.status == 200
            pulled = wire.decode(await r.read())
        assert "after the fuzz" in str([d.update for d in pulled.deltas])

    world.run(still())
