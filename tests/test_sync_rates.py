"""Write rates on the replication endpoints: ``/v1/sync/push`` requests and inbound WebSocket
``deltas`` frames count against the principal's bucket like REST writes. Over the rate, a push gets
429 with Retry-After and a frame gets an ``error`` frame with ``retry_after``; nothing of either is
applied, other principals keep their own budget, and a crdtmem peer waits, then sends again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from crdtmem import Replica
from crdtmem.access import TokenTable
from crdtmem.engine import payload as wire
from crdtmem.metrics import Metrics
from crdtmem.server import Node, PeerConfig
from crdtmem.sync.link import Link
from crdtmem.sync.protocol import decode_frame, encode_frame
from crdtmem.sync.settings import LinkSettings

U1, U2 = "user:u1:memories", "user:u2:memories"
A, B = "replica-a-token-00000001", "replica-b-token-00000001"
TOKENS = TokenTable.from_json(
    {
        "tokens": [
            {"token": A, "principal": "replica:a", "read": [U1, U2], "write": [U1, U2], "origins": ["*"]},
            {"token": B, "principal": "replica:b", "read": [U1, U2], "write": [U1, U2], "origins": ["*"]},
        ]
    }
)


async def _payloads(count: int, origin: str) -> list[tuple[str, bytes]]:
    """``count`` payloads from ``origin``, each creating one memory: (memory id, payload)."""
    made = []
    async with Replica(None, replica_id=origin) as source:
        for i in range(count):
            memory = await source.add(f"{origin} {i}", user_id="u1")
            deltas = [d for d in source.store.deltas_since([U1], {}) if d.doc_id == memory.id]
            made.append((memory.id, wire.encode(wire.Payload(origin, deltas, {}, source.keys_for(deltas)))))
    return made


async def test_push_over_the_rate_is_429_with_retry_after_and_applies_nothing(tmp_path: Path) -> None:
    async with (
        Node(
            Replica(tmp_path / "hub.db", replica_id="hub"), tokens=TOKENS, write_rate=0.01, write_burst=2
        ) as hub,
        aiohttp.ClientSession() as session,
    ):
        payloads = await _payloads(3, "o")
        statuses = []
        for _, payload in payloads:
            async with session.post(
                f"{hub.url}/v1/sync/push", data=payload, headers={"Authorization": f"Bearer {A}"}
            ) as response:
                statuses.append(response.status)
                body = await response.json()
                retry_after = response.headers.get("Retry-After")
        assert statuses == [200, 200, 429]
        assert body["error"] == "RateLimited" and int(retry_after or 0) >= 1
        assert hub.replica.store.load_record(payloads[2][0]) is None, "the refused push was applied"
        assert [hub.replica.store.load_record(m) is not None for m, _ in payloads[:2]] == [True, True]
        async with session.post(  # another principal: its own bucket
            f"{hub.url}/v1/sync/push", data=payloads[2][1], headers={"Authorization": f"Bearer {B}"}
        ) as response:
            assert response.status == 200
        assert hub.metrics.value("crdtmem_rate_limited_total", principal="replica:a") == 1


async def _hello(ws: aiohttp.ClientWebSocketResponse, replica: str) -> None:
    await ws.send_bytes(
        encode_frame("hello", replica=replica, channels=[U1], mode="eager", interval_ms=0, vectors={})
    )
    assert decode_frame((await ws.receive(timeout=10)).data).type == "hello"


async def _reply(ws: aiohttp.ClientWebSocketResponse):
    while True:
        frame = decode_frame((await ws.receive(timeout=10)).data)
        if frame.type != "deltas":  # what the hub pushes us is not the answer we wait for
            return frame


async def test_websocket_deltas_over_the_rate_get_an_error_frame_with_retry_after(tmp_path: Path) -> None:
    async with (
        Node(
            Replica(tmp_path / "hub.db", replica_id="hub"), tokens=TOKENS, write_rate=0.01, write_burst=2
        ) as hub,
        aiohttp.ClientSession() as session,
    ):
        payloads = await _payloads(3, "o")
        async with session.ws_connect(
            f"{hub.url}/v1/sync/ws", headers={"Authorization": f"Bearer {A}"}
        ) as ws:
            await _hello(ws, "a")
            replies = []
            for n, (_, payload) in enumerate(payloads):
                await ws.send_bytes(encode_frame("deltas", n=n, payload=payload))
                replies.append(await _reply(ws))
            assert [(r.type, r.body["n"]) for r in replies] == [("ack", 0), ("ack", 1), ("error", 2)]
            refused = replies[2].body
            assert refused["code"] == "RateLimited" and "retry" in refused["message"]
            assert 1 < refused["retry_after"] <= 3600  # one frame at 0.01/s: about 100 s
            assert hub.replica.store.load_record(payloads[2][0]) is None, "the refused frame was applied"
            await ws.send_bytes(encode_frame("ack", n=99, vectors={}))  # the link still serves
        async with session.ws_connect(
            f"{hub.url}/v1/sync/ws", headers={"Authorization": f"Bearer {B}"}
        ) as ws:
            await _hello(ws, "b")
            await ws.send_bytes(encode_frame("deltas", n=0, payload=payloads[2][1]))
            assert (await _reply(ws)).type == "ack"  # another principal: its own bucket
        assert hub.replica.store.load_record(payloads[2][0]) is not None
        assert hub.metrics.value("crdtmem_rate_limited_total", principal="replica:a") == 1


class _Socket:
    closed = False

    async def send_bytes(self, data: bytes) -> None:
        pass


async def test_a_link_refused_with_retry_after_sends_nothing_until_then() -> None:
    link = Link(
        None,  # type: ignore[arg-type]  # the pause is decided before anything is read or sent
        _Socket(),  # type: ignore[arg-type]
        peer_id="hub",
        push_channels=[U1],
        accept_channels=[U1],
        peer_vectors={},
        settings=LinkSettings(),
        metrics=Metrics(),
    )
    before = time.monotonic()
    await link._handle(
        decode_frame(encode_frame("error", n=0, code="RateLimited", message="slow", retry_after=600))
    )
    assert link._paused_until >= before + 600
    await link._handle(decode_frame(encode_frame("error", n=1, code="FrameError", message="bad")))
    assert link._paused_until >= before + 600, "an error without retry_after changes no pause"


async def test_a_peer_over_the_rate_waits_and_delivers_everything(tmp_path: Path) -> None:
    """A laptop writing faster than the hub admits: frames are refused, the laptop pauses as told and
    sends the rest again from its log; the hub ends up with every write, none lost."""
    async with (
        Node(
            Replica(tmp_path / "hub.db", replica_id="hub"), tokens=TOKENS, write_rate=0.5, write_burst=1
        ) as hub,
        Node(
            Replica(tmp_path / "a.db", replica_id="a", channels=[U1]),
            peers=[PeerConfig(hub.url, token=A)],
        ) as laptop,
    ):
        async with asyncio.timeout(30):
            while laptop.peers[0].link is None:
                await asyncio.sleep(0.01)
        made = [await laptop.replica.add(f"note {i}", user_id="u1") for i in range(5)]
        async with asyncio.timeout(60):
            while hub.replica.version_vector(U1) != {"a": 5}:
                await asyncio.sleep(0.02)
        assert [(await hub.replica.get(m.id)).content for m in made] == [f"note {i}" for i in range(5)]
        assert laptop.metrics.value("crdtmem_frames_refused_by_peer_total", reason="RateLimited") >= 1
        assert hub.metrics.value("crdtmem_rate_limited_total", principal="replica:a") >= 1
