"""The replication link in detail: backpressure to pull mode, lazy coalescing, oversize frames,
backoff; against real aiohttp servers on loopback (in-process nodes here, to reach their internals)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator

import aiohttp
import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtmem import Replica
from crdtmem.engine import payload as wire
from crdtmem.engine.coalesce import coalesce
from crdtmem.engine.inbound import ApplyResult
from crdtmem.metrics import Metrics
from crdtmem.server import Node, PeerConfig
from crdtmem.store.base import DeltaRecord
from crdtmem.sync.link import Link
from crdtmem.sync.peer import Backoff, PeerClient
from crdtmem.sync.protocol import decode_frame, encode_frame
from crdtmem.sync.settings import LinkSettings

U1 = "user:u1:memories"


async def _frames_until(ws, wanted: str, timeout: float = 10.0) -> list:
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            frame = decode_frame((await ws.receive()).data)
            seen.append(frame)
            if frame.type == wanted:
                return seen


def _hello(replica: str) -> bytes:
    """A subscriber's hello: eager, the one channel, from nothing."""
    return encode_frame("hello", replica=replica, channels=[U1], mode="eager", interval_ms=0, vectors={})


@contextlib.asynccontextmanager
async def _subscribed(node: Node, replica: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A raw WebSocket to ``node``'s sync endpoint that has said its :func:`_hello`."""
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{node.url}/v1/sync/ws") as ws:
        await ws.send_bytes(_hello(replica))
        yield ws


async def test_slow_subscriber_is_moved_to_pull_and_told_so(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="crdtmem.sync.link")
    settings_ = LinkSettings(page=1, window=2, slow_after=0.3, ack_timeout=60)
    async with Node(Replica(tmp_path / "a.db", replica_id="a"), settings=settings_) as node:
        for i in range(10):
            await node.replica.add(f"fact {i}", user_id="u1")
        async with _subscribed(node, "slow") as ws:
            frames = await _frames_until(ws, "mode")  # never acknowledge anything
            deltas = [f for f in frames if f.type == "deltas"]
            assert len(deltas) == settings_.window, "pushed beyond the window without acks"
            assert frames[-1].body["mode"] == "pull"
            status = node.status()
            assert status["links"][0]["mode"] == "pull"
            assert node.metrics.value("crdtmem_peers_moved_to_pull_total", peer="slow") == 1
            # while in pull mode nothing more is pushed, however much is written: the first deltas
            # frame after the resume below must hold only the write made after it
            for i in range(5):
                await node.replica.add(f"more {i}", user_id="u1")
            # the subscriber pulls, resumes from its new vectors, and is pushed to again
            body = msgpack.packb({"channels": [U1], "vectors": {}, "limit": 100})
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{node.url}/v1/sync/pull", data=body) as r,
            ):
                pulled = wire.decode(await r.read())
            assert len(pulled.deltas) == 15
            await ws.send_bytes(encode_frame("resume", vectors=pulled.vectors))
            latest = await node.replica.add("after resume", user_id="u1")
            frames = await _frames_until(ws, "deltas")
            assert [f.type for f in frames] == ["deltas"], "pushed while the subscriber was in pull mode"
            assert [d.doc_id for d in wire.decode(frames[-1].body["payload"]).deltas] == [latest.id]
            assert node.status()["links"][0]["mode"] == "eager"
            said = [r.getMessage() for r in caplog.records if r.name == "crdtmem.sync.link"]
            assert said == [
                "moved peer slow to pull: peer did not acknowledge in time",
                "peer slow resumed: pushing again",
            ]


