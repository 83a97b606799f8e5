"""Which inbound deltas are authentic: the sender is entitled to introduce each delta's origin,
and the origin signed it (or the sender may vouch for it unsigned).

A delta's origin and its sequence numbers decide what every receiver's version vector claims, so a
delta whose origin its sender may not speak for is never applied, logged or parked: it is refused
and counted, and nothing about that origin changes here (``DESIGN.md``, trust model). The rights
come from the sender (:class:`~crdtmem.access.Principal`: a token's ``origins`` and ``unsigned``); a
payload handed to the engine without one is vouched for by its caller (:data:`~crdtmem.access.OPEN`).

A signed delta must verify against its origin's key (:class:`~crdtmem.engine.signing.Keyring`), and
the sequence numbers it is delivered with must be among those its origin signed: a relay forwards
signed deltas but cannot change them. An unsigned one is taken only from a sender whose
``unsigned`` covers its origin.

A replica never takes a delta of its own origin that it does not hold: it assigns its own sequence
numbers, and a foreign delta under its name would take one of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..access import Principal
from ..store.base import DeltaRecord
from .signing import Keyring, encode_key, verify, verify_header

log = logging.getLogger("crdtmem.trust")


@dataclass
class Authenticated:
    """Deltas sorted by whether their sender may introduce them."""

    accepted: list[DeltaRecord] = field(default_factory=list)
    refused: list[tuple[DeltaRecord, str]] = field(default_factory=list)
    """With the reason, for the log and for the sender."""


def authenticate(
    deltas: Sequence[DeltaRecord],
    sender: Principal,
    own_origin: str,
    keyring: Keyring | None = None,
    presented: Mapping[str, bytes] | None = None,
    check: Callable[[bytes, DeltaRecord], bool] = verify,
) -> Authenticated:
    """Split ``deltas`` (none of them stored here yet, or only some of their entries) into those
    whose sender may introduce them, with a signature of their origin where one is needed, and the
    rest. ``presented``: the public keys the payload carried (a key is pinned on first use).
    ``check``: :func:`~crdtmem.engine.signing.verify`, or its results worked out beforehand
    (:func:`verify_pairs`)."""
    out = Authenticated()
    by_origin: dict[str, str | None] = {}  # the sender's right to each origin, asked once
    for delta in deltas:
        origin = delta.origin
        if origin in by_origin:
            reason = by_origin[origin]
        else:
            reason = by_origin[origin] = refusal(origin, sender, own_origin)
        if reason is None:
            reason = _signature_refusal(delta, sender, keyring, presented or {}, check)
        if reason is None:
            out.accepted.append(delta)
        else:
            out.refused.append((delta, reason))
    if out.refused:
        first, why = out.refused[0]
        log.warning("refused %d delta(s) from %s, e.g. %s: %s", len(out.refused), sender.name, first.uid, why)
    return out


def refusal(origin: str, sender: Principal, own_origin: str) -> str | None:
    """Why ``sender`` may not introduce a delta of ``origin`` here, or None if it may."""
    if not sender.may_introduce(origin):
        listed = list(sender.origins)
        if sender.replica_id is not None:
            listed.insert(0, sender.replica_id)
        return (
            f"{sender.name} may not introduce deltas of origin {origin!r} "
            f"(it may introduce {', '.join(map(repr, listed)) or 'none'})"
        )
    if origin == own_origin:
        return f"a delta of this replica's own origin {origin!r} that it does not hold"
    return None


def unsigned_refusal(origin: str, sender: Principal) -> str | None:
    """Why ``sender`` may not deliver an unsigned delta of ``origin``, or None if it may."""
    if sender.may_introduce_unsigned(origin):
        return None
    return (
        f"{sender.name} delivered an unsigned delta of origin {origin!r}; it may deliver only deltas "
        "signed by their origin (its tokens entry lists no 'unsigned' for that origin)"
    )


def keys_to_try(
    deltas: Sequence[DeltaRecord], keyring: Keyring, presented: Mapping[str, bytes]
) -> list[tuple[bytes, DeltaRecord]]:
    """``(key, delta)`` pairs :func:`authenticate` would verify (read on the event loop: a key
    may be loaded from the store)."""
    pairs: list[tuple[bytes, DeltaRecord]] = []
    for delta in deltas:
        if delta.signature is None:
            continue
        keys = keyring.known(delta.origin)
        if not keys:
            offered = presented.get(delta.origin)
            keys = (offered,) if offered is not None else ()
        pairs += [(key, delta) for key in keys]
    return pairs


VERIFY_THREADS = min(4, os.cpu_count() or 1)
"""Worker threads a batch's signatures are shared among (:func:`shares`)."""
SHARE_AT_LEAST = 8
"""Pairs per worker thread at least: a thread for fewer costs more than it saves."""


