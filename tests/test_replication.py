"""Replication between real `crdtmem serve` processes on loopback.

Topologies are built from ServerProcess (tests/support/processes.py); writes and reads go through the
REST API; convergence compares every replica's materialized memories and conflict sets.
"""

from __future__ import annotations

import json
from pathlib import Path

from crdtmem import Replica
from tests.support.processes import ServerProcess
from tests.support.rest import Api, converged, eventually

U1 = "user:u1:memories"


def spawn(procs: list[ServerProcess], tmp: Path, rid: str, **kw: object) -> ServerProcess:
    proc = ServerProcess(tmp, rid, **kw)  # type: ignore[arg-type]
    procs.append(proc.start())
    return proc


async def test_two_replicas_write_on_one_readable_on_other(procs, session, tmp_path):
    a = spawn(procs, tmp_path, "a", channels=[U1])
    b = spawn(procs, tmp_path, "b", channels=[U1], peers=[a.url])
    api_a, api_b = Api(session, a.url), Api(session, b.url)

    m = await api_a.add("User prefers dark mode", kind="preference", user_id="u1")
    await eventually(lambda: _has(api_b, m["id"], "User prefers dark mode"), what="a -> b")
    n = await api_b.add("User lives in Lisbon", user_id="u1")
    await eventually(lambda: _has(api_a, n["id"], "User lives in Lisbon"), what="b -> a")
    await eventually(lambda: converged([api_a, api_b]), what="convergence")


async def test_multi_hop_conflict_flagged_everywhere_and_resolution_replicates(procs, session, tmp_path):
    hub = spawn(procs, tmp_path, "hub", channels=[U1])
    a = spawn(procs, tmp_path, "a", channels=[U1], peers=[hub.url])
    b = spawn(procs, tmp_path, "b", channels=[U1], peers=[hub.url])
    apis = [Api(session, p.url) for p in (hub, a, b)]
    _, api_a, api_b = apis

    m = await api_a.add("tea", kind="preference", user_id="u1")
    await eventually(lambda: _has(api_b, m["id"], "tea"), what="a -> hub -> b")

    # make the writes concurrent: b goes offline, both write, b comes back
    b.stop()
    await api_a.patch(m["id"], content="coffee")
    await _offline_write(b, m["id"], "mate")
    b.start()
    await eventually(lambda: converged(apis), what="convergence after b reconnects")
    conflicts = await api_a.conflicts()
    assert [c["field"] for c in conflicts] == ["content"]
    assert sorted(v["value"] for v in conflicts[0]["values"]) == ["coffee", "mate"]
    for api in apis:
        assert await api.conflicts() == conflicts

    await apis[0].call("POST", f"/v1/memories/{m['id']}/resolve", {"field": "content", "value": "mate"})

    async def cleared() -> bool:
        remaining = [await api.conflicts() for api in apis]
        return not any(remaining) and await converged(apis)

    await eventually(cleared, what="resolution on every replica")
    assert (await api_b.get(m["id"]))["content"] == "mate"


async def test_offline_device_catches_up_without_losing_writes(procs, session, tmp_path):
    a = spawn(procs, tmp_path, "a", channels=[U1])
    b = spawn(procs, tmp_path, "b", channels=[U1], peers=[a.url])
    phone = spawn(procs, tmp_path, "phone", channels=[U1], peers=[a.url])
    apis = [Api(session, p.url) for p in (a, b, phone)]
    api_a, api_b, _ = apis

    items = await api_a.add(["start"], kind="list", user_id="u1")
    await eventually(lambda: converged(apis), what="initial sync")
    phone.stop()
    acked = ["start"]
    for i in range(20):
        await (api_a if i % 2 else api_b).patch(items["id"], add_items=[f"online-{i}"])
        acked.append(f"online-{i}")
    offline = [f"offline-{i}" for i in range(10)]
    async with Replica(phone.db, replica_id="phone") as device:
        for item in offline:
            await device.add_items(items["id"], item)
        await device.add("written offline", user_id="u1")
    phone.start()
    await eventually(lambda: converged(apis), what="phone catches up")
    for api in apis:
        memory = await api.get(items["id"])
        assert set(memory["content"]) == set(acked + offline)
    statuses = [await api.status() for api in apis]
    assert all(s["version_vectors"][U1] == statuses[0]["version_vectors"][U1] for s in statuses)