async def test_an_unacknowledged_frame_is_sent_again_after_the_ack_timeout(tmp_path):
    """A frame (or its ack) lost on the way: after ``ack_timeout`` the link re-exports from what the
    peer acknowledged, counts it in crdtmem_frames_resent_total, and goes on once acks come."""
    settings_ = LinkSettings(ack_timeout=0.2, slow_after=3600)
    async with Node(Replica(tmp_path / "a.db", replica_id="a"), settings=settings_) as node:
        made = [await node.replica.add(f"fact {i}", user_id="u1") for i in range(3)]
        async with _subscribed(node, "lossy") as ws:
            first = (await _frames_until(ws, "deltas"))[-1]  # "lost": never acknowledged
            again = (await _frames_until(ws, "deltas"))[-1]
            sent = [wire.decode(f.body["payload"]).deltas for f in (first, again)]
            assert [d.uid for d in sent[0]] == [d.uid for d in sent[1]], "not the same deltas again"
            assert len(sent[0]) == 3 and again.body["n"] != first.body["n"]
            assert node.metrics.value("crdtmem_frames_resent_total", peer="lossy") >= 1
            await ws.send_bytes(
                encode_frame("ack", n=again.body["n"], vectors={U1: node.replica.version_vector(U1)})
            )
            latest = await node.replica.add("after the ack", user_id="u1")
            while True:  # a resend may have crossed our ack; then the new write comes on its own
                frame = (await _frames_until(ws, "deltas"))[-1]
                ids = [d.doc_id for d in wire.decode(frame.body["payload"]).deltas]
                if latest.id in ids:
                    break
                assert ids == [m.id for m in made]
            assert ids == [latest.id], "the acknowledged deltas were sent again with the new one"


async def test_lazy_mode_batches_and_coalesces_deltas_of_one_memory(tmp_path):
    """201 deltas of one memory written while offline reach the hub as one frame holding one merged
    delta; afterwards every lazy frame still carries one delta for the memory, however many writes
    it covers."""
    async with Replica(tmp_path / "a.db", replica_id="a", channels=[U1]) as offline:
        counter = await offline.add(0, kind="counter", user_id="u1")
        for _ in range(200):
            await offline.increment(counter.id, 1)
    async with (
        Node(Replica(tmp_path / "hub.db", replica_id="hub", channels=[U1])) as hub,
        Node(
            Replica(tmp_path / "a.db", replica_id="a", channels=[U1]),
            peers=[PeerConfig(hub.url, mode="lazy", interval=0.05)],
        ) as a,
    ):
        await _until(lambda: hub.replica.version_vector(U1) == {"a": 201})
        link = a.peers[0].link
        assert link is not None and link.mode == "lazy"
        assert (link.status.frames_sent, link.status.deltas_sent) == (1, 1)
        assert (await hub.replica.get(counter.id)).content == 200
        for _ in range(50):
            await a.replica.increment(counter.id, 1)
        await _until(lambda: hub.replica.version_vector(U1) == {"a": 251})
        assert link.status.deltas_sent == link.status.frames_sent <= 51
        assert (await hub.replica.get(counter.id)).content == 250
        assert hub.replica.store.is_logged(U1, "a", 230), "each covered seq is logged by the receiver"


async def _until(check, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def _content(replica: Replica, memory_id: str):
    try:
        return (await replica.get(memory_id)).content
    except Exception:
        return None


async def test_oversized_frame_is_refused_and_others_keep_syncing(tmp_path):
    settings_ = LinkSettings(max_frame_bytes=4096)
    async with (
        Node(Replica(tmp_path / "hub.db", replica_id="hub"), settings=settings_) as hub,
        Node(Replica(tmp_path / "b.db", replica_id="b", channels=[U1]), peers=[PeerConfig(hub.url)]) as b,
    ):
        async with _subscribed(hub, "big") as ws:
            assert decode_frame((await ws.receive()).data).type == "hello"
            await ws.send_bytes(encode_frame("deltas", n=0, payload=b"x" * 10_000))
            message = await ws.receive()
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        m = await hub.replica.add("still syncing", user_id="u1")
        async with asyncio.timeout(10):
            while await _content(b.replica, m.id) != "still syncing":
                await asyncio.sleep(0.05)


def test_backoff_is_jittered_exponential_and_capped():
    backoff = Backoff(base=0.1, cap=2.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(12)]
    for attempt, delay in enumerate(delays):
        assert 0 <= delay <= min(2.0, 0.1 * 2**attempt)
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next() <= 0.1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(["inc", "add", "sync"])), max_size=40))
def test_coalesced_export_converges_to_the_same_state(script):
    asyncio.run(_coalesce_script(script))