def shares(pairs: Sequence[tuple[bytes, DeltaRecord]]) -> list[Sequence[tuple[bytes, DeltaRecord]]]:
    """``pairs`` in parts to verify on :data:`VERIFY_THREADS` worker threads at once: the event
    loop only waits for them (the cryptography releases the GIL), so a batch's verification takes
    the cores there are instead of one."""
    parts = max(1, min(VERIFY_THREADS, len(pairs) // SHARE_AT_LEAST))
    size = -(-len(pairs) // parts)
    return [pairs[start : start + size] for start in range(0, len(pairs), size)]


def verify_pairs(pairs: Sequence[tuple[bytes, DeltaRecord]]) -> Verified:
    """Verify ``pairs`` (any thread: only the cryptography runs, which releases the GIL); returns
    the ``check`` for :func:`authenticate` that looks the results up, verifying anything else."""
    return Verified({(key, id(delta)): verify(key, delta) for key, delta in pairs})


class Verified:
    """Signature checks worked out beforehand (:func:`verify_pairs`), by ``(key, id(delta))``; as a
    ``check`` for :func:`authenticate`, a pair not among them is verified when asked."""

    __slots__ = ("results",)

    def __init__(self, results: dict[tuple[bytes, int], bool]):
        self.results = results

    @classmethod
    def merged(cls, parts: Iterable[Verified]) -> Verified:
        """The checks of several parts (verified on several threads) as one."""
        results: dict[tuple[bytes, int], bool] = {}
        for part in parts:
            results.update(part.results)
        return cls(results)

    def __call__(self, key: bytes, delta: DeltaRecord) -> bool:
        known = self.results.get((key, id(delta)))
        return verify(key, delta) if known is None else known


def _signature_refusal(
    delta: DeltaRecord,
    sender: Principal,
    keyring: Keyring | None,
    presented: Mapping[str, bytes],
    check: Callable[[bytes, DeltaRecord], bool],
) -> str | None:
    signed, origin = delta.signature, delta.origin
    if signed is None or keyring is None:
        return unsigned_refusal(origin, sender)
    if delta.seqs != signed.seqs or delta.also != signed.also:  # else it claims what was signed
        stray = [c for c in delta.seqs if not signed.covers(c, delta.all_seqs(c))]
        if stray:
            return f"delta {delta.uid} claims sequence numbers in {', '.join(stray)} its origin did not sign"
    keys = keyring.known(origin)
    if keys:
        if any(check(key, delta) for key in keys):
            return None
        return f"delta {delta.uid} is not signed by the key of origin {origin!r} known here"
    if keyring.strict:
        return f"no key of origin {origin!r} is listed here, and this node trusts listed keys only"
    offered = presented.get(origin)
    if offered is not None and check(offered, delta):
        keyring.pin(origin, offered)
        log.info(
            "pinned the public key %s of origin %s (first use, from %s)",
            encode_key(offered),
            origin,
            sender.name,
        )
        return None
    if sender.may_introduce_unsigned(origin):
        return None  # taken as if unsigned: this sender may vouch for the origin
    return f"delta {delta.uid} is signed by origin {origin!r}, whose key is neither known here nor presented"


def stub_refusal(
    stub: DeltaRecord, sender: Principal, keyring: Keyring | None, presented: Mapping[str, bytes]
) -> str | None:
    """Why a stub (a forgotten memory's delta without its content) is not its origin's word, or
    None: its proof, the origin's header signature, must verify against the origin's key and
    cover the sequence numbers it is delivered with; a stub without one (of a delta signed before
    header signatures, or never signed) is taken only from a sender that may vouch for its origin
    unsigned, like an unsigned delta."""
    proof, origin = stub.header, stub.origin
    if proof is None or keyring is None:
        reason = unsigned_refusal(origin, sender)
        return None if reason is None else f"stub {stub.uid} carries no header signature: {reason}"
    stray = [c for c in stub.seqs if not proof.covers(c, stub.all_seqs(c))]
    if stray:
        return f"stub {stub.uid} claims sequence numbers in {', '.join(stray)} its origin did not sign"
    keys = keyring.known(origin)
    if keys:
        if any(verify_header(key, stub) for key in keys):
            return None
        return f"stub {stub.uid} is not signed by the key of origin {origin!r} known here"
    if keyring.strict:
        return f"no key of origin {origin!r} is listed here, and this node trusts listed keys only"
    offered = presented.get(origin)
    if offered is not None and verify_header(offered, stub):
        keyring.pin(origin, offered)
        log.info(
            "pinned the public key %s of origin %s (first use, from %s)",
            encode_key(offered),
            origin,
            sender.name,
        )
        return None
    if sender.may_introduce_unsigned(origin):
        return None
    return f"stub {stub.uid} is signed by origin {origin!r}, whose key is neither known here nor presented"


VERIFY_SLICE = 200
"""Deltas authenticated between two chances for other requests to run."""
VERIFY_ON_THREAD = 8
"""From this many deltas, their signatures are verified on a worker thread first (the cryptography
releases the GIL): the event loop serves other requests, and commits, meanwhile."""


async def authenticate_in_slices(
    deltas: list[DeltaRecord],
    sender: Principal,
    own: str,
    keyring: Keyring | None,
    presented: dict[str, bytes],
) -> Authenticated:
    """:func:`authenticate`, a slice at a time, letting other requests run between slices: each new
    delta costs a signature verification (0.1 to 1 ms), and a page of thousands held the event loop
    for seconds. A batch has its signatures verified on a worker thread beforehand."""
    check: Callable[[bytes, DeltaRecord], bool] = verify
    if keyring is not None and len(deltas) >= VERIFY_ON_THREAD:
        pairs = keys_to_try(deltas, keyring, presented)
        if len(pairs) >= VERIFY_ON_THREAD:
            parts = await asyncio.gather(*(asyncio.to_thread(verify_pairs, part) for part in shares(pairs)))
            check = Verified.merged(parts)
    if len(deltas) <= VERIFY_SLICE:
        return authenticate(deltas, sender, own, keyring, presented, check)
    out = Authenticated()
    for start in range(0, len(deltas), VERIFY_SLICE):
        part = authenticate(deltas[start : start + VERIFY_SLICE], sender, own, keyring, presented, check)
        out.accepted += part.accepted
        out.refused += part.refused
        await asyncio.sleep(0)
    return out
