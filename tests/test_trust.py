"""Who may introduce which deltas (crdtmem/engine/trust.py, the origins of crdtmem/access.py).

The property at the end is the trust model's vector rule: whatever a sender pushes (any origins,
any sequence numbers, any ``also``), a receiver's version vector never claims an entry it did not
receive from someone entitled to it and store, and no origin the sender may not introduce moves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtmem import InvalidInput, Replica
from crdtmem.access import OPEN, Principal, TokenTable
from crdtmem.engine import payload as wire
from crdtmem.engine.trust import authenticate, refusal
from crdtmem.store.base import DeltaRecord

U1 = "user:u1:memories"
T1 = "tenant:t1:shared"
DEVICE = Principal("user:mallory", (U1,), (U1,), ("mallory-phone",), ("mallory-phone",))


def _entry(**fields: object) -> dict[str, object]:
    return {"token": "t" * 24, "principal": "user:web", "read": [U1], "write": [U1], **fields}


def test_tokens_file_binds_origins_and_unsigned_with_clear_errors() -> None:
    table = TokenTable.from_json({"tokens": [_entry(origins=["web-1"], unsigned=["web-1"])]})
    (web,) = table.entries.values()
    assert web.may_introduce("web-1") and web.may_introduce_unsigned("web-1")
    assert not web.may_introduce("laptop") and not web.may_introduce_unsigned("laptop")
    assert TokenTable.from_json(table.to_json()).entries == table.entries

    for fields, message in [
        ({"origins": "web-1"}, "origins must be a list of replica ids"),
        ({"origins": ["web 1"]}, "origins: replica id"),
        ({"unsigned": ["laptop"]}, "'laptop' is not an origin this token may introduce"),
        ({"origins": ["web-1"], "unsigned": ["*"]}, "'*' is not an origin"),
        ({"orgins": ["web-1"]}, "unknown field(s) 'orgins'"),
    ]:
        with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
            TokenTable.from_json({"tokens": [_entry(**fields)]})


def test_a_replica_principal_introduces_its_own_id_and_what_it_relays() -> None:
    hub = Principal("replica:hub-b", ("*",), ("*",), ("laptop",))
    assert hub.may_introduce("hub-b") and hub.may_introduce("laptop") and not hub.may_introduce("phone")
    relay = Principal("replica:hub-c", ("*",), ("*",), ("*",))
    assert relay.may_introduce("anyone") and not relay.may_introduce_unsigned("anyone")
    assert OPEN.may_introduce("anyone") and OPEN.may_introduce_unsigned("anyone")


def test_rights_of_a_principal_are_all_its_tokens_together() -> None:
    table = TokenTable.from_json(
        {
            "tokens": [
                {"token": "a" * 20, "principal": "replica:hub", "read": [U1], "origins": ["x"]},
                {"token": "b" * 20, "principal": "replica:hub", "read": [T1], "write": [T1]},
            ]
        }
    )
    rights = table.rights_of("replica:hub")
    assert rights is not None
    assert rights.read == (U1, T1) and rights.write == (T1,) and rights.origins == ("x",)
    assert table.rights_of("replica:nobody") is None
    assert rights.fingerprint != dataclasses.replace(rights, write=()).fingerprint


def test_authenticate_refuses_foreign_and_own_origins() -> None:
    def delta(origin: str) -> DeltaRecord:
        return DeltaRecord(f"{origin}:1", origin, "m", "1", b"\x00", b"", (U1,), {U1: 1})

    sorted_out = authenticate([delta("mallory-phone"), delta("laptop"), delta("hub")], DEVICE, "hub")
    assert [d.origin for d in sorted_out.accepted] == ["mallory-phone"]
    assert [d.origin for d, _ in sorted_out.refused] == ["laptop", "hub"]
    assert "may not introduce deltas of origin 'laptop'" in sorted_out.refused[0][1]
    assert refusal("hub", OPEN, "hub") == "a delta of this replica's own origin 'hub' that it does not hold"


async def _made_by(origin: str, n: int, tmp: Path) -> list[DeltaRecord]:
    async with Replica(tmp / f"{origin}.db", replica_id=origin, synchronous="OFF") as maker:
        for i in range(n):
            await maker.add(f"{origin} {i}", user_id="u1")
        return wire.decode(await maker.export_since(U1)).deltas


def _vectors_claim_only_stored_entries(db: Path) -> None:
    """Every (channel, origin, seq) a stored vector claims is a logged entry of a stored delta."""
    conn = sqlite3.connect(db)
    try:
        for channel, origin, top in conn.execute("SELECT channel, origin, seq FROM vv"):
            stored = {
                seq
                for (seq,) in conn.execute(
                    "SELECT l.seq FROM log l JOIN deltas d ON d.id = l.delta_id "
                    "WHERE l.channel = ? AND l.origin = ? AND l.seq <= ?",
                    (channel, origin, top),
                )
            }
            assert stored == set(range(1, top + 1)), (channel, origin, top)
    finally:
        conn.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    claims=st.lists(
        st.tuples(
            st.sampled_from(["laptop", "hub", "mallory-phone"]),
            st.integers(1, 30),
            st.lists(st.integers(1, 29), max_size=25),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_no_payload_makes_a_vector_claim_what_was_not_received(tmp_path_factory, claims) -> None:
    tmp = tmp_path_factory.mktemp("vv")

    async def run() -> None:
        laptop = await _made_by("laptop", 3, tmp)
        templates = await _made_by("template", len(claims), tmp)
        async with Replica(tmp / "hub.db", replica_id="hub", synchronous="OFF") as hub:
            await hub.add("the hub's own", user_id="u1")
            await hub.apply(wire.encode(wire.Payload("laptop", laptop)))
            before = hub.version_vector(U1)
            forged = []
            for template, (origin, seq, also) in zip(templates, claims, strict=True):
                hlc = template.hlc
                covered = tuple(sorted({s for s in also if s < seq}))
                forged.append(
                    dataclasses.replace(
                        template,
                        uid=f"{origin}:{hlc}",
                        origin=origin,
                        seqs={U1: seq},
                        also={U1: covered} if covered else {},
                    )
                )
            result = await hub.apply_payload(
                wire.Payload("mallory-phone", forged), sender=DEVICE, isolate=True
            )
            after = hub.version_vector(U1)
            assert {o: s for o, s in after.items() if o != "mallory-phone"} == before
            # refused unless a duplicate of what the hub holds (then nothing new is claimed either)
            assert result.unauthenticated + result.duplicates >= sum(
                d.origin != "mallory-phone" for d in forged
            )
        _vectors_claim_only_stored_entries(tmp / "hub.db")

    asyncio.run(run())
