"""States pages are signed by the replica that serves them and taken only from a trusted state
server: an altered page, an impostor's page, a page from a peer not trusted with states, and covers
a puller made up are refused, and nothing of them changes the receiver."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from crdtmem import Replica
from crdtmem.access import AccessDenied, Principal
from crdtmem.engine.statepages import VERSION as STATES_VERSION
from crdtmem.engine.statepages import decode_states
from crdtmem.errors import InvalidInput

U1 = "user:u1:memories"
STATE_SERVER = Principal("replica:a", ("*",), ("*",), ("*",), (), True)
"""The rights a receiver gives replica a in these tests: a relay of every origin, a state server."""


async def _folded(a: Replica, n: int = 3) -> list[str]:
    ids = [(await a.add(f"fact {i}", user_id="u1")).id for i in range(n)]
    await a.update(ids[0], content="fact 0, rewritten")
    a.acknowledged("b", {U1: a.version_vectors([U1])[U1]})
    assert (await a.compact()).folded
    return ids


def _rewrite(page: bytes, change: Any) -> bytes:
    """The page with its signed body changed by ``change`` (the signature left as it was)."""
    outer = msgpack.unpackb(page, raw=False)
    body = msgpack.unpackb(outer["body"], raw=False)
    change(body)
    outer["body"] = msgpack.packb(body, use_bin_type=True)
    return bytes(msgpack.packb(outer, use_bin_type=True))


async def _unchanged(c: Replica) -> None:
    assert c.version_vectors([U1]) == {U1: {}}
    assert await c.list() == []


async def test_a_signed_page_from_a_trusted_server_catches_a_peer_up() -> None:
    async with Replica(replica_id="a") as a, Replica(replica_id="c") as c:
        ids = await _folded(a)
        page = await a.export_since([U1], {})
        assert decode_states(page, max_bytes=1 << 20).version == STATES_VERSION
        result = await c.apply_states(page, sender=STATE_SERVER)
        assert result.applied == len(ids)
        assert c.version_vectors([U1]) == a.version_vectors([U1])
        assert (await c.get(ids[0])).content == "fact 0, rewritten"


@pytest.mark.parametrize(
    "tamper",
    [
        "state",
        "covers",
        "drop a state",
        "server name",
    ],
)
async def test_an_altered_page_is_refused_and_changes_nothing(tamper: str) -> None:
    async with (
        Replica(replica_id="a") as a,
        Replica(replica_id="c") as c,
        Replica(replica_id="forger") as forger,
    ):
        await _folded(a)
        page = await a.export_since([U1], {})
        forged = await forger.add("forged", user_id="u1")
        forged_state = forger.store.load_state(forged.id)
        changes = {
            "state": lambda body: body["states"][0].__setitem__(1, forged_state),
            "covers": lambda body: body["covers"][U1].update({"a": 10_000}),
            "drop a state": lambda body: body["states"].pop(),
        }
        if tamper == "server name":
            outer = msgpack.unpackb(page, raw=False)
            outer["from"] = "hub"
            altered = bytes(msgpack.packb(outer, use_bin_type=True))
        else:
            altered = _rewrite(page, changes[tamper])
        hub = dataclasses.replace(STATE_SERVER, name="replica:hub")
        with pytest.raises(AccessDenied, match="nothing of this states page was applied"):
            await c.apply_states(altered, sender=hub if tamper == "server name" else STATE_SERVER)
        await _unchanged(c)


async def test_an_impostor_of_a_known_server_is_refused() -> None:
    """c knows a's key (pinned from a's deltas); another replica calling itself a signs its page
    with its own key and presents it: refused."""
    async with (
        Replica(replica_id="a") as a,
        Replica(replica_id="a") as impostor,
        Replica(replica_id="c") as c,
    ):
        await a.add("a's own", user_id="u1")
        await c.apply(await a.export_since([U1], {}))  # c pins a's key
        before = c.version_vectors([U1])
        await _folded(impostor)
        with pytest.raises(AccessDenied, match="not signed by the key of 'a' known here"):
            await c.apply_states(await impostor.export_since([U1], {}), sender=STATE_SERVER)
        assert [m.content for m in await c.list()] == ["a's own"] and c.version_vectors([U1]) == before


async def test_only_a_trusted_state_server_may_serve_states() -> None:
    async with Replica(replica_id="a") as a, Replica(replica_id="c") as c:
        await _folded(a)
        page = await a.export_since([U1], {})
        relay = dataclasses.replace(STATE_SERVER, states=False)
        with pytest.raises(AccessDenied, match='no "states": true'):
            await c.apply_states(page, sender=relay)
        await _unchanged(c)
        # an unsigned (version 1) page needs a sender that may vouch for its origins unsigned
        old = await a.export_since([U1], {}, version=1)
        assert decode_states(old, max_bytes=1 << 20).version == 1
        with pytest.raises(AccessDenied, match="unsigned"):
            await c.apply_states(old, sender=STATE_SERVER)
        await _unchanged(c)
        vouching = dataclasses.replace(STATE_SERVER, unsigned=("*",))
        assert (await c.apply_states(old, sender=vouching)).applied == 3


async def test_a_server_signs_no_covers_it_did_not_read() -> None:
    """A puller asking for a later page must send back the first page's covers with their cursor:
    covers of its own making would come back signed by the server."""
    async with Replica(replica_id="a") as a, Replica(replica_id="c") as c:
        ids = await _folded(a, 4)
        first = decode_states(a.export_states([U1], limit=2), max_bytes=1 << 20)
        assert first.next == sorted(ids)[1]
        made_up = {U1: {"a": 10_000, "victim": 500}}
        for cursor in (None, first.cursor):
            with pytest.raises(InvalidInput, match="cursor"):
                a.export_states([U1], after=first.next, covers=made_up, cursor=cursor)
        second = a.export_states([U1], after=first.next, covers=first.covers, cursor=first.cursor)
        await c.apply_states(a.export_states([U1], limit=2), sender=STATE_SERVER)
        await c.apply_states(second, sender=STATE_SERVER)
        assert c.version_vectors([U1]) == a.version_vectors([U1])
        assert sorted(m.id for m in await c.list()) == sorted(ids)


async def test_covers_count_only_origins_the_server_may_relay_and_never_the_receivers_own() -> None:
    async with Replica(replica_id="a") as a, Replica(replica_id="c") as c:
        await c.add("c's own", user_id="u1")
        await a.apply(await c.export_since([U1], {}))
        await _folded(a)
        own_before = c.version_vectors([U1])[U1]["c"]
        only_a = dataclasses.replace(STATE_SERVER, origins=())  # replica:a may introduce only itself
        await c.apply_states(await a.export_since([U1], {}), sender=only_a)
        assert c.version_vectors([U1])[U1] == {"a": a.version_vectors([U1])[U1]["a"], "c": own_before}


T1 = "topic:t1:updates"
PARTIAL_SERVER = Principal("replica:p", ("*",), ("*",), ("*",), ("*",), True)


async def test_a_partial_server_covers_its_own_entries_on_channels_it_does_not_sync() -> None:
    """p syncs only the topic channel of a memory also on a user channel, and logs its writes on
    both. A page run of every channel p syncs covers p's own entries on the user channel too;
    a run of fewer channels, a full server, and other origins claimed there add nothing."""
    async with (
        Replica(replica_id="p", channels=[T1]) as p,
        Replica(replica_id="p2", channels=[T1, "system:global"]) as p2,
        Replica(replica_id="c") as c,
    ):
        memory = await p.add("p's fact", user_id="u1", topics=["t1"])
        await p.update(memory.id, content="p's fact, rewritten")
        page = decode_states(p.export_states([T1]), max_bytes=1 << 20)
        assert page.covers == {T1: {"p": 2}, U1: {"p": 2}}
        await p2.add("p2's fact", user_id="u1", topics=["t1"])
        assert U1 not in decode_states(p2.export_states([T1]), max_bytes=1 << 20).covers
        await c.apply_states(p.export_states([T1]), sender=PARTIAL_SERVER)
        assert c.version_vectors([U1, T1]) == {U1: {"p": 2}, T1: {"p": 2}}
        assert (await c.get(memory.id)).content == "p's fact, rewritten"
        assert set(decode_states(c.export_states([T1]), max_bytes=1 << 20).covers) == {T1}  # a full server

    async with Replica(replica_id="c") as c:  # an unsigned page claiming another origin there
        made_up = {
            "format": "crdtmem.states",
            "v": 1,
            "from": "p",
            "channels": [T1],
            "states": [],
            "covers": {T1: {"p": 1}, U1: {"p": 1, "victim": 7}},
            "next": None,
            "markers": [],
        }
        await c.apply_states(msgpack.packb(made_up, use_bin_type=True), sender=PARTIAL_SERVER)
        assert c.version_vectors([U1, T1]) == {U1: {"p": 1}, T1: {"p": 1}}
