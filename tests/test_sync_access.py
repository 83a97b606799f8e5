"""Access control and bad input on the replication endpoints of a real `crdtmem serve` process.

Tenant A's tokens cannot pull, push or subscribe to tenant B's channels; a replica token cannot claim
another replica id; malformed, oversized and unknown frames get a clear error and the connection and
the server keep serving others.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import msgpack
import pytest

from crdtmem import Replica
from crdtmem.engine import payload as wire
from crdtmem.sync.protocol import decode_frame, encode_frame
from tests.support.processes import ServerProcess

TA, TB = "tenant:acme:shared", "tenant:globex:shared"
TOKENS = {
    "tokens": [
        {
            "token": "acme-replica-token-0001",
            "principal": "replica:acme-laptop",
            "read": [TA],
            "write": [TA],
            "origins": ["maker", "forger"],  # it relays the deltas these tests make
            "unsigned": ["forger"],  # and delivers forged ones unsigned
        },
        {
            "token": "globex-replica-token-01",
            "principal": "replica:globex-1",
            "read": [TB],
            "write": [TB],
            "origins": ["maker", "forger"],
            "unsigned": ["forger"],
        },
        {"token": "acme-reader-token-00001", "principal": "user:auditor", "read": [TA], "write": []},
        {"token": "operator-token-0000001", "principal": "user:operator", "read": ["*"], "write": []},
    ]
}
ACME, GLOBEX, READER, OPERATOR = (t["token"] for t in TOKENS["tokens"])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh hub per test: no test sees what another pushed, whatever order they run in."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    proc = ServerProcess(tmp_path, "hub", tokens=tokens).start()
    yield proc
    proc.stop()


async def _payload(channel: str, tenant: str) -> bytes:
    async with Replica(None, replica_id="maker") as maker:
        await maker.add("quarterly numbers", tenant_id=tenant, shared=True)
        return await maker.export_since(channel)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _pull(session, server, token, channels):
    body = msgpack.packb({"channels": channels, "vectors": {}, "limit": 100})
    async with session.post(f"{server.url}/v1/sync/pull", data=body, headers=_auth(token)) as r:
        return r.status, await r.read()


async def test_pull_requires_a_known_token(session, server):
    body = msgpack.packb({"channels": [TA], "vectors": {}, "limit": 10})
    async with session.post(f"{server.url}/v1/sync/pull", data=body) as r:
        assert r.status == 401
    async with session.post(f"{server.url}/v1/sync/pull", data=body, headers=_auth("x" * 24)) as r:
        assert r.status == 401
        assert (await r.json())["error"] == "Unauthorized"


async def test_tenant_a_cannot_pull_or_push_tenant_b(session, server):
    status, body = await _pull(session, server, ACME, [TB])
    assert status == 403 and b"globex" in body
    status, _ = await _pull(session, server, ACME, [TA])
    assert status == 200
    foreign = await _payload(TB, "globex")
    async with session.post(f"{server.url}/v1/sync/push", data=foreign, headers=_auth(ACME)) as r:
        assert r.status == 403
    async with session.post(f"{server.url}/v1/sync/push", data=foreign, headers=_auth(GLOBEX)) as r:
        assert r.status == 200 and (await r.json())["applied"] == 1
    # what globex stored is invisible to acme, on pull and on the REST API
    status, body = await _pull(session, server, ACME, [TA])
    assert b"quarterly" not in body
    async with session.get(f"{server.url}/v1/memories", headers=_auth(ACME)) as r:
        assert all(m["scope"]["tenant_id"] != "globex" for m in (await r.json())["memories"])


async def test_reader_token_cannot_push(session, server):
    mine = await _payload(TA, "acme")
    async with session.post(f"{server.url}/v1/sync/push", data=mine, headers=_auth(READER)) as r:
        assert r.status == 403


async def test_unknown_channel_and_malformed_bodies_are_400(session, server):
    status, body = await _pull(session, server, ACME, ["tenant:acme:secret"])
    assert status == 400 and b"unknown channel" in body
    async with session.post(f"{server.url}/v1/sync/pull", data=b"\xc1garbage", headers=_auth(ACME)) as r:
        assert r.status == 400
    async with session.post(f"{server.url}/v1/sync/push", data=b"", headers=_auth(ACME)) as r:
        assert r.status == 400 and (await r.json())["error"] == "MalformedPayload"


async def _hello(ws, replica: str, channels: list[str]) -> dict:
    await ws.send_bytes(
        encode_frame("hello", replica=replica, channels=channels, mode="eager", interval_ms=0, vectors={})
    )
    frame = decode_frame((await ws.receive(timeout=30)).data)
    return {"type": frame.type, **frame.body}


async def test_websocket_refuses_foreign_channels_and_wrong_replica_id(session, server):
    async with session.ws_connect(f"{server.url}/v1/sync/ws", headers=_auth(ACME)) as ws:
        answer = await _hello(ws, "acme-laptop", [TB])
        assert answer["type"] == "error" and answer["code"] == "AccessDenied"
    async with session.ws_connect(f"{server.url}/v1/sync/ws", headers=_auth(ACME)) as ws:
        answer = await _hello(ws, "globex-1", [TA])
        assert answer["type"] == "error" and "belongs to replica" in answer["message"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(f"{server.url}/v1/sync/ws")
    assert refused.value.status == 401


async def test_bad_frames_get_errors_and_the_link_keeps_serving(session, server):
    async with session.ws_connect(f"{server.url}/v1/sync/ws", headers=_auth(ACME)) as ws:
        answer = await _hello(ws, "acme-laptop", [TA])
        assert answer["type"] == "hello" and answer["accept"] == [TA]
        bad = [  # each with the error its reply must carry, and the frame number when it has one
            (b"\x00\x01garbage", "FrameError", None),
            (msgpack.packb({"t": "deltas", "v": 1}), "FrameError", None),
            (msgpack.packb({"t": "teleport", "v": 1}), "FrameError", None),
            (msgpack.packb({"t": "deltas", "v": 99, "n": 1, "payload": b""}), "FrameError", None),
            (encode_frame("deltas", n=5, payload=b"not a payload"), "MalformedPayload", 5),
            (encode_frame("deltas", n=6, payload=await _payload(TB, "globex")), "AccessDeniedFrame", 6),
            (encode_frame("hello", replica="again", channels=[TA]), "FrameError", None),
        ]
        for frame, _, _ in bad:
            await ws.send_bytes(frame)
        await ws.send_str("text is not a frame")
        replies = [decode_frame((await ws.receive(timeout=30)).data) for _ in range(len(bad) + 1)]
        assert [r.type for r in replies] == ["error"] * (len(bad) + 1)
        assert [(r.body["code"], r.body.get("n")) for r in replies] == [
            *((code, n) for _, code, n in bad),
            ("FrameError", None),
        ]
        assert "unexpected hello" in replies[-2].body["message"]
        # the same link still applies a good frame and acknowledges it
        await ws.send_bytes(encode_frame("deltas", n=7, payload=await _payload(TA, "acme")))
        while True:
            reply = decode_frame((await ws.receive(timeout=30)).data)
            if reply.type == "ack":
                assert reply.body["n"] == 7 and reply.body["vectors"][TA]
                break
    async with session.get(f"{server.url}/metrics", headers=_auth(OPERATOR)) as r:
        assert "crdtmem_frames_rejected_total" in await r.text()


async def _relabelled(tenant: str, *, shared_topic: str | None = None, claim: str, seq: int = 1) -> bytes:
    """A payload creating a memory of ``tenant`` (and maybe a topic), its delta relabelled to ``claim``."""
    async with Replica(None, replica_id="forger") as forger:
        topics = [shared_topic] if shared_topic else []
        memory = await forger.add("planted", tenant_id=tenant, shared=True, topics=topics)
        payload = wire.decode(await forger.export_since(list(memory.channels)))
    deltas = [dataclasses.replace(d, seqs={claim: seq}, signature=None) for d in payload.deltas]
    return wire.encode(wire.Payload("forger", deltas))


async def test_a_delta_relabelled_onto_a_writable_channel_is_refused(session, server):
    """A token may write acme's channel; a memory of globex relabelled as an acme delta must not land,
    over HTTP push or the WebSocket, and neither may a memory also on a channel the token cannot write."""
    planted = await _relabelled("globex", claim=TA)
    async with session.post(f"{server.url}/v1/sync/push", data=planted, headers=_auth(ACME)) as r:
        # decided against delta by delta (so a stream goes on past it), nothing applied
        assert r.status == 200 and (await r.json())["refused"] == 1
    also_topic = await _relabelled("acme", shared_topic="secret", claim=TA, seq=2)  # TA and topic:secret
    async with session.post(f"{server.url}/v1/sync/push", data=also_topic, headers=_auth(ACME)) as r:
        assert r.status == 200 and (await r.json())["refused"] == 1
    # a resent copy is a duplicate of the decision; fresh ones over the WebSocket are refused alike
    async with session.post(f"{server.url}/v1/sync/push", data=planted, headers=_auth(ACME)) as r:
        assert (await r.json())["duplicates"] == 1
    planted = await _relabelled("globex", claim=TA, seq=3)
    also_topic = await _relabelled("acme", shared_topic="secret", claim=TA, seq=4)
    async with session.ws_connect(f"{server.url}/v1/sync/ws", headers=_auth(ACME)) as ws:
        assert (await _hello(ws, "acme-laptop", [TA]))["type"] == "hello"
        for n, frame in enumerate((planted, also_topic)):
            await ws.send_bytes(encode_frame("deltas", n=n, payload=frame))
            reply = decode_frame((await ws.receive(timeout=30)).data)
            while reply.type == "deltas":  # the server pushes what acme may read; not our answer
                reply = decode_frame((await ws.receive(timeout=30)).data)
            # a link applies around a memory that fails (so one cannot stall it) and says so
            assert reply.type == "ack" and reply.body["n"] == n and reply.body["rejected"] == 1
    async with session.post(
        f"{server.url}/v1/sync/pull",
        data=msgpack.packb({"channels": [TA, TB], "vectors": {}, "limit": 100}),
        headers=_auth("globex-replica-token-01"),
    ) as r:
        assert r.status == 403  # globex cannot read TA: ask for its own channel only
    status, body = await _pull(session, server, GLOBEX, [TB])
    assert status == 200 and b"planted" not in body
    status, body = await _pull(session, server, ACME, [TA])
    assert status == 200 and b"planted" not in body


async def test_hostile_sync_numbers_ids_and_stamps_get_clear_errors(session, server):
    """Probed on a running node: each is refused with a clear error, and the link and server go on."""
    huge = 2**64 - 1  # past SQLite's integers
    body = msgpack.packb({"channels": [TA], "vectors": {TA: {"x": huge}}, "limit": 10})
    async with session.post(f"{server.url}/v1/sync/pull", data=body, headers=_auth(ACME)) as r:
        assert r.status == 400 and "seqs 0.." in (await r.json())["message"]
    body = msgpack.packb({"channels": [TA], "vectors": {}, "limit": True})
    async with session.post(f"{server.url}/v1/sync/pull", data=body, headers=_auth(ACME)) as r:
        assert r.status == 400
    good = await _payload(TA, "acme")
    for changed in (lambda b: b.update(v=True), lambda b: b.update(v=1.0)):
        async with session.post(
            f"{server.url}/v1/sync/push", data=_repack(good, changed), headers=_auth(ACME)
        ) as r:
            assert r.status == 400 and (await r.json())["error"] == "UnsupportedVersion"
    far = "999999999999999.999999"  # the year 33658: the drift check must still say so clearly

    def stamp_far(b: dict) -> None:
        b["deltas"][0][0] = f"maker:{far}"
        b["deltas"][0][3] = far

    async with session.post(
        f"{server.url}/v1/sync/push", data=_repack(good, stamp_far), headers=_auth(ACME)
    ) as r:
        assert r.status == 422 and "ahead" in (await r.json())["message"]
    async with session.ws_connect(f"{server.url}/v1/sync/ws", headers=_auth(READER)) as ws:
        answer = await _hello(ws, "x" * 100_000, [TA])  # a replica id becomes a metrics label
        assert answer["type"] == "error" and "replica id" in answer["message"]
    async with session.ws_connect(f"{server.url}/v1/sync/ws", headers=_auth(ACME)) as ws:
        await ws.send_bytes(
            encode_frame("hello", replica="acme-laptop", channels=[TA], vectors={TA: {"x": huge}})
        )
        answer = decode_frame((await ws.receive(timeout=30)).data)
        assert answer.type == "error" and answer.body["code"] == "FrameError"
    status, _ = await _pull(session, server, ACME, [TA])
    assert status == 200


def _repack(data: bytes, change) -> bytes:
    body = msgpack.unpackb(data, raw=False)
    change(body)
    return bytes(msgpack.packb(body, use_bin_type=True))
