"""Hostile principals against real `crdtmem serve` processes: who may introduce which deltas, and
who may write what they carry.

- origins: a token introduces only the origins it is bound to; a forged origin, seq or ``also``
  run is refused and cannot make a hub skip a replica's acknowledged writes;
- rights per delta: a delta that waited for its memory is authorized against the rights of the
  principal that delivered it; a pull applies only what the peer's token may write; a push naming
  a memory the caller cannot see answers as for an unknown id;
- signatures: a relay forwards deltas but cannot change or strip what their origin signed, a pinned
  key refuses an impostor of the same replica id, a strict node takes listed keys only, and
  signatures survive coalescing relays.

Each test starts the servers it needs (tests/support/processes.py), plays one attack found in a
hostile-input review, and checks that the honest replicas lose nothing and nobody gains a right.
Sizes and rates are in test_adversarial_bounds.py and test_adversarial_amplification.py, what a
token may learn over REST and status in test_adversarial_oracle.py, and generated hostile input of
every shape in test_fuzz_api.py, test_fuzz_sync.py and test_fuzz_decoders.py.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
from aiohttp import web

from crdtmem import Replica
from crdtmem.document.erasure import EMPTY_DEPS, EMPTY_UPDATE, is_marker, is_stub
from crdtmem.engine import payload as wire
from crdtmem.engine.signing import Signer
from crdtmem.engine.statepages import page_message
from tests.support.processes import ServerProcess
from tests.support.rest import Api, eventually

U1 = "user:u1:memories"
LAPTOP_TOKEN = "laptop-replica-token-0001"
MALLORY_TOKEN = "mallory-device-token-001"


def _tokens(tmp: Path, *entries: dict[str, Any]) -> Path:
    path = tmp / "tokens.json"
    path.write_text(json.dumps({"tokens": list(entries)}))
    return path


def _spawn(procs: list[ServerProcess], tmp: Path, rid: str, **kw: Any) -> ServerProcess:
    proc = ServerProcess(tmp, rid, **kw)
    procs.append(proc.start())
    return proc


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _forged(origin: str, *, seq: int, also: list[int] | None = None) -> bytes:
    """A payload that creates a memory of user u1, claiming ``origin`` and ``seq`` (and ``also``),
    unsigned (its writer has no key of ``origin``'s)."""
    async with Replica(None, replica_id=origin) as forger:
        await forger.add("planted by mallory", user_id="u1")
        payload = wire.decode(await forger.export_since(U1))
    delta = dataclasses.replace(
        payload.deltas[0], seqs={U1: seq}, also={U1: tuple(also)} if also else {}, signature=None
    )
    return wire.encode(wire.Payload("mallory-phone", [delta]))


def _hub_and_laptop(procs: list[ServerProcess], tmp: Path) -> tuple[ServerProcess, Path]:
    tokens = _tokens(
        tmp,
        {"token": LAPTOP_TOKEN, "principal": "replica:laptop", "read": [U1], "write": [U1]},
        {
            "token": MALLORY_TOKEN,
            "principal": "user:mallory",
            "read": [U1],
            "write": [U1],
            "origins": ["mallory-phone"],
        },
    )
    hub = _spawn(procs, tmp, "hub", tokens=tokens)
    return hub, tokens


async def _laptop_writes_reach_the_hub(
    procs: list[ServerProcess], tmp: Path, session: aiohttp.ClientSession, hub: ServerProcess, n: int
) -> None:
    laptop = _spawn(procs, tmp, "laptop", channels=[U1], peers=[hub.url], peer_token=LAPTOP_TOKEN)
    api = Api(session, laptop.url)
    written = [(await api.add(f"acknowledged write {i}", user_id="u1"))["id"] for i in range(n)]
    hub_api = Api(session, hub.url, LAPTOP_TOKEN)

    async def all_there() -> bool:
        return all([await hub_api.get(m) is not None for m in written])

    await eventually(all_there, what="every acknowledged laptop write on the hub")


async def test_a_forged_run_of_seqs_through_also_cannot_skip_a_replicas_writes(procs, session, tmp_path):
    """A device token claims the laptop's origin and seqs 1..21 in one coalesced delta: refused, and
    the laptop's 20 acknowledged writes all reach the hub."""
    hub, _ = _hub_and_laptop(procs, tmp_path)
    forged = await _forged("laptop", seq=21, also=list(range(1, 21)))
    async with session.post(f"{hub.url}/v1/sync/push", data=forged, headers=_auth(MALLORY_TOKEN)) as r:
        assert r.status == 403, await r.text()
        body = await r.json()
        assert "laptop" in body["message"] and "mallory-phone" in body["message"]
    assert (await Api(session, hub.url, LAPTOP_TOKEN).status())["version_vectors"].get(U1, {}) == {}
    await _laptop_writes_reach_the_hub(procs, tmp_path, session, hub, 20)


async def test_a_forged_plain_origin_cannot_take_a_replicas_next_seq(procs, session, tmp_path):
    hub, _ = _hub_and_laptop(procs, tmp_path)
    forged = await _forged("laptop", seq=1)
    async with session.post(f"{hub.url}/v1/sync/push", data=forged, headers=_auth(MALLORY_TOKEN)) as r:
        assert r.status == 403, await r.text()
    # nor the hub's own origin (its next local write would take that seq)
    forged = await _forged("hub", seq=1)
    async with session.post(f"{hub.url}/v1/sync/push", data=forged, headers=_auth(MALLORY_TOKEN)) as r:
        assert r.status == 403, await r.text()
    await _laptop_writes_reach_the_hub(procs, tmp_path, session, hub, 3)


async def test_a_device_writes_as_its_bound_replica_id(procs, session, tmp_path):
    """The same token may introduce deltas of the replica id it is bound to (signed by it)."""
    hub, _ = _hub_and_laptop(procs, tmp_path)
    async with Replica(None, replica_id="mallory-phone") as phone:
        await phone.add("mallory's own note", user_id="u1")
        own = await phone.export_since(U1)
    async with session.post(f"{hub.url}/v1/sync/push", data=own, headers=_auth(MALLORY_TOKEN)) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["applied"] == 1
    body = msgpack.packb({"channels": [U1], "vectors": {}, "limit": 10})
    async with session.post(f"{hub.url}/v1/sync/pull", data=body, headers=_auth(MALLORY_TOKEN)) as r:
        assert r.status == 200
        assert wire.decode(await r.read()).vectors[U1] == {"mallory-phone": 1}


# -- every delta authorized against its own memory, by its own sender ---------------------------

ALICE, T1 = "user:alice:memories", "tenant:t1:shared"
ADMIN_TOKEN = "admin-token-000000000001"
PAT_TOKEN = "pat-t1-only-token-000001"
HUB_A_TOKEN, HUB_B_TOKEN = "hub-a-replica-token-0001", "hub-b-replica-token-0001"
PAT = {"token": PAT_TOKEN, "principal": "user:pat", "read": [T1], "write": [T1], "origins": ["pat-phone"]}
ADMIN = {"token": ADMIN_TOKEN, "principal": "user:admin", "read": ["*"], "write": ["*"]}


def _relay(token: str, replica: str) -> dict[str, Any]:
    return {
        "token": token,
        "principal": f"replica:{replica}",
        "read": ["*"],
        "write": ["*"],
        "origins": ["*"],
    }


async def _pull_into(
    session: aiohttp.ClientSession, url: str, token: str, replica: Replica, channels: list[str]
):
    body = msgpack.packb({"channels": channels, "vectors": replica.version_vectors(channels), "limit": 1000})
    async with session.post(f"{url}/v1/sync/pull", data=body, headers=_auth(token)) as r:
        assert r.status == 200, await r.text()
        await replica.apply(await r.read())


async def _push(
    session: aiohttp.ClientSession, url: str, token: str, data: bytes
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{url}/v1/sync/push", data=data, headers=_auth(token)) as r:
        return r.status, await r.json()


async def test_a_parked_delta_is_authorized_against_its_own_senders_rights(procs, session, tmp_path):
    """pat may write tenant t1's shared channel only. A change of pat's to a memory also on alice's
    channel is refused by a hub that knows the memory; pushed to a hub that does not know it yet, it
    waits, and when the memory arrives from a rightful writer it is denied, not applied, and never
    replicated on."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    hub_a = _spawn(
        procs,
        tmp_path / "a",
        "hub-a",
        tokens=_tokens(tmp_path / "a", ADMIN, PAT, _relay(HUB_B_TOKEN, "hub-b")),
    )
    tokens_b = _tokens(tmp_path / "b", PAT, _relay(HUB_A_TOKEN, "hub-a"), {**ADMIN, "token": ADMIN_TOKEN})
    hub_b = _spawn(procs, tmp_path / "b", "hub-b", tokens=tokens_b)
    admin_a = Api(session, hub_a.url, ADMIN_TOKEN)
    memory = await admin_a.add("alice's salary review", user_id="alice", tenant_id="t1", shared=True)
    assert sorted(memory["channels"]) == [T1, ALICE]

    async with Replica(None, replica_id="pat-phone") as phone:
        await _pull_into(session, hub_a.url, PAT_TOKEN, phone, [T1])
        await phone.update(memory["id"], content="pat rewrote it")
        mine = [d for d in wire.decode(await phone.export_since(T1)).deltas if d.origin == "pat-phone"]
        change = wire.encode(wire.Payload("pat-phone", mine, {}, phone.keys_for(mine)))
    status, body = await _push(session, hub_a.url, PAT_TOKEN, change)
    assert status == 200 and (body["applied"], body["refused"]) == (0, 1)
    status, body = await _push(session, hub_b.url, PAT_TOKEN, change)
    assert status == 200 and (body["applied"], body["pending"]) == (0, 1)

    # hub-b now syncs with hub-a: the memory arrives from a rightful writer
    hub_b.stop()
    hub_b.peers, hub_b.peer_token, hub_b.channels = [hub_a.url], HUB_B_TOKEN, [T1, ALICE]
    hub_b.start()
    admin_b = Api(session, hub_b.url, ADMIN_TOKEN)

    async def arrived() -> bool:
        got = await admin_b.get(memory["id"])
        return got is not None

    await eventually(arrived, what="the memory on hub-b")
    await Api(session, hub_a.url, ADMIN_TOKEN).patch(memory["id"], content="alice's review, v2")

    async def both_at_v2() -> bool:
        return all(
            [
                (await api.get(memory["id"]) or {}).get("content") == "alice's review, v2"
                for api in (admin_a, admin_b)
            ]
        )

    await eventually(both_at_v2, what="the rightful change everywhere")
    status_b = await admin_b.status()
    assert status_b["pending_deltas"] == 0 and status_b["trust"]["refused"].get("denied", 0) >= 1
    for api in (admin_a, admin_b):
        history = await api.call("GET", f"/v1/memories/{memory['id']}/history")
        assert all(entry["origin"] != "pat-phone" for entry in history["history"])


async def test_a_pull_applies_only_what_the_peers_token_may_write(procs, session, tmp_path):
    """A node pulls from a peer; its tokens file lets that peer write tenant t1 only. What the peer
    serves of alice's channel is not applied, whatever the peer claims."""
    (tmp_path / "x").mkdir()
    (tmp_path / "n").mkdir()
    peer = _spawn(procs, tmp_path / "x", "peer-x")  # open: it serves everything it holds
    api_x = Api(session, peer.url)
    shared = await api_x.add("t1 shared note", tenant_id="t1")
    private = await api_x.add("alice's private note", user_id="alice")
    limited = {
        "token": "peer-x-replica-token-01",
        "principal": "replica:peer-x",
        "read": [T1],
        "write": [T1],
        "origins": ["*"],
    }
    node = _spawn(
        procs,
        tmp_path / "n",
        "node-n",
        tokens=_tokens(tmp_path / "n", ADMIN, limited),
        channels=[T1, ALICE],
        peers=[peer.url],
    )
    api_n = Api(session, node.url, ADMIN_TOKEN)

    async def shared_arrived() -> bool:
        return await api_n.get(shared["id"]) is not None

    await eventually(shared_arrived, what="the t1 memory on the pulling node")
    await api_x.patch(private["id"], content="alice's private note, edited")
    await api_x.add("another t1 note", tenant_id="t1")

    async def refused() -> bool:
        status = await api_n.status()
        # alice's memory is denied; its edit waits for a creation that will never be applied here
        refused = status["trust"]["refused"].get("denied", 0) >= 1 and status["pending_deltas"] == 1
        return refused and len(await api_n.memories()) == 2

    await eventually(refused, what="alice's deltas refused on the pulling node")
    assert await api_n.get(private["id"]) is None
    memories = await api_n.memories()
    assert sorted(m["content"] for m in memories) == ["another t1 note", "t1 shared note"]


async def test_a_push_for_a_memory_the_caller_cannot_see_answers_as_for_none(procs, session, tmp_path):
    """mallory names alice's memory id in a change of her own: the answer is the one for an id the
    hub has never seen, and nothing in it names alice's channels."""
    mallory = {
        "token": MALLORY_TOKEN,
        "principal": "user:mallory",
        "read": ["user:mallory:memories"],
        "write": ["user:mallory:memories"],
        "origins": ["mallory-phone"],
    }
    hub = _spawn(procs, tmp_path, "hub", tokens=_tokens(tmp_path, ADMIN, mallory))
    alices = await Api(session, hub.url, ADMIN_TOKEN).add("alice's secret", user_id="alice")

    async def probe(phone: Replica, memory_id: str) -> tuple[tuple[int, dict[str, Any]], ...]:
        mine = "user:mallory:memories"
        since = phone.version_vectors([mine])
        await phone.add("probe", user_id="mallory", memory_id=memory_id)
        created = phone.version_vectors([mine])
        creation = await phone.export_since(mine, since)
        await phone.update(memory_id, content="probe 2")
        update = await phone.export_since(mine, created)
        return await _push(session, hub.url, MALLORY_TOKEN, update), await _push(
            session, hub.url, MALLORY_TOKEN, creation
        )

    async with Replica(None, replica_id="mallory-phone") as phone:
        (foreign_update, foreign_creation) = await probe(phone, alices["id"])
        (unknown_update, _) = await probe(phone, "never-seen-memory-id")
    assert foreign_update == unknown_update
    assert foreign_update[0] == 200 and foreign_update[1]["pending"] == 1
    assert foreign_creation[0] == 200
    for answer in (foreign_update, foreign_creation):
        assert "alice" not in json.dumps(answer)
    # and alice's memory is untouched
    assert (await Api(session, hub.url, ADMIN_TOKEN).get(alices["id"]))["content"] == "alice's secret"


# -- signatures: a relay forwards, it cannot forge ------------------------------------------------

RELAY_TOKEN = "relay-replica-token-00001"
RELAY = {"token": RELAY_TOKEN, "principal": "replica:relay", "read": [U1], "write": [U1], "origins": ["*"]}


def _retouched(data: bytes, change: Any) -> bytes:
    body = msgpack.unpackb(data, raw=False)
    for delta in body["deltas"]:
        change(delta)
    return bytes(msgpack.packb(body, use_bin_type=True))


async def _laptop_writes(laptop: Replica, *contents: str) -> bytes:
    since = laptop.version_vectors([U1])
    for content in contents:
        await laptop.add(content, user_id="u1")
    return await laptop.export_since(U1, since)


async def test_a_relay_cannot_change_what_an_origin_signed(procs, session, tmp_path):
    """A relay may forward the laptop's deltas; changed in any signed field, or stripped of their
    signature, they are refused and nothing of the laptop's moves on the hub."""
    hub = _spawn(procs, tmp_path, "hub", tokens=_tokens(tmp_path, RELAY, ADMIN))
    async with Replica(None, replica_id="laptop") as laptop:
        genuine = await _laptop_writes(laptop, "laptop note 1", "laptop note 2")
        tampered = {
            "update": _retouched(genuine, lambda d: d.__setitem__(5, d[5].replace(b"note", b"NOTE"))),
            "claim": _retouched(genuine, lambda d: d[6].update({U1: d[6][U1] + 20})),
            "coalesced claim": _retouched(
                genuine,
                lambda d: (d[6].update({U1: d[6][U1] + 20}), d[7].update({U1: list(range(1, d[6][U1]))})),
            ),
            "origin": _retouched(genuine, lambda d: d.__setitem__(1, "relay-made")),
        }
        for what, data in tampered.items():
            status, body = await _push(session, hub.url, RELAY_TOKEN, data)
            assert status in (200, 400), (what, body)
            assert status == 400 or (body["applied"], body["refused"]) == (0, 2), (what, body)
        stripped = _retouched(genuine, lambda d: d.__setitem__(8, None))
        status, body = await _push(session, hub.url, RELAY_TOKEN, stripped)
        assert status == 403 and "unsigned" in body["message"]
        admin = Api(session, hub.url, ADMIN_TOKEN)
        assert (await admin.status())["version_vectors"].get(U1, {}) == {}
        assert await admin.memories() == []
        status, body = await _push(session, hub.url, RELAY_TOKEN, genuine)
        assert (status, body["applied"]) == (200, 2)
        assert sorted(m["content"] for m in await admin.memories()) == ["laptop note 1", "laptop note 2"]


async def test_a_pinned_key_refuses_an_impostor_of_the_same_replica_id(procs, session, tmp_path):
    """The hub pinned the laptop's key on first use; a replica calling itself laptop with another key
    cannot take the laptop's next sequence number, and the real next write still arrives."""
    hub = _spawn(procs, tmp_path, "hub", tokens=_tokens(tmp_path, RELAY, ADMIN))
    async with Replica(None, replica_id="laptop") as laptop, Replica(None, replica_id="laptop") as impostor:
        status, body = await _push(session, hub.url, RELAY_TOKEN, await _laptop_writes(laptop, "first"))
        assert (status, body["applied"]) == (200, 1)
        # the impostor numbers its own deltas 1, 2: it sends 2, the laptop's next one
        forged = wire.decode(await _laptop_writes(impostor, "impostor 1", "impostor 2"))
        assert [d.seqs[U1] for d in forged.deltas] == [1, 2]
        data = wire.encode(dataclasses.replace(forged, deltas=forged.deltas[1:]))
        status, body = await _push(session, hub.url, RELAY_TOKEN, data)
        assert (status, body["applied"], body["refused"]) == (200, 0, 1)
        status, body = await _push(session, hub.url, RELAY_TOKEN, await _laptop_writes(laptop, "second"))
        assert (status, body["applied"]) == (200, 1)
    admin = Api(session, hub.url, ADMIN_TOKEN)
    assert sorted(m["content"] for m in await admin.memories()) == ["first", "second"]
    assert (await admin.status())["trust"]["refused"]["unauthenticated"] == 1


async def test_a_strict_node_takes_signatures_of_listed_keys_only(procs, session, tmp_path):
    async with Replica(None, replica_id="laptop") as laptop, Replica(None, replica_id="ghost") as ghost:
        listed = {"keys": {"laptop": base64.b64encode(laptop.signer.public).decode()}, "trust": "listed"}
        path = _tokens(tmp_path, RELAY, ADMIN)
        path.write_text(json.dumps({**json.loads(path.read_text()), **listed}))
        hub = _spawn(procs, tmp_path, "hub", tokens=path)
        status, body = await _push(session, hub.url, RELAY_TOKEN, await _laptop_writes(ghost, "from nowhere"))
        assert (status, body["applied"], body["refused"]) == (200, 0, 1)
        status, body = await _push(session, hub.url, RELAY_TOKEN, await _laptop_writes(laptop, "listed"))
        assert (status, body["applied"]) == (200, 1)


async def test_signatures_survive_two_lazy_hops_into_a_node_that_takes_no_unsigned_delta(
    procs, session, tmp_path
):
    """laptop -> relay -> hub, both hops lazy (coalescing): the relay forwards the laptop's signed
    deltas untouched (it cannot sign for them), and the hub, which takes no unsigned delta from the
    relay, gets every write."""
    hub = _spawn(procs, tmp_path, "hub", tokens=_tokens(tmp_path, RELAY, ADMIN))
    lazy = ["--mode", "lazy", "--interval", "0.2"]
    relay = _spawn(
        procs, tmp_path, "relay", channels=[U1], peers=[hub.url], peer_token=RELAY_TOKEN, extra=lazy
    )
    laptop = _spawn(procs, tmp_path, "laptop", channels=[U1], peers=[relay.url], extra=lazy)
    api = Api(session, laptop.url)
    first = await api.add("coalesce me", user_id="u1")
    for i in range(5):
        await api.patch(first["id"], content=f"coalesce me {i}")
    await Api(session, relay.url).add("the relay's own", user_id="u1")
    admin = Api(session, hub.url, ADMIN_TOKEN)

    async def arrived() -> bool:
        got = await admin.get(first["id"])
        return got is not None and got["content"] == "coalesce me 4" and len(await admin.memories()) == 2

    await eventually(arrived, what="the laptop's writes on the hub, through the relay")
    assert (await admin.status())["trust"]["refused"] == {}


# -- stubs: a forgotten memory's delta without content needs the memory's signed erase marker -----

VOUCHING_RELAY = {**RELAY, "unsigned": ["*"]}


async def test_a_relay_cannot_replace_a_delta_with_a_stub(procs, session, tmp_path):
    """Even a relay that may vouch for unsigned deltas of every origin cannot make the hub log a
    delta of the laptop's as a content-free stub: without its memory's erase marker the stub is
    refused (over a push: 403, nothing of the payload applied), the hub's vector does not move, and
    the laptop's real delta still arrives. An honest forget (marker and stubs) goes through."""
    hub = _spawn(procs, tmp_path, "hub", tokens=_tokens(tmp_path, VOUCHING_RELAY, ADMIN))
    admin = Api(session, hub.url, ADMIN_TOKEN)
    async with Replica(None, replica_id="laptop") as laptop:
        status, body = await _push(session, hub.url, RELAY_TOKEN, await _laptop_writes(laptop, "keep me"))
        assert (status, body["applied"]) == (200, 1)
        kept = (await admin.memories())[0]
        await laptop.update(kept["id"], content="keep me, edited")
        genuine = await laptop.export_since(U1, {U1: {"laptop": 1}})
        edit = wire.decode(genuine).deltas[0]
        stub = dataclasses.replace(edit, deps=EMPTY_DEPS, update=EMPTY_UPDATE, signature=None)
        status, body = await _push(session, hub.url, RELAY_TOKEN, wire.encode(wire.Payload("relay", [stub])))
        assert status == 403, body
        assert "stub" in body["message"] and "erase marker" in body["message"]
        assert (await admin.status())["version_vectors"][U1] == {"laptop": 1}
        # next to another memory's genuine erase marker, the stub is refused just the same
        secret = await laptop.add("SECRET-TO-FORGET", user_id="u1")
        await laptop.forget(secret.id)
        honest = wire.decode(await laptop.export_since(U1, {U1: {"laptop": 2}}))
        marker = [d for d in honest.deltas if is_marker(d.deps, d.update)]
        mixed = wire.Payload("relay", [*marker, stub], {}, laptop.keys_for(marker))
        status, body = await _push(session, hub.url, RELAY_TOKEN, wire.encode(mixed, 2))
        assert status == 403 and kept["id"] in body["message"], body
        assert (await admin.status())["version_vectors"][U1] == {"laptop": 1}
        # the laptop's real edit arrives and applies (the stub did not take its sequence number)
        status, body = await _push(session, hub.url, RELAY_TOKEN, genuine)
        assert (status, body["applied"]) == (200, 1)
        assert (await admin.get(kept["id"]))["content"] == "keep me, edited"
        # an honest forget: the secret's creation as a stub, with its marker
        assert [is_stub(d.deps, d.update) for d in honest.deltas] == [True, False]
        status, body = await _push(session, hub.url, RELAY_TOKEN, wire.encode(honest, 2))
        assert status == 200 and body["refused"] == 0, body
    assert (await admin.status())["version_vectors"][U1] == {"laptop": 4}
    assert [m["id"] for m in await admin.memories()] == [kept["id"]]
    assert (await admin.status())["trust"]["refused"] == {}


# -- states pages: signed by their server, taken only from a trusted state server -----------------

HUB_STATES = {
    "token": "hub-replica-token-00000001",
    "principal": "replica:hub",
    "read": [U1],
    "write": [U1],
    "origins": ["*"],
    "states": True,
}


async def _folded_hub(procs: list[ServerProcess], tmp: Path, session: aiohttp.ClientSession, rid: str):
    """A node that wrote five facts (one rewritten) and folded its log: peers catch up from states."""
    (tmp / rid).mkdir()
    node = _spawn(procs, tmp / rid, rid, channels=[U1], extra=["--compact-every", "0.3"])
    api = Api(session, node.url)
    ids = [(await api.add(f"{rid} fact {n}", user_id="u1"))["id"] for n in range(5)]
    await api.patch(ids[0], content=f"{rid} fact 0, rewritten")

    async def folded() -> bool:
        return (await api.status())["compaction"]["horizon"].get(U1, {}).get(rid, 0) >= 6

    await eventually(folded, what=f"{rid} folds its log")
    return node, ids


async def _tampering_proxy(target: str, signer: Signer) -> tuple[web.AppRunner, str]:
    """An HTTP relay in front of ``target`` that rewrites every states page it forwards: the first
    state replaced by a forged memory's, the covers raised, signed again with its own key."""
    async with Replica(None, replica_id="hub") as forger:
        forged = await forger.add("FORGED BY THE RELAY", user_id="u1")
        forged_state = forger.store.load_state(forged.id)
    client = aiohttp.ClientSession()

    async def pull(request: web.Request) -> web.Response:
        async with client.post(f"{target}/v1/sync/pull", data=await request.read()) as r:
            data, headers = await r.read(), {k: v for k, v in r.headers.items() if k.startswith("X-Crdtmem")}
            if r.headers.get("X-Crdtmem-States") == "1":
                outer = msgpack.unpackb(data, raw=False)
                body = msgpack.unpackb(outer["body"], raw=False)
                body["states"][0][1] = forged_state
                body["covers"][U1]["hub"] += 1000
                outer["body"] = msgpack.packb(body, use_bin_type=True)
                outer["key"], outer["sig"] = (
                    signer.public,
                    signer.sign_message(page_message("hub", outer["body"])),
                )
                data = msgpack.packb(outer, use_bin_type=True)
            return web.Response(status=r.status, body=data, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/sync/pull", pull)
    app.on_cleanup.append(lambda _: client.close())
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_a_relay_that_alters_a_states_page_is_refused(procs, session, tmp_path):
    """A node behind the hub's horizon pulls through an HTTP relay that rewrites the hub's states
    pages (a forged state, raised covers, its own signature): the node lists the hub's key, so
    it refuses every page and nothing changes; pulling from the hub itself, it catches up."""
    hub, ids = await _folded_hub(procs, tmp_path, session, "hub")
    hub_key = (await Api(session, hub.url).status())["public_key"]
    runner, relay_url = await _tampering_proxy(hub.url, Signer.generate())
    try:
        path = _tokens(tmp_path, ADMIN, HUB_STATES)
        path.write_text(json.dumps({**json.loads(path.read_text()), "keys": {"hub": hub_key}}))
        late = _spawn(procs, tmp_path, "late", channels=[U1], peers=[relay_url], tokens=path)
        admin = Api(session, late.url, ADMIN_TOKEN)

        async def refused() -> bool:
            error = (await admin.status())["peers"][0]["last_error"] or ""
            return "not signed by the key of 'hub' known here" in error

        await eventually(refused, what="the late node refuses the relay's pages")
        status = await admin.status()
        assert status["version_vectors"].get(U1, {}) == {} and await admin.memories() == []
    finally:
        await runner.cleanup()
    late.stop()
    late.peers = [hub.url]
    late.start()

    async def caught_up() -> bool:
        return len(await admin.memories()) == 5

    await eventually(caught_up, what="the late node catches up from the hub's own pages")
    assert (await admin.get(ids[0]))["content"] == "hub fact 0, rewritten"
    assert all(m["content"] != "FORGED BY THE RELAY" for m in await admin.memories())
    assert (await admin.status())["version_vectors"][U1]["hub"] == 6


async def test_a_relay_not_trusted_with_states_cannot_serve_them(procs, session, tmp_path):
    """A relay may forward deltas of every origin, but its tokens entry at the late node does not
    make it a state server: its states pages are refused. Trusted (``"states": true``), the same
    relay catches the node up."""
    relay, ids = await _folded_hub(procs, tmp_path, session, "relay")
    entry = {**HUB_STATES, "principal": "replica:relay", "states": False}
    path = _tokens(tmp_path, ADMIN, entry)
    late = _spawn(procs, tmp_path, "late", channels=[U1], peers=[relay.url], tokens=path)
    admin = Api(session, late.url, ADMIN_TOKEN)

    async def refused() -> bool:
        return 'no "states": true' in ((await admin.status())["peers"][0]["last_error"] or "")

    await eventually(refused, what="the late node refuses states from a relay not trusted with them")
    assert await admin.memories() == []
    late.stop()
    path.write_text(json.dumps({"tokens": [ADMIN, {**entry, "states": True}]}))
    late.start()

    async def caught_up() -> bool:
        return len(await admin.memories()) == 5

    await eventually(caught_up, what="the late node catches up from a trusted state server")
    assert (await admin.get(ids[0]))["content"] == "relay fact 0, rewritten"