async def test_partial_replication_only_subscribed_channels(procs, session, tmp_path):
    hub = spawn(procs, tmp_path, "hub")
    u2 = "user:u2:memories"
    c = spawn(procs, tmp_path, "c", channels=[u2], peers=[hub.url])
    api_hub, api_c = Api(session, hub.url), Api(session, c.url)
    private = await api_hub.add("u1's secret", user_id="u1")
    shared = await api_hub.add("u2's note", user_id="u2")
    await eventually(lambda: _has(api_c, shared["id"], "u2's note"), what="u2 memory on c")
    # a barrier, not a pause: had u1 been replicated to c, its delta (committed first) would have
    # gone out on the same link before this one
    barrier = await api_hub.add("u2's second note", user_id="u2")
    await eventually(lambda: _has(api_c, barrier["id"], "u2's second note"), what="the barrier on c")
    assert await api_c.get(private["id"]) is None
    assert U1 not in (await api_c.status())["version_vectors"]


async def _has(api: Api, memory_id: str, content: object) -> bool:
    memory = await api.get(memory_id)
    return memory is not None and memory["content"] == content


async def _offline_write(proc: ServerProcess, memory_id: str, content: str) -> None:
    async with Replica(proc.db, replica_id=proc.replica_id) as replica:
        await replica.update(memory_id, content=content)


async def test_authenticated_replication_between_two_nodes(procs, session, tmp_path):
    """A hub serving with tokens and a laptop syncing to it with ``--peer-token``
    (``PeerConfig(token=)``): both directions replicate. A node with a wrong token gets nothing and
    gives nothing, its status says why, and its own writes go on."""
    laptop_token = "laptop-replica-token-0001"
    agent_token = "u1-agent-token-000000001"
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {"token": laptop_token, "principal": "replica:laptop", "read": [U1], "write": [U1]},
                    {"token": agent_token, "principal": "user:agent", "read": [U1], "write": [U1]},
                ]
            }
        )
    )
    hub = spawn(procs, tmp_path, "hub", channels=[U1], tokens=tokens)
    laptop = spawn(procs, tmp_path, "laptop", channels=[U1], peers=[hub.url], peer_token=laptop_token)
    api_hub, api_laptop = Api(session, hub.url, agent_token), Api(session, laptop.url)

    from_laptop = await api_laptop.add("written on the laptop", user_id="u1")
    await eventually(lambda: _has(api_hub, from_laptop["id"], "written on the laptop"), what="laptop -> hub")
    from_hub = await api_hub.add("written on the hub", user_id="u1")
    await eventually(lambda: _has(api_laptop, from_hub["id"], "written on the hub"), what="hub -> laptop")
    peer = (await api_laptop.status())["peers"][0]
    assert peer["connected"] and peer["peer_id"] == "hub"

    elsewhere = tmp_path / "impostor"
    elsewhere.mkdir()
    impostor = spawn(
        procs, elsewhere, "laptop", channels=[U1], peers=[hub.url], peer_token="not-the-laptop-token-000"
    )
    api_impostor = Api(session, impostor.url)

    async def refused() -> bool:
        peers = (await api_impostor.status())["peers"]
        return "HTTP 401" in str(peers[0]["last_error"])

    await eventually(refused, what="the wrong token is refused")
    kept = await api_impostor.add("stays local", user_id="u1")
    barrier = await api_laptop.add("after the impostor's write", user_id="u1")  # laptop -> hub still flows
    await eventually(lambda: _has(api_hub, barrier["id"], "after the impostor's write"), what="barrier")
    assert await api_hub.get(kept["id"]) is None
    assert [m["id"] for m in await api_impostor.memories()] == [kept["id"]]
    assert not (await api_impostor.status())["peers"][0]["connected"]
