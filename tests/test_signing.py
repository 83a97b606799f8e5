"""Deltas signed at their origin (crdtmem/engine/signing.py): what is signed, what breaks it, keys
that outlive a process, coalescing that keeps a signature, and keys listed in a tokens file."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from crdtmem import InvalidInput, Replica
from crdtmem.access import OPEN, Principal, TokenTable
from crdtmem.engine import payload as wire
from crdtmem.engine.coalesce import coalesce
from crdtmem.engine.signing import Keyring, Signer, verify
from crdtmem.engine.trust import authenticate
from crdtmem.store.base import DeltaRecord, Signature
from crdtmem.store.codec import decode_delta, delta_from_list, delta_to_list, encode_delta

U1 = "user:u1:memories"
T1 = "topic:t1:updates"
RELAY = Principal("replica:relay", ("*",), ("*",), ("*",))


async def _signed(tmp: Path | None = None, n: int = 3) -> tuple[Replica, list[DeltaRecord]]:
    replica = await Replica(tmp / "a.db" if tmp else None, replica_id="a").start()
    memory = await replica.add("v0", user_id="u1", topics=["t1"])
    for i in range(1, n):
        await replica.update(memory.id, content=f"v{i}")
    return replica, replica.store.deltas_since([U1], {})


async def test_a_local_delta_is_signed_over_its_claim_on_every_channel() -> None:
    replica, deltas = await _signed()
    try:
        assert replica.signer is not None
        for delta in deltas:
            assert delta.signature is not None
            assert delta.signature.seqs.keys() == {U1, T1}  # a page of U1 still carries the whole claim
            assert delta.seqs.keys() == {U1}
            assert verify(replica.signer.public, delta)
    finally:
        await replica.stop()


@pytest.mark.parametrize(
    "change",
    [
        {"uid": "a:001700000000000.000000"},
        {"origin": "b"},
        {"doc_id": "other"},
        {"hlc": "001700000000000.000000"},
        {"deps": b"\x01\x01\x01"},
        {"update": b"\x00\x00"},
    ],
    ids=lambda c: next(iter(c)),
)
async def test_changing_any_signed_field_breaks_the_signature(change: dict[str, object]) -> None:
    replica, deltas = await _signed()
    await replica.stop()
    assert replica.signer is not None
    assert not verify(replica.signer.public, dataclasses.replace(deltas[1], **change))  # type: ignore[arg-type]


async def test_changing_the_claim_breaks_the_signature_and_a_page_cannot_claim_more() -> None:
    replica, deltas = await _signed()
    await replica.stop()
    assert replica.signer is not None and deltas[1].signature is not None
    signed = deltas[1].signature
    for claim in (
        dataclasses.replace(signed, seqs={**signed.seqs, U1: 40}),
        dataclasses.replace(signed, also={U1: (1,)}),
        dataclasses.replace(signed, seqs={U1: signed.seqs[U1]}),
    ):
        assert not verify(replica.signer.public, dataclasses.replace(deltas[1], signature=claim))
    keyring = Keyring("hub", b"\x00" * 32, {"a": (replica.signer.public,)})
    more = dataclasses.replace(deltas[1], seqs={U1: 40})
    out = authenticate([deltas[1], more], RELAY, "hub", keyring)
    assert out.accepted == [deltas[1]]
    assert "did not sign" in out.refused[0][1]


async def test_the_wire_and_the_store_keep_a_signature_and_its_claim() -> None:
    replica, deltas = await _signed()
    await replica.stop()
    delta = deltas[0]
    assert delta.signature is not None
    on_wire = delta_from_list(delta_to_list(delta, 2), 2)
    assert delta.signature.header is not None  # the header signature travels in the payload's headers
    assert on_wire.signature == dataclasses.replace(delta.signature, header=None)
    assert on_wire.seqs == delta.signature.seqs
    assert delta_from_list(delta_to_list(delta, 1)).signature is None  # version 1 readers: unsigned
    assert decode_delta(encode_delta(delta)) == delta
    payload = wire.decode(wire.encode(wire.Payload("a", deltas, {}, replica.keys_for(deltas))))
    assert replica.signer is not None and payload.keys == {"a": replica.signer.public}
    assert [d.signature for d in payload.deltas] == [d.signature for d in deltas]
    assert len(wire.decode(wire.encode(wire.Payload("a", deltas), 1)).keys) == 0


async def test_the_signing_key_outlives_the_process_and_the_yrs_client_id_does_not(tmp_path: Path) -> None:
    replica, _ = await _signed(tmp_path, n=1)
    assert replica.signer is not None
    key, client = replica.signer.public, replica._work.client_id
    await replica.stop()
    again = await Replica(tmp_path / "a.db").start()
    try:
        assert again.signer is not None and again.signer.public == key
        assert again._work.client_id != client
        (delta,) = again.store.deltas_since([U1], {})
        assert verify(key, delta)  # stored signatures survive the restart
    finally:
        await again.stop()


async def test_a_replica_coalesces_and_signs_its_own_runs_never_another_origins() -> None:
    replica, deltas = await _signed(n=4)
    try:
        assert replica.signer is not None
        (merged,) = coalesce(deltas, replica.id, replica.signer)
        assert merged.signature is not None and verify(replica.signer.public, merged)
        assert merged.signature.seqs == {U1: 4, T1: 4} and merged.signature.also == {
            U1: (1, 2, 3),
            T1: (1, 2, 3),
        }
        assert coalesce(deltas, "relay", Signer.generate()) == deltas  # a relay cannot sign for "a"
        assert len(coalesce(deltas)) == len(deltas)
        async with Replica(None, replica_id="b") as b:
            result = await b.apply(wire.encode(wire.Payload("a", [merged], {}, replica.keys_for([merged]))))
            assert result.applied == 1 and b.version_vector(U1) == {"a": 4}
    finally:
        await replica.stop()


async def test_first_use_pins_a_key_and_listed_keys_decide_alone() -> None:
    replica, deltas = await _signed(n=2)
    await replica.stop()
    assert replica.signer is not None
    good, other = replica.signer.public, Signer.generate().public
    pinned: dict[str, bytes] = {}
    keyring = Keyring("hub", b"\x00" * 32, save_pin=pinned.__setitem__, load_pin=pinned.get)
    out = authenticate(deltas[:1], RELAY, "hub", keyring, {"a": good})
    assert out.accepted and pinned == {"a": good}
    assert authenticate(deltas[1:], RELAY, "hub", keyring, {"a": other}).accepted  # the pinned key decides
    listed = Keyring("hub", b"\x00" * 32, {"a": (other,)})
    assert not authenticate(deltas, RELAY, "hub", listed, {"a": good}).accepted
    strict = Keyring("hub", b"\x00" * 32, strict=True)
    assert "trusts listed keys only" in authenticate(deltas, RELAY, "hub", strict, {"a": good}).refused[0][1]
    # unsigned: only from a sender allowed to deliver that origin unsigned
    bare = [dataclasses.replace(d, signature=None) for d in deltas]
    assert not authenticate(bare, RELAY, "hub", keyring).accepted
    assert authenticate(bare, OPEN, "hub", keyring).accepted
    forged = [dataclasses.replace(deltas[0], signature=Signature(b"\x01" * 64, dict(deltas[0].seqs)))]
    assert not authenticate(forged, OPEN, "hub", keyring).accepted  # a bad signature, whoever vouches


def test_the_tokens_file_lists_keys_and_the_strict_mode() -> None:
    key = base64.b64encode(Signer.generate().public).decode()
    entry = {"token": "t" * 20, "principal": "replica:hub"}
    table = TokenTable.from_json(
        {"tokens": [entry], "keys": {"laptop": key, "phone": [key, key]}, "trust": "listed"}
    )
    assert table.strict_keys and table.keys["phone"] == (base64.b64decode(key),) * 2
    assert TokenTable.from_json(table.to_json()).keys == table.keys
    for bad, message in [
        ({"keys": {"laptop": "not base64!"}}, "is not the base64 of a 32-byte Ed25519 public key"),
        ({"keys": {"laptop": base64.b64encode(b"short").decode()}}, "32-byte"),
        ({"keys": {"lap top": key}}, "replica id"),
        ({"trust": "everyone"}, 'trust must be "first-use"'),
        ({"token": "x"}, "unknown field"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            TokenTable.from_json({"tokens": [entry], **bad})


async def test_a_batch_shared_among_worker_threads_decides_each_delta_as_one_by_one(monkeypatch) -> None:
    """A batch's signatures are verified on several worker threads at once, each a part of the
    batch: every pair is verified once, on a thread that is not the loop's, and a forged delta in
    any part is refused alone."""
    import threading

    from crdtmem.engine import trust

    monkeypatch.setattr(trust, "VERIFY_THREADS", 3)
    async with Replica(None, replica_id="a") as origin:
        for i in range(3 * trust.SHARE_AT_LEAST + 2):
            await origin.add(f"fact {i}", user_id="u1", memory_id=f"f{i}")
        deltas = origin.store.deltas_since([U1], {})
        keys = origin.keys_for(deltas)
    forged_at = {1, len(deltas) // 2, len(deltas) - 1}  # one in each part
    batch = [
        dataclasses.replace(d, signature=dataclasses.replace(d.signature, sig=b"\x01" * 64))
        if i in forged_at and d.signature is not None
        else d
        for i, d in enumerate(deltas)
    ]
    parts = trust.shares([(b"k", d) for d in batch])
    assert len(parts) == 3 and [p for part in parts for _, p in part] == batch
    verified_on: list[tuple[int, int]] = []
    real = trust.verify_pairs

    def watched(pairs):  # type: ignore[no-untyped-def]
        verified_on.append((threading.get_ident(), len(pairs)))
        return real(pairs)

    monkeypatch.setattr(trust, "verify_pairs", watched)
    async with Replica(None, replica_id="hub") as hub:
        result = await hub.apply_payload(wire.Payload("a", batch, {}, keys), sender=RELAY, isolate=True)
        assert len(verified_on) == 3 and sum(n for _, n in verified_on) == len(batch)
        assert threading.get_ident() not in {thread for thread, _ in verified_on}
        assert (result.applied, result.unauthenticated) == (len(batch) - 3, 3)
        forged_ids = {batch[i].doc_id for i in forged_at}
        assert {m.id for m in await hub.list()} == {d.doc_id for d in batch} - forged_ids


async def test_a_batch_has_its_signatures_verified_on_a_worker_thread_with_the_same_decisions(
    monkeypatch,
) -> None:
    """Many deltas at once: the cryptography runs on a worker thread first, and every decision is
    the one verifying them one by one gives (a forged delta among them is refused alone)."""
    import threading

    from crdtmem.engine import trust

    async with Replica(None, replica_id="a") as origin:
        for i in range(trust.VERIFY_ON_THREAD + 4):
            await origin.add(f"fact {i}", user_id="u1", memory_id=f"f{i}")
        deltas = origin.store.deltas_since([U1], {})
        keys = origin.keys_for(deltas)
    signed = deltas[3].signature
    assert signed is not None
    forged = dataclasses.replace(deltas[3], signature=dataclasses.replace(signed, sig=b"\x01" * 64))
    batch = [*deltas[:3], forged, *deltas[4:]]
    threads: list[str] = []
    real = trust.verify_pairs

    def watched(pairs):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return real(pairs)

    monkeypatch.setattr(trust, "verify_pairs", watched)
    async with Replica(None, replica_id="hub") as hub:
        result = await hub.apply_payload(wire.Payload("a", batch, {}, keys), sender=RELAY, isolate=True)
        assert threads and threads[0] != threading.main_thread().name
        assert (result.applied, result.unauthenticated) == (len(batch) - 1, 1)
        assert {m.id for m in await hub.list()} == {f"f{i}" for i in range(len(batch))} - {"f3"}
    one_by_one = authenticate(batch, RELAY, "hub", Keyring("hub", b"\x00" * 32), keys)
    assert [d.uid for d in one_by_one.accepted] == [d.uid for d in batch if d is not forged]
