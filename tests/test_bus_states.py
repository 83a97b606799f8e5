"""States requests over the bus (crdtmem.bus.states) are signed by the requesting node, on a real
JetStream server: a request that claims another node is refused with a clear error (counted) and
spends nothing of that node's rate, a signed request is served, and an unsigned one (a build that
did not sign them) is answered only where the bus principal may vouch for its node unsigned, from
a rate bucket of its own."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import nats

from crdtmem import Replica
from crdtmem.access import Principal
from crdtmem.bus import BusClient, BusSettings, Layout
from crdtmem.bus.requests import DOMAIN, sign_request
from crdtmem.bus.states import fetch_states, states_subject
from crdtmem.engine.signing import KeyPolicy
from tests.support.rest import eventually

U1 = "user:u1:memories"
STREAM = "CRDTMEM_USERS"
APPLIES_STATES = Principal("user:bus", ("*",), ("*",), ("*",), (), True)


@asynccontextmanager
async def _fleet(tmp_path: Path, url: str, principal: Principal) -> AsyncIterator[tuple[Any, ...]]:
    """Node a (5 facts of u1, on the bus, 3 requests per node and hardly a refill), node b whose
    key a lists, and x, another client of the bus account; and a NATS connection."""
    b = await Replica(tmp_path / "b.db", replica_id="b").start()
    x = await Replica(tmp_path / "x.db", replica_id="x").start()
    a = Replica(tmp_path / "a.db", replica_id="a")
    assert b.signer is not None
    a.key_policy = KeyPolicy(listed={"b": (b.signer.public,)})
    await a.start()
    for n in range(5):
        await a.add(f"u1 fact {n}", user_id="u1")
    settings = BusSettings([url], principal=principal, request_rate=0.01, request_burst=3.0)
    bus = await BusClient(a, settings).start()
    nc = await nats.connect(url)
    try:
        await eventually(lambda: _serving(bus), what="a on the bus with its stream drained")
        yield a, b, x, bus, nc
    finally:
        await nc.close()
        await bus.stop()
        for replica in (a, b, x):
            await replica.stop()


async def _serving(bus: BusClient) -> bool:
    drained = bus.outbox is not None and bus.outbox.lag() == 0 and bus.caught_up.is_set()
    return bool(bus.ready and bus.states_server is not None and drained)


async def _ask(nc: Any, subject: str, sign: Any) -> dict[str, Any]:
    """One request on ``subject``; ``sign(inbox)`` makes its bytes."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=1)
    await nc.publish(subject, sign(inbox), reply=inbox)
    answer = await sub.next_msg(timeout=10)
    return dict(msgpack.unpackb(answer.data, raw=False))


def _forged(signer_of: Replica, claimed: str, key: bytes, body: dict[str, Any], inbox: str) -> bytes:
    """A request naming node ``claimed`` with ``key``, signed by ``signer_of``'s key."""
    assert signer_of.signer is not None
    full = {**body, "from": claimed, "key": key, "reply": inbox, "on": "states"}
    packed = msgpack.packb(full, use_bin_type=True)
    sig = signer_of.signer.sign_message(DOMAIN + hashlib.sha256(packed).digest())
    return bytes(msgpack.packb({"body": packed, "sig": sig}, use_bin_type=True))


OFFER = {"op": "offer", "stream": STREAM, "channels": None, "need": 1}


async def test_a_forged_claim_is_refused_and_spends_nothing_of_the_real_nodes_rate(tmp_path, nats_server):
    async with _fleet(tmp_path, nats_server.url, Principal("user:bus", ("*",), ("*",), ("*",))) as fleet:
        _a, b, x, bus, nc = fleet
        on_a = states_subject(Layout.of(), "a")
        assert b.signer is not None and x.signer is not None
        for _ in range(10):
            # x's own key under b's name: a lists another key for b
            posed = await _ask(nc, on_a, lambda inbox: _forged(x, "b", x.signer.public, OFFER, inbox))
            assert "AccessDenied: node 'b' signs with another key here" in posed["error"]
            # b's key, x's signature
            stolen = await _ask(nc, on_a, lambda inbox: _forged(x, "b", b.signer.public, OFFER, inbox))
            assert "AccessDenied: the request's signature does not verify" in stolen["error"]
            # no signature at all, under b's name (the bus principal vouches for no node unsigned)
            bare = await _ask(nc, on_a, lambda _inbox: msgpack.packb({**OFFER, "from": "b"}))
            assert "AccessDenied: an unsigned states request naming node 'b'" in bare["error"]
        refused = bus.metrics.value("crdtmem_bus_requests_refused_total", op="offer", reason="AccessDenied")
        assert refused == 20
        unread = bus.metrics.value("crdtmem_bus_requests_refused_total", op="?", reason="AccessDenied")
        assert unread == 10  # a request whose signature fails is not read further
        # b's own requests are served from its untouched budget (3 in a burst): an offer, then a
        # whole fetch (an offer and one page)
        offer = await _ask(nc, on_a, lambda inbox: sign_request(b, OFFER, inbox, on="states"))
        assert offer["replica"] == "a" and offer["floor"] >= 5 and offer["channels"] == [U1]
        covered = await asyncio.wait_for(
            fetch_states(nc, b, Layout.of(), APPLIES_STATES, STREAM, 5, wait=2.0, timeout=10.0), 30
        )
        assert covered >= 5
        assert {m.content for m in await b.list(user_id="u1")} == {f"u1 fact {n}" for n in range(5)}
        assert bus.status()["states_served"] == 1
        assert (
            bus.metrics.value("crdtmem_bus_requests_refused_total", op="offer", reason="TooManyRequests") == 0
        )
        assert (
            bus.metrics.value("crdtmem_bus_requests_refused_total", op="page", reason="TooManyRequests") == 0
        )


async def test_unsigned_requests_only_where_the_principal_vouches_and_from_a_bucket_of_their_own(
    tmp_path, nats_server
):
    vouching = Principal("user:bus", ("*",), ("*",), ("*",), ("x",))
    async with _fleet(tmp_path, nats_server.url, vouching) as fleet:
        _a, _b, x, bus, nc = fleet
        on_a = states_subject(Layout.of(), "a")
        bare = [await _ask(nc, on_a, lambda _inbox: msgpack.packb({**OFFER, "from": "x"})) for _ in range(4)]
        assert [r.get("floor", 0) >= 5 for r in bare[:3]] == [True] * 3  # an older x is still served
        assert "TooManyRequests" in bare[3]["error"]
        # the signed x has a budget of its own, which the unsigned requests naming it did not spend
        signed = await _ask(nc, on_a, lambda inbox: sign_request(x, OFFER, inbox, on="states"))
        assert signed["floor"] >= 5
        other = await _ask(nc, on_a, lambda _inbox: msgpack.packb({**OFFER, "from": "b"}))
        assert "unsigned states request naming node 'b'" in other["error"]
        # a pull request is not a states request, nor is a states request for another inbox
        as_pull = await _ask(nc, on_a, lambda inbox: sign_request(x, OFFER, inbox, on="pull"))
        assert "signed for 'pull', not 'states'" in as_pull["error"]
        elsewhere = await _ask(nc, on_a, lambda _inbox: sign_request(x, OFFER, "_INBOX.other", on="states"))
        assert "signed for another inbox" in elsewhere["error"]
        assert bus.metrics.value("crdtmem_bus_requests_refused_total", op="?", reason="AccessDenied") == 2
