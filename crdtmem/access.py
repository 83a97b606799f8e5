"""Who may read and write which channels: tokens, principals and the access policy.

A tokens file is JSON::

    {"tokens": [
      {"token": "s3cr3t-laptop-0001", "principal": "replica:laptop",
       "read": ["user:u1:memories", "tenant:acme:shared"], "write": ["user:u1:memories"]},
      {"token": "s3cr3t-hub-b-000001", "principal": "replica:hub-b", "read": ["*"], "write": ["*"],
       "origins": ["*"]},
      {"token": "s3cr3t-web-0000001", "principal": "user:web", "read": ["user:u1:memories"],
       "write": ["user:u1:memories"], "origins": ["web-1"], "unsigned": ["web-1"]},
      {"token": "s3cr3t-dashboard-01", "principal": "user:admin",
       "read": ["tenant:acme:*", "user:*:memories"], "write": []},
      {"token": "s3cr3t-alice-00001", "principal": "user:alice@example.com",
       "read": ["user:alice@example.com:memories"], "write": ["user:alice@example.com:memories"]}
    ]}

A principal is ``replica:{id}`` (a peer replica: the replica id it claims must be this one) or
``user:{id}`` (an app, agent or dashboard; any app id). A channel pattern is one of:

    *                   every channel
    user:u1:memories    that channel (any channel name, system:global included)
    user:*:memories     that kind of channel, for every id
    tenant:acme:*       every channel of that id (a kind has one suffix, so: tenant:acme:shared)
    topic:*:*           every channel of that kind

``*`` always stands for one whole part, never for part of an id (``user:u*:memories`` is refused),
and a suffix must be the kind's own (``user:*:shared`` is refused: it could match nothing). Ids may
be written as the app has them (``user:alice@example.com:memories``, ``user:org:alice:memories``) or
escaped as on the wire (``user:org%3Aalice:memories``, see :mod:`crdtmem.ids`); a literal ``*`` in an
id is written ``%2A``. Patterns are kept in their canonical wire form, which :func:`matches` compares.

Every delta names its *origin*, the replica that wrote it, and the version vectors that decide what
a replica still misses are kept per origin. So a principal may introduce only deltas of the origins
it is entitled to: ``origins`` lists them (the replica ids a device writes as; for a relay, the
origins it forwards, or ``*``); a ``replica:{id}`` principal may always introduce its own id.
``unsigned`` lists the origins whose deltas it may deliver without their origin's signature (a
foreign client that cannot sign, deltas written before signing existed); each must be one of its
``origins``. ``"states": true`` trusts a principal as a *state server*: a node behind the horizon
of its log may catch up from the document states it serves, signed by the replica that read them
(``docs/protocol.md`` §7.10), which are that replica's word, not their origins'. For
``replica:{id}`` the pages must be that replica's; for the bus principal, any node's on the bus.

Without a tokens file the server runs *open*: every request is the principal ``local`` with access to
every channel, and the server refuses to bind anywhere but loopback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidChannel, InvalidInput
from .ids import Channel, check_id, check_replica_id, escape_id

_SUFFIX = {"user": "memories", "tenant": "shared", "topic": "updates"}


_ENTRY_FIELDS = {"token", "principal", "read", "write", "origins", "unsigned", "states"}


class AccessDenied(InvalidInput):
    """The principal may not do this; nothing was done."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the channel patterns it may read and write, and the origins whose
    deltas it may introduce (signed, or also unsigned)."""

    name: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()
    unsigned: tuple[str, ...] = ()
    states: bool = False
    """Whether states pages it signs are taken (a state server, ``docs/protocol.md`` §7.10)."""

    @property
    def replica_id(self) -> str | None:
        """The replica id a ``replica:{id}`` principal must claim; None for users."""
        kind, _, ident = self.name.partition(":")
        return ident if kind == "replica" else None

    def may_introduce(self, origin: str) -> bool:
        """Whether deltas of ``origin`` may arrive from this principal (its own id, or listed)."""
        return origin == self.replica_id or "*" in self.origins or origin in self.origins

    def may_introduce_unsigned(self, origin: str) -> bool:
        """Whether deltas of ``origin`` may arrive from this principal without a signature."""
        return "*" in self.unsigned or origin in self.unsigned

    @property
    def fingerprint(self) -> str:
        """Names these rights: a decision taken under them is re-examined when they change."""
        rights: list[Any] = [self.name, self.read, self.write, self.origins, self.unsigned]
        text = json.dumps([*rights, "states"] if self.states else rights)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"principal": self.name, "read": list(self.read), "write": list(self.write)}
        if self.origins:
            entry["origins"] = list(self.origins)
        if self.unsigned:
            entry["unsigned"] = list(self.unsigned)
        if self.states:
            entry["states"] = True
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any], where: str = "principal") -> Principal:
        """Validate one tokens-file entry's rights (everything but the token)."""
        name = check_principal(entry.get("principal"), where)
        read = check_patterns(entry.get("read", []), f"{where}.read")
        write = check_patterns(entry.get("write", []), f"{where}.write")
        origins = check_origins(entry.get("origins", []), f"{where}.origins")
        unsigned = check_origins(entry.get("unsigned", []), f"{where}.unsigned")
        states = entry.get("states", False)
        if not isinstance(states, bool):
            raise InvalidInput(f"{where}.states must be true or false, got {states!r}")
        principal = cls(name, read, write, origins)
        for origin in unsigned:
            if not (principal.may_introduce(origin) if origin != "*" else "*" in origins):
                raise InvalidInput(
                    f"{where}.unsigned: {origin!r} is not an origin this token may introduce; add it to "
                    f'"origins" first (they are {list(origins) or "none"}'
                    + (f", besides its own id {principal.replica_id!r})" if principal.replica_id else ")")
                )
        return cls(name, read, write, origins, unsigned, states)

    def may_read(self, channel: str) -> bool:
        return any(matches(pattern, channel) for pattern in self.read)

    def may_write(self, channel: str) -> bool:
        return any(matches(pattern, channel) for pattern in self.write)

    def readable(self, channels: Iterable[str]) -> list[str]:
        return [c for c in channels if self.may_read(c)]