async def _coalesce_script(script):
    async with (
        Replica(None, replica_id="a") as a,
        Replica(None, replica_id="b") as b,
        Replica(None, replica_id="plain") as plain,
        Replica(None, replica_id="merged") as merged,
    ):
        counter = await a.add(0, kind="counter", user_id="u1")
        items = await a.add([], kind="list", user_id="u1")
        await b.apply(await a.export_since(U1))
        for i, (side, op) in enumerate(script):
            r, other = (a, b) if side == "a" else (b, a)
            if op == "inc":
                await r.increment(counter.id, i + 1)
            elif op == "add":
                await r.add_items(items.id, f"{side}{i}")
            else:
                await other.apply(await r.export_since(U1, other.version_vector(U1)))
        await b.apply(await a.export_since(U1, b.version_vector(U1)))
        deltas = b.store.deltas_since([U1], {}, None)
        await plain.apply(wire.encode(wire.Payload("b", deltas, {})))
        # b merges (and signs again) its own signed runs; a's signed deltas pass through as they are
        ours = coalesce(deltas, b.id, b.signer)
        await merged.apply(wire.encode(wire.Payload("b", ours, {}, b.keys_for(ours))))
        # unsigned (written before signing, or by a foreign client): every origin's runs merge
        unsigned = [dataclasses.replace(d, signature=None) for d in deltas]
        async with Replica(None, replica_id="merged-unsigned") as other:
            await other.apply(wire.encode(wire.Payload("b", coalesce(unsigned), {})))
            for memory_id in (counter.id, items.id):
                assert (await other.get(memory_id)).content == (await plain.get(memory_id)).content
            assert other.version_vector(U1) == plain.version_vector(U1)
        for memory_id in (counter.id, items.id):
            assert (await merged.get(memory_id)).content == (await plain.get(memory_id)).content
        assert merged.version_vector(U1) == plain.version_vector(U1) == b.version_vector(U1)
        assert not merged.store.pending()


async def test_eager_pushes_come_from_commits_and_match_the_log(tmp_path):
    """Sequential writes go out from the commit listener, not from log reads; what arrives is exactly
    the log, in order, and a write made while the peer is behind is still delivered (log fallback)."""
    async with Node(Replica(tmp_path / "a.db", replica_id="a")) as node:
        await node.replica.add("before the peer", user_id="u1")
        async with _subscribed(node, "b") as ws:
            received = []

            async def take_one_frame() -> None:
                while True:
                    frame = decode_frame((await ws.receive(timeout=10)).data)
                    if frame.type == "deltas":
                        payload = wire.decode(frame.body["payload"])
                        received.extend(payload.deltas)
                        vectors = {U1: node.replica.version_vector(U1)}
                        await ws.send_bytes(encode_frame("ack", n=frame.body["n"], vectors=vectors))
                        return

            await take_one_frame()  # the catch-up page, from the log
            for i in range(20):
                await node.replica.add(f"fact {i}", user_id="u1")
                await take_one_frame()
        # the sender was idle at each commit: the listener itself wrote the frame
        from_listener = node.metrics.value("crdtmem_frames_sent_total", peer="b", source="listener")
        from_log = node.metrics.value("crdtmem_frames_sent_total", peer="b", source="log")
    assert from_log >= 1 and from_listener >= 15, (from_listener, from_log)
    assert [d.seqs[U1] for d in received] == list(range(1, 22)), "a delta was skipped or repeated"
    async with Replica(tmp_path / "a.db", replica_id="a") as reopened:  # the log, as stored
        logged = reopened.store.deltas_since([U1], {})
    assert [(d.uid, d.update, d.deps, d.seqs) for d in received] == [
        (d.uid, d.update, d.deps, d.seqs) for d in logged
    ]


def _delta(seq: int, channels: dict[str, int] | None = None, origin: str = "a", **kw) -> DeltaRecord:
    seqs = channels or {U1: seq}
    hlc = f"{seq:015d}.000000"
    return DeltaRecord(f"{origin}:{hlc}", origin, "m1", hlc, b"", b"", tuple(seqs), seqs, **kw)


