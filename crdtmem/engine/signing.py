"""Deltas signed at their origin (Ed25519), so a relay can forward them but not forge them.

What is signed is everything the origin assigns and every relay must forward verbatim (``docs/
protocol.md`` §7.8): the uid, origin, memory id, stamp, dependencies and update, and the origin's
*claim*: its sequence numbers in every channel of the memory (``seqs``, and ``also`` for a coalesced
delta). Relays restrict nothing of a signed delta; a receiver logs the claim's entries of the
channels it subscribes to.

The message is ``DOMAIN`` followed by the SHA-256 of the canonical msgpack encoding of those fields
(claims sorted by channel), so a signature costs one hash of the update and one Ed25519 operation
on 58 bytes whatever the update's size. The origin also signs the delta's *header* (the same
without ``deps`` and ``update``, ``HEADER_DOMAIN``): when a forgotten memory's deltas become
content-free stubs, that signature stays with them, so a stub is its origin's word too.

A replica's key is made on its first start and kept in its store (``meta``), so it outlives the
process (the Yrs client id changes at every start; the key does not). Receivers know an origin's
public key from the tokens file (``keys``) or pin the first one they verify (trust on first use,
kept in their store); :class:`Keyring` holds both.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from ..store.base import DeltaRecord, Signature, Store

DOMAIN = b"crdtmem.delta-signature/1\n"
SIGNATURE_BYTES = 64
KEY_BYTES = 32
OWN_KEY = "signing_key"
"""The store's meta key holding this replica's private key (hex of the 32-byte seed)."""
PINNED = "origin_key:"
"""Prefix of the store's meta keys holding pinned public keys, by origin."""


def message(delta: DeltaRecord, seqs: dict[str, int], also: dict[str, tuple[int, ...]]) -> bytes:
    """The bytes an origin signs for ``delta`` with the claim ``seqs``/``also``."""
    fields = [
        delta.uid,
        delta.origin,
        delta.doc_id,
        delta.hlc,
        delta.deps,
        delta.update,
        sorted(seqs.items()),
        sorted((channel, list(numbers)) for channel, numbers in also.items() if numbers),
    ]
    return DOMAIN + hashlib.sha256(msgpack.packb(fields, use_bin_type=True)).digest()


HEADER_DOMAIN = b"crdtmem.delta-header-signature/1\n"


def header_message(delta: DeltaRecord, seqs: dict[str, int], also: dict[str, tuple[int, ...]]) -> bytes:
    """The bytes an origin signs for ``delta``'s *header*: :func:`message` without the ``deps`` and
    ``update``, so that a stub of the delta (its content gone) stays verifiable."""
    fields = [
        delta.uid,
        delta.origin,
        delta.doc_id,
        delta.hlc,
        sorted(seqs.items()),
        sorted((channel, list(numbers)) for channel, numbers in also.items() if numbers),
    ]
    return HEADER_DOMAIN + hashlib.sha256(msgpack.packb(fields, use_bin_type=True)).digest()


def claim_of(delta: DeltaRecord) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """The claim a delta carries: its signed one, or (unsigned) its own seqs."""
    if delta.signature is not None:
        return delta.signature.seqs, delta.signature.also
    return delta.seqs, delta.also


class Signer:
    """This replica's signing key."""

    def __init__(self, private: Ed25519PrivateKey):
        self._private = private
        self.public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_hex(cls, text: str) -> Signer:
        return cls(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text)))

    def to_hex(self) -> str:
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()

    def sign_message(self, data: bytes) -> bytes:
        """This replica's signature of ``data`` (a states page's or a cursor's message)."""
        return self._private.sign(data)

    def sign(self, delta: DeltaRecord, seqs: dict[str, int], also: dict[str, tuple[int, ...]]) -> Signature:
        """The signature of ``delta`` with the claim ``seqs``/``also``."""
        clean = {c: tuple(s) for c, s in also.items() if s}
        sig = self._private.sign(message(delta, seqs, clean))
        return Signature(sig, dict(seqs), clean, self._private.sign(header_message(delta, seqs, clean)))


