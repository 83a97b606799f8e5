"""Ids as apps have them (e-mail addresses, prefixed ids, spaces, slashes) through real `crdtmem serve`
processes: a tokens file written the way people write it, channels given on the command line
unescaped, REST paths and filters, and sync between two nodes."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.processes import ServerProcess
from tests.support.rest import Api, eventually

ALICE = "alice@example.com"
ORG_ALICE = "org:alice"
ALICE_TOKEN = "alice-token-0123456789"
ORG_TOKEN = "org-alice-token-0123456789"
PEER_TOKEN = "device-peer-token-0123456789"

# As people write it: plain ids in channel names, ':' in an id unescaped, a topic with a space.
TOKENS_FILE = """{"tokens": [
  {"token": "alice-token-0123456789", "principal": "user:alice@example.com",
   "read": ["user:alice@example.com:memories"], "write": ["user:alice@example.com:memories"]},
  {"token": "org-alice-token-0123456789", "principal": "user:org:alice",
   "read": ["user:org:alice:memories", "topic:moving house:updates"],
   "write": ["user:org:alice:memories", "topic:moving house:updates"]},
  {"token": "device-peer-token-0123456789", "principal": "replica:device",
   "read": ["user:*:memories", "topic:*:updates"], "write": ["user:*:memories", "topic:*:updates"]}
]}
"""


def path(memory_id: str, suffix: str = "") -> str:
    return f"/v1/memories/{urllib.parse.quote(memory_id, safe='')}{suffix}"


async def get(
    session: aiohttp.ClientSession, url: str, where: str, token: str | None = None, **query: str
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url + where, params=query, headers=headers) as response:
        return response.status, await response.json()


async def test_ids_as_apps_have_them_sync_between_two_nodes_and_tokens_grant_them(
    procs: list[ServerProcess], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(TOKENS_FILE)
    hub = ServerProcess(tmp_path, "hub", tokens=tokens)
    procs.append(hub.start())
    device = ServerProcess(
        tmp_path,
        "device",
        peers=[hub.url],
        peer_token=PEER_TOKEN,
        channels=[f"user:{ALICE}:memories", f"user:{ORG_ALICE}:memories", "topic:moving house:updates"],
    )
    procs.append(device.start())
    on_device = Api(session, device.url)

    home = await on_device.add(
        {"city": "Lyon", "floor": 3},
        user_id=ORG_ALICE,
        topics=["moving house"],
        agent_id="agent:planner",
        session_id="run 42",
        id="notes/alice:home",
    )
    assert home["id"] == "notes/alice:home"
    assert home["channels"] == ["topic:moving%20house:updates", "user:org%3Aalice:memories"]
    mail = await on_device.add("Prefers e-mail digests", kind="preference", user_id=ALICE)

    hub_alice = Api(session, hub.url, ALICE_TOKEN)
    hub_org = Api(session, hub.url, ORG_TOKEN)

    async def arrived() -> bool:
        return await hub_org.get(home["id"]) is not None and await hub_alice.get(mail["id"]) is not None

    await eventually(arrived, what="device -> hub")
    assert (await hub_org.get(home["id"]))["content"] == {"city": "Lyon", "floor": 3}
    # each token reads its own user's memories only: the other's is as missing as a missing one
    assert await hub_alice.get(home["id"]) is None
    assert await hub_org.get(mail["id"]) is None
    status, body = await get(session, hub.url, "/v1/memories", ORG_TOKEN, user_id=ORG_ALICE)
    assert status == 200 and [m["id"] for m in body["memories"]] == [home["id"]]

    # a write on the hub through the token comes back to the device, under its path-unsafe id
    changed = await hub_org.patch(home["id"], content={"city": "Paris", "floor": 3})
    assert changed["content"]["city"] == "Paris"

    async def back() -> bool:
        memory = await on_device.get(home["id"])
        return memory is not None and memory["content"]["city"] == "Paris"

    await eventually(back, what="hub -> device")
    status, history = await get(session, device.url, path(home["id"], "/history"))
    assert status == 200 and [h["content"]["city"] for h in history["history"]] == ["Lyon", "Paris"]

    # the hub's own vectors are keyed by the escaped names the device logged under
    status, hub_status = await get(session, hub.url, "/v1/status", ORG_TOKEN)
    assert status == 200
    assert "user:org%3Aalice:memories" in json.dumps(hub_status)