def test_committed_deltas_are_sent_as_they_are_only_when_nothing_is_skipped():
    """The eager fast path takes handed deltas only after a log read reached the end of the log, and
    only when they continue exactly from what was sent, per channel and origin; a gap, a coalesced
    delta or nothing handed means: read the log."""
    link = Link(
        None,  # type: ignore[arg-type]  # the replica and socket are not touched by this path
        None,  # type: ignore[arg-type]
        peer_id="b",
        push_channels=[U1],
        accept_channels=[U1],
        peer_vectors={U1: {"a": 2}},
        settings=LinkSettings(),
        metrics=Metrics(),
    )
    link._handed = [_delta(3), _delta(4)]
    assert link._next_from_commits() is None, "the log was never read to its end: it may hold more"

    link._drained = True  # a log read reached the end; since then everything committed is handed
    link._handed = [_delta(3), _delta(4)]
    assert [d.seqs for d in link._next_from_commits() or []] == [{U1: 3}, {U1: 4}]

    link._handed = [_delta(4)]  # 3 was never handed: a gap
    assert link._next_from_commits() is None

    link._handed = [_delta(2), _delta(3)]  # 2 went out already (it was in a page read from the log)
    assert [d.seqs for d in link._next_from_commits() or []] == [{U1: 3}]

    link._handed = [_delta(3, also={U1: (2,)})]  # coalesced: the log knows better
    assert link._next_from_commits() is None

    link._handed = [_delta(3, {U1: 3, "topic:t:updates": 9})]  # channels the peer is not pushed: dropped
    (only,) = link._next_from_commits() or []
    assert only.seqs == {U1: 3} and only.channels == (U1,)

    link._handed = [_delta(1, origin="c"), _delta(3, origin="c")]  # per origin too
    assert link._next_from_commits() is None

    link._handed = []
    assert link._next_from_commits() is None


class _LogOnly:
    """A replica stand-in with a delta log of ten deltas from origin "o" (for the link alone)."""

    id = "a"

    def __init__(self) -> None:
        self.store = self
        self.log = [_delta(i, origin="o") for i in range(1, 11)]

    def version_vector(self, channel: str) -> dict[str, int]:
        return {"o": 10, "a": 3} if channel == U1 else {}

    def behind(self, channels, vectors) -> bool:
        return False  # nothing folded

    def deltas_since(self, channels, sent, limit):
        ahead = [d for d in self.log if d.seqs[U1] > sent.get(U1, {}).get(d.origin, 0)]
        return ahead[:limit]


class _Socket:
    closed = False

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send_bytes(self, data: bytes) -> None:
        self.frames.append(data)


async def test_a_commit_never_keeps_the_rest_of_a_backlog_from_being_sent():
    """A commit handed while the log still holds deltas the peer misses must not be sent on its own
    and end the round: the sender reads the log until it has reached its end."""
    socket = _Socket()
    link = Link(
        _LogOnly(),  # type: ignore[arg-type]
        socket,  # type: ignore[arg-type]
        peer_id="b",
        push_channels=[U1],
        accept_channels=[U1],
        peer_vectors={U1: {"a": 2}},
        settings=LinkSettings(page=4),
        metrics=Metrics(),
    )
    link._handed = []
    link._on_commit([_delta(3)])  # a local write lands while the peer still misses o:1..10
    await link._send_available()
    sent = [
        (d.origin, d.seqs[U1])
        for frame in socket.frames
        for d in wire.decode(decode_frame(frame).body["payload"]).deltas
    ]
    assert [("o", i) for i in range(1, 11)] == [d for d in sent if d[0] == "o"]
    assert link._sent[U1]["o"] == 10


class _Applying:
    """A replica stand-in whose apply commits what a frame carries: it calls the link's commit
    listener as the replica's commit would, and schedules what the commit wakes (an event
    subscriber) as the feed would."""

    id = "b"

    def __init__(self, order: list[str]) -> None:
        self.order = order
        self.link: Link | None = None
        self.woken: bool | None = None

    async def apply_payload(self, payload, *, sender, isolate):
        assert self.link is not None
        self.link._wake.clear()
        self.link._on_commit(payload.deltas)  # the commit listener, as the replica calls it
        self.woken = self.link._wake.is_set()
        asyncio.get_running_loop().call_soon(self.order.append, "event")  # a subscriber woken by it
        return ApplyResult(applied=len(payload.deltas), duplicates=0, pending=0, ignored=0)

    def version_vectors(self, channels):
        return {c: {"a": 1} for c in channels}


class _OrderedSocket(_Socket):
    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order

    async def send_bytes(self, data: bytes) -> None:
        self.order.append(decode_frame(data).type)
        self.frames.append(data)