def verify(public: bytes, delta: DeltaRecord) -> bool:
    """Whether ``delta``'s signature is its origin's (whose public key is ``public``)."""
    if delta.signature is None:
        return False
    try:
        key = _public_key(public)
        key.verify(delta.signature.sig, message(delta, delta.signature.seqs, delta.signature.also))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_header(public: bytes, stub: DeltaRecord) -> bool:
    """Whether ``stub``'s proof (:attr:`DeltaRecord.header`) is its origin's header signature."""
    proof = stub.header
    if proof is None:
        return False
    return verify_message(public, header_message(stub, proof.seqs, proof.also), proof.sig)


def verify_message(public: bytes, data: bytes, sig: bytes) -> bool:
    """Whether ``sig`` is the signature of ``data`` by the key ``public``."""
    try:
        _public_key(public).verify(sig, data)
    except (InvalidSignature, ValueError):
        return False
    return True


_KEYS: dict[bytes, Ed25519PublicKey] = {}


def _public_key(raw: bytes) -> Ed25519PublicKey:
    """Loaded public keys are cached: loading one costs about as much as a verification."""
    key = _KEYS.get(raw)
    if key is None:
        if len(_KEYS) > 10_000:
            _KEYS.clear()
        key = _KEYS[raw] = Ed25519PublicKey.from_public_bytes(raw)
    return key


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass
class Keyring:
    """The public keys this replica verifies deltas against, by origin.

    ``listed`` keys (the tokens file's ``keys``) are authoritative: an origin listed there is
    verified against those keys only (several during a rotation). Otherwise the first key that
    verifies a delta of an origin, presented by a sender entitled to that origin, is pinned for
    good (``strict``: never; an origin that is not listed is not trusted).
    """

    own_origin: str
    own: bytes
    listed: dict[str, tuple[bytes, ...]] = field(default_factory=dict)
    strict: bool = False
    load_pin: Callable[[str], bytes | None] = lambda origin: None
    save_pin: Callable[[str, bytes], None] = lambda origin, key: None
    _pins: dict[str, bytes | None] = field(default_factory=dict)

    def known(self, origin: str) -> tuple[bytes, ...]:
        """The keys ``origin``'s deltas must verify against; empty if none is known."""
        if origin == self.own_origin:
            return (self.own,)
        if origin in self.listed:
            return self.listed[origin]
        if origin not in self._pins:
            self._pins[origin] = self.load_pin(origin)
        pinned = self._pins[origin]
        return (pinned,) if pinned is not None else ()

    def pin(self, origin: str, key: bytes) -> None:
        self.save_pin(origin, key)
        self._pins[origin] = key

    def presentable(self, origin: str) -> bytes | None:
        """The key to send along with ``origin``'s deltas, so a receiver can pin it."""
        keys = self.known(origin)
        return keys[-1] if keys else None

    def keys_for(self, deltas: Iterable[DeltaRecord]) -> dict[str, bytes]:
        """The keys to send along with these deltas (of their signed origins), in the order of the
        origins' names: a message published again is the same bytes (its bus message id is theirs)."""
        out: dict[str, bytes] = {}
        for origin in sorted({d.origin for d in deltas if d.signature is not None or d.header is not None}):
            key = self.presentable(origin)
            if key is not None:
                out[origin] = key
        return out


@dataclass
class KeyPolicy:
    """Which origin keys a replica trusts (a node sets it from its tokens file's ``keys``/``trust``)."""

    listed: dict[str, tuple[bytes, ...]] = field(default_factory=dict)
    strict: bool = False


def open_keyring(store: Store, own_origin: str, policy: KeyPolicy) -> tuple[Signer, Keyring]:
    """This replica's signing key (made and kept in the store on first start; the store signs local
    deltas with it from now on) and the keyring it verifies others' deltas with."""
    stored = store.get_meta(OWN_KEY)
    if stored is None:
        signer = Signer.generate()
        store.set_meta(OWN_KEY, signer.to_hex())
    else:
        signer = Signer.from_hex(stored)
    store.signer = lambda delta, seqs: signer.sign(delta, seqs, {})

    def load_pin(origin: str) -> bytes | None:
        text = store.get_meta(PINNED + origin)
        return base64.b64decode(text) if text else None

    def save_pin(origin: str, key: bytes) -> None:
        store.set_meta(PINNED + origin, encode_key(key))

    keyring = Keyring(own_origin, signer.public, dict(policy.listed), policy.strict, load_pin, save_pin)
    return signer, keyring
