"""Hostile principals against real `crdtmem serve` processes: who may introduce which deltas.

Each test starts the servers it needs (tests/support/processes.py), plays one attack found in a
hostile-input review, and checks that the honest replicas lose nothing and nobody gains a right.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from crdtmem import Replica
from crdtmem.engine import payload as wire
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
    """A payload that creates a memory of user u1, claiming ``origin`` and ``seq`` (and ``also``)."""
    async with Replica(None, replica_id=origin) as forger:
        await forger.add("planted by mallory", user_id="u1")
        payload = wire.decode(await forger.export_since(U1))
    delta = dataclasses.replace(payload.deltas[0], seqs={U1: seq}, also={U1: tuple(also)} if also else {})
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

    await eventually(all_there, timeout=30, what="every acknowledged laptop write on the hub")


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
    """The same token may introduce deltas of the replica id it is bound to."""
    hub, _ = _hub_and_laptop(procs, tmp_path)
    own = await _forged("mallory-phone", seq=1)
    async with session.post(f"{hub.url}/v1/sync/push", data=own, headers=_auth(MALLORY_TOKEN)) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["applied"] == 1
    body = msgpack.packb({"channels": [U1], "vectors": {}, "limit": 10})
    async with session.post(f"{hub.url}/v1/sync/pull", data=body, headers=_auth(MALLORY_TOKEN)) as r:
        assert r.status == 200
        assert wire.decode(await r.read()).vectors[U1] == {"mallory-phone": 1}