def _applying_link(order: list[str]) -> tuple[Link, _Applying]:
    replica = _Applying(order)
    link = Link(
        replica,  # type: ignore[arg-type]
        _OrderedSocket(order),  # type: ignore[arg-type]
        peer_id="a",
        push_channels=[U1],
        accept_channels=[U1],
        peer_vectors={},
        settings=LinkSettings(),
        metrics=Metrics(),
    )
    replica.link = link
    return link, replica


def _frame_of(*deltas: DeltaRecord, vectors: dict[str, dict[str, int]]) -> bytes:
    return wire.encode(wire.Payload("a", list(deltas), vectors), 1)


async def test_the_commit_of_what_a_peer_sent_does_not_wake_the_sender_to_send_it_back():
    """The frame's vectors (what the peer holds) are marked before its deltas are applied, so their
    commit finds nothing to push to that peer and does not wake the sender; a commit of anything
    the peer misses (or one without deltas, which may have logged entries without one) does."""
    link, replica = _applying_link([])
    await link._receive_deltas(0, _frame_of(_delta(1), vectors={U1: {"a": 1}}))
    assert replica.woken is False, "woken to send the peer its own delta"
    assert link._sent[U1]["a"] == 1 and link._acked[U1]["a"] == 1

    link._wake.clear()
    link._on_commit([_delta(2)])  # a delta the peer has not seen
    assert link._wake.is_set()
    link._wake.clear()
    link._on_commit([_delta(5, {U1: 5, "topic:t:updates": 1}, origin="c")])  # beyond, in a pushed channel
    assert link._wake.is_set()
    link._wake.clear()
    link._on_commit([_delta(1, {"topic:t:updates": 7}, origin="c")])  # only in a channel not pushed
    assert not link._wake.is_set()
    link._on_commit([])
    assert link._wake.is_set()


async def test_a_frames_events_go_out_before_its_acknowledgement():
    """What the commit of a received frame wakes (its event subscribers) runs before the link
    acknowledges the frame: the acknowledgement is not on the way to the events."""
    order: list[str] = []
    link, _ = _applying_link(order)
    await link._receive_deltas(0, _frame_of(_delta(1), vectors={U1: {"a": 1}}))
    assert order == ["event", "ack"]


async def _origin_logged_out_of_order() -> tuple[DeltaRecord, list[DeltaRecord], str]:
    """An origin's seq 1 (memory 'first') and seqs 2..8 (another memory), as a relay may get them."""
    async with Replica(None, replica_id="o") as origin:
        first = await origin.add("first", user_id="u1")
        second = await origin.add("second", user_id="u1")
        for i in range(6):
            await origin.update(second.id, content=f"second v{i}")
        deltas = origin.store.deltas_since([U1], {})
    return deltas[0], deltas[1:], first.id


@contextlib.asynccontextmanager
async def _relay_and_linked_client(tmp_path) -> AsyncIterator[tuple[Node, Node]]:
    """A relay node and a client node whose link to it is up; pages of 5 deltas."""
    small = LinkSettings(page=5)
    async with (
        Node(Replica(tmp_path / "s.db", replica_id="s", channels=[U1]), settings=small) as relay,
        Node(
            Replica(tmp_path / "c.db", replica_id="c", channels=[U1]),
            peers=[PeerConfig(relay.url)],
            settings=small,
        ) as client,
    ):
        async with asyncio.timeout(10):
            while client.peers[0].link is None:
                await asyncio.sleep(0.02)
        yield relay, client


async def test_a_relay_that_logged_an_origin_out_of_order_still_pushes_every_seq(tmp_path):
    """Pages of 5 from a relay that logged seqs 2..8 before seq 1: the link must not mark seq 1 sent
    because a page carried higher ones (it did, and the peer never got 'first')."""
    first, rest, first_id = await _origin_logged_out_of_order()
    async with _relay_and_linked_client(tmp_path) as (relay, client):
        await relay.replica.apply(wire.encode(wire.Payload("o", rest)))
        await _until(lambda: client.replica.store.is_logged(U1, "o", 8))  # 2..8 went out before 1
        await relay.replica.apply(wire.encode(wire.Payload("o", [first])))
        async with asyncio.timeout(10):
            while client.replica.version_vector(U1) != {"o": 8}:
                await asyncio.sleep(0.02)
        assert (await client.replica.get(first_id)).content == "first"