OPEN_NAME = "local"
OPEN = Principal(OPEN_NAME, ("*",), ("*",), ("*",), ("*",), True)
"""The principal of every request to a server started without a tokens file (loopback only), and
the sender of a payload handed to the engine without one (the caller vouches for it)."""


def matches(pattern: str, channel: str) -> bool:
    """Whether ``channel`` matches ``pattern``: ``*`` alone is every channel; in a part (the id or
    the suffix) it stands for any whole value of that part. Both are canonical wire forms, whose ids
    never contain ``:`` or ``*`` (they are escaped)."""
    if pattern == "*" or pattern == channel:
        return True
    if "*" not in pattern:
        return False
    p_parts, c_parts = pattern.split(":"), channel.split(":")
    if len(p_parts) != 3 or len(c_parts) != 3 or p_parts[0] != c_parts[0]:
        return False
    return all(p in ("*", c) and c for p, c in zip(p_parts[1:], c_parts[1:], strict=True))


def may_read_memory(principal: Principal, channels: Iterable[str]) -> bool:
    """A memory is readable if any of its channels is."""
    return any(principal.may_read(c) for c in channels)


def may_write_memory(principal: Principal, channels: Iterable[str]) -> bool:
    """A memory is writable only if every one of its channels is (a write lands on all of them)."""
    names = list(channels)
    return bool(names) and all(principal.may_write(c) for c in names)


@dataclass
class TokenTable:
    """Bearer token -> principal. Lookups compare in constant time."""

    entries: dict[str, Principal] = field(default_factory=dict)
    keys: dict[str, tuple[bytes, ...]] = field(default_factory=dict)
    """Origins' Ed25519 public keys (raw 32 bytes) listed in the file: authoritative for them."""
    strict_keys: bool = False
    """``"trust": "listed"``: only deltas signed by a listed key are taken as signed (no trust on
    first use)."""

    def lookup(self, token: str | None) -> Principal | None:
        if not token:
            return None
        presented = token.encode("utf-8", "surrogateescape")  # headers may carry any byte
        for known, principal in self.entries.items():
            if hmac.compare_digest(known.encode(), presented):
                return principal
        return None

    @classmethod
    def load(cls, path: str | Path) -> TokenTable:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read tokens file {path}: {exc}") from exc
        return cls.from_json(raw, source=str(path))

    @classmethod
    def from_json(cls, raw: Any, *, source: str = "tokens") -> TokenTable:
        if not isinstance(raw, dict) or not isinstance(raw.get("tokens"), list):
            raise InvalidInput(f'{source}: expected {{"tokens": [...]}}')
        unknown = sorted(set(raw) - {"tokens", "keys", "trust"})
        if unknown:
            raise InvalidInput(
                f"{source}: unknown field(s) {', '.join(map(repr, unknown))}; it has tokens, keys, trust"
            )
        trust = raw.get("trust", "first-use")
        if trust not in ("first-use", "listed"):
            raise InvalidInput(
                f'{source}: trust must be "first-use" (the default) or "listed", got {trust!r}'
            )
        table = cls(keys=check_keys(raw.get("keys", {}), f"{source}: keys"), strict_keys=trust == "listed")
        for i, entry in enumerate(raw["tokens"]):
            where = f"{source}: tokens[{i}]"
            if not isinstance(entry, dict):
                raise InvalidInput(f"{where} must be an object")
            token = entry.get("token")
            if not isinstance(token, str) or len(token) < 16:
                raise InvalidInput(f"{where}.token must be a string of at least 16 characters")
            unknown = sorted(set(entry) - _ENTRY_FIELDS)
            if unknown:
                raise InvalidInput(
                    f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; an entry has "
                    + ", ".join(sorted(_ENTRY_FIELDS))
                )
            if token in table.entries:
                raise InvalidInput(f"{where}: duplicate token")
            table.entries[token] = Principal.from_json(entry, where)
        return table

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tokens": [{"token": t, **p.to_json()} for t, p in self.entries.items()]}
        if self.keys:
            out["keys"] = {o: [base64.b64encode(k).decode() for k in keys] for o, keys in self.keys.items()}
        if self.strict_keys:
            out["trust"] = "listed"
        return out

    def rights_of(self, name: str) -> Principal | None:
        """The rights of the principal called ``name`` (all its tokens together), or None.

        A node applies what it pulls from a peer, or what a peer pushes on a link the node opened,
        with the rights of ``replica:{peer id}`` in its own table: the peer's token decides.
        """
        found = [p for p in self.entries.values() if p.name == name]
        if not found:
            return None

        def union(parts: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(x for part in parts for x in part))

        return Principal(
            name,
            union(p.read for p in found),
            union(p.write for p in found),
            union(p.origins for p in found),
            union(p.unsigned for p in found),
            any(p.states for p in found),
        )