async def test_a_pull_reaches_a_seq_the_server_logged_last(tmp_path):
    """The puller holds seqs 2..8 past its gap; the server has 1..8, seq 1 logged last. Every page
    used to be 2..6 again, so the pull looped forever and never got seq 1."""
    first, rest, first_id = await _origin_logged_out_of_order()
    async with Node(Replica(tmp_path / "s.db", replica_id="s", channels=[U1])) as server:
        await server.replica.apply(wire.encode(wire.Payload("o", rest)))
        await server.replica.apply(wire.encode(wire.Payload("o", [first])))
        async with Replica(tmp_path / "c.db", replica_id="c", channels=[U1]) as puller:
            await puller.apply(wire.encode(wire.Payload("o", rest)))
            assert puller.version_vector(U1) == {}
            peer = PeerClient(puller, server.url, channels=[U1], page=5)
            async with aiohttp.ClientSession() as peer._session:
                await asyncio.wait_for(peer.pull(), 10)
            assert puller.version_vector(U1) == {"o": 8}
            assert (await puller.get(first_id)).content == "first"


async def test_pages_of_big_memories_stay_under_the_payload_limit(tmp_path):
    """Pages are cut by bytes as well as by count: ten 60 KB facts never make one 600 KB page for a
    peer that accepts 200 KB (the pull used to ask for that page again and again)."""
    limit = 200_000
    async with Node(Replica(tmp_path / "s.db", replica_id="s", max_payload_bytes=limit)) as server:
        made = [await server.replica.add(f"{i} " + "x" * 60_000, user_id="u1") for i in range(10)]
        async with Replica(tmp_path / "c.db", replica_id="c", max_payload_bytes=limit) as puller:
            body = msgpack.packb({"channels": [U1], "vectors": {}, "limit": 1000})
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{server.url}/v1/sync/pull", data=body) as response,
            ):
                page = await response.read()
                assert len(page) <= limit and response.headers["X-Crdtmem-More"] == "1"
            peer = PeerClient(puller, server.url, channels=[U1], page=1000)
            async with aiohttp.ClientSession() as peer._session:
                await asyncio.wait_for(peer.pull(), 10)
            assert [(await puller.get(m.id)).content[:2] for m in made] == [f"{i} " for i in range(10)]


async def test_members_of_a_coalesced_delta_arriving_later_are_duplicates(tmp_path):
    """A lazy link sent a run of deltas coalesced; the same deltas arriving one by one (a pull from
    the origin) change nothing: no second copy stored, no event (dedupe by seq, not only by uid)."""
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
    ):
        memory = await a.add("v0", user_id="u1")
        for i in range(1, 4):
            await a.update(memory.id, content=f"v{i}")
        merged = coalesce(a.store.deltas_since([U1], {}), a.id, a.signer)  # signed again by a
        assert len(merged) == 1
        await b.apply(wire.encode(wire.Payload("relay", merged)))
        assert b.version_vector(U1) == {"a": 4}
        events = b.events()
        again = await b.apply(await a.export_since(U1, {}))
        assert (again.applied, again.duplicates) == (0, 4)
        await a.update(memory.id, content="v4")
        await b.apply(await a.export_since(U1, b.version_vector(U1)))
        first_event = await asyncio.wait_for(events.__anext__(), 10)
        assert first_event.memory.content == "v4", "the duplicates announced a change"
        assert len(await b.history(memory.id)) == 2


async def test_a_link_past_a_gap_that_stays_open_sends_the_rest_once(tmp_path):
    """The relay holds an origin's seqs 2..8 but never seq 1 (it was rejected, or never arrives), and
    14 deltas of another origin: its link sends each once, instead of the same page past the gap in
    a tight loop that never reached the rest, and the peer gets them all."""
    _, rest, _ = await _origin_logged_out_of_order()
    async with Replica(None, replica_id="o2") as more_origin:
        extra = [await more_origin.add(f"fact {i}", user_id="u1") for i in range(14)]
        more = more_origin.store.deltas_since([U1], {})
    async with _relay_and_linked_client(tmp_path) as (relay, client):
        await relay.replica.apply(wire.encode(wire.Payload("o", rest)))  # seq 1 of "o" never comes
        await relay.replica.apply(wire.encode(wire.Payload("o2", more)))
        await _until(lambda: client.replica.version_vector(U1).get("o2") == 14)
        barrier = await relay.replica.add("after the rest", user_id="u1")  # the link still runs
        await _until(lambda: client.replica.store.load_record(barrier.id) is not None)
        (link,) = relay.links
        assert link.status.frames_sent < 20  # 21 deltas in pages of 5, not thousands of frames
        assert [(await client.replica.get(m.id)).content for m in extra] == [m.content for m in extra]
        assert (
            client.replica.store.is_logged(U1, "o", 7) and client.replica.version_vector(U1).get("o", 0) == 0
        )


async def test_an_ack_without_vectors_keeps_the_link(tmp_path):
    """The frame check lets an ack leave its vectors out; the link took them as required and its
    handler died (the socket closed abnormally, 1006). Found by the replication-surface fuzz soak."""
    async with Node(Replica(tmp_path / "a.db", replica_id="a")) as node:
        await node.replica.add("fact", user_id="u1")
        async with _subscribed(node, "b") as ws:
            frames = await _frames_until(ws, "deltas")
            await ws.send_bytes(encode_frame("ack", n=frames[-1].body["n"]))
            # frames are handled in order: the answer to this one shows the ack was taken
            empty = wire.encode(wire.Payload("b", []))
            await ws.send_bytes(encode_frame("deltas", n=0, payload=empty))
            assert (await _frames_until(ws, "ack"))[-1].type == "ack"
            assert not ws.closed


async def test_a_resume_without_vectors_keeps_the_link(tmp_path):
    """The frame check lets a resume leave its vectors out (resume from nothing); the link read them
    as required and its handler died (1006). Found by the replication-surface fuzz soak."""
    async with Node(Replica(tmp_path / "a.db", replica_id="a")) as node:
        first = await node.replica.add("fact", user_id="u1")
        async with _subscribed(node, "b") as ws:
            frames = await _frames_until(ws, "deltas")
            await ws.send_bytes(encode_frame("ack", n=frames[-1].body["n"], vectors={U1: {"a": 1}}))
            await ws.send_bytes(encode_frame("resume"))
            # resumed from nothing: what was acknowledged is pushed again
            again = (await _frames_until(ws, "deltas"))[-1]
            assert [d.doc_id for d in wire.decode(again.body["payload"]).deltas] == [first.id]
            assert not ws.closed


async def test_the_server_end_told_to_pull_resumes_from_what_it_holds(tmp_path):
    """The server end of a link cannot pull from its client. Told ``mode: pull`` (its client's push
    timed out), it ignored the frame, and the client pushed nothing more for the rest of the link's
    life: its writes waited for a reconnect that a healthy link never makes. Found by the faulty
    network soak (tests/test_replication_faults.py)."""
    async with Node(Replica(tmp_path / "a.db", replica_id="a")) as node:
        await node.replica.add("fact", user_id="u1")
        async with _subscribed(node, "b") as ws:
            await ws.send_bytes(encode_frame("mode", mode="pull", reason="peer did not acknowledge in time"))
            resume = (await _frames_until(ws, "resume", timeout=5))[-1]
            assert resume.body["vectors"] == node.replica.version_vectors([U1]) == {U1: {"a": 1}}


async def test_a_pull_request_without_a_resume_is_sent_again(tmp_path):
    """A lost ``mode`` frame (or a lost ``resume``) left the pushing end silent for good: it is sent
    again after ``ack_timeout``, nothing is pushed meanwhile, and a ``resume`` ends it."""
    settings_ = LinkSettings(page=1, window=2, slow_after=0.3, ack_timeout=0.5)
    async with Node(Replica(tmp_path / "a.db", replica_id="a"), settings=settings_) as node:
        for i in range(5):
            await node.replica.add(f"fact {i}", user_id="u1")
        async with _subscribed(node, "slow") as ws:
            await _frames_until(ws, "mode")  # never acknowledge; the first one is "lost"
            again = await _frames_until(ws, "mode", timeout=5)
            assert [f.type for f in again] == ["mode"], "pushed while the peer was in pull mode"
            await ws.send_bytes(encode_frame("resume", vectors={}))
            assert (await _frames_until(ws, "deltas"))[-1].type == "deltas"