def check_principal(name: object, where: str = "principal") -> str:
    kind, _, ident = name.partition(":") if isinstance(name, str) else ("", "", "")
    if kind == "replica":
        check_replica_id(ident, f"{where} id")
    elif kind == "user":
        check_id(ident, f"{where} id")
    else:
        raise InvalidInput(f"{where}: principal must be 'replica:{{id}}' or 'user:{{id}}', got {name!r:.80}")
    return str(name)


def check_keys(raw: object, where: str) -> dict[str, tuple[bytes, ...]]:
    """``{origin: key or [keys]}``, each key the base64 of a raw 32-byte Ed25519 public key (as
    ``crdtmem key --db FILE`` prints it); several during a rotation."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must map replica ids to public keys")
    keys: dict[str, tuple[bytes, ...]] = {}
    for origin, listed in raw.items():
        check_replica_id(origin, f"{where}: replica id")
        texts = [listed] if isinstance(listed, str) else listed
        if not isinstance(texts, list) or not texts:
            raise InvalidInput(f"{where}.{origin} must be a public key or a list of them")
        decoded = []
        for text in texts:
            try:
                key = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
            except ValueError:
                key = b""
            if len(key) != 32:
                raise InvalidInput(
                    f"{where}.{origin}: {text!r:.60} is not the base64 of a 32-byte Ed25519 public key "
                    "(crdtmem key --db FILE prints a replica's)"
                )
            decoded.append(key)
        keys[origin] = tuple(decoded)
    return keys


def check_origins(origins: object, where: str) -> tuple[str, ...]:
    """A list of replica ids, or ``["*"]`` for every origin."""
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise InvalidInput(f'{where} must be a list of replica ids (or "*" for every origin)')
    for origin in origins:
        if origin != "*":
            check_replica_id(origin, f"{where}: replica id")
    return tuple(origins)


def canonical_pattern(pattern: object) -> str:
    """A channel or channel pattern (see the module docstring) in its canonical wire form."""
    if not isinstance(pattern, str):
        raise InvalidInput(f"{pattern!r:.80} is not a channel or channel pattern")
    if pattern in ("*", "system:global"):
        return pattern
    kind, _, rest = pattern.partition(":")
    suffix = _SUFFIX.get(kind)
    ending = rest.rpartition(":")[2]
    if suffix is None or ":" not in rest:
        raise InvalidInput(
            f"{pattern!r:.300} is not a channel or channel pattern (a channel name with '*' for its whole "
            "id or suffix, e.g. user:*:memories or tenant:acme:*, or '*' alone)"
        )
    if ending not in ("*", suffix):
        raise InvalidInput(f"{pattern!r:.300} can match nothing: {kind} channels end in :{suffix}")
    middle = rest[: -len(ending) - 1]
    if middle == "*":
        return f"{kind}:*:{ending}"
    try:
        channel = Channel.from_text(f"{kind}:{middle}:{suffix}")
    except InvalidChannel as exc:
        raise InvalidInput(f"{pattern!r:.300} is not a channel or channel pattern: {exc}") from None
    return str(channel) if ending == suffix else f"{kind}:{escape_id(channel.name)}:*"


def check_patterns(patterns: object, where: str) -> tuple[str, ...]:
    """Validate channel patterns; returns them in canonical form, without duplicates."""
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise InvalidInput(f"{where} must be a list of channel patterns")
    found: list[str] = []
    for pattern in patterns:
        try:
            canonical = canonical_pattern(pattern)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        if canonical not in found:
            found.append(canonical)
    return tuple(found)


def new_token() -> str:
    return secrets.token_urlsafe(32)
