"""Who may read and write which channels: tokens, principals and the access policy.

A tokens file is JSON::

    {"tokens": [
      {"token": "s3cr3t-laptop", "principal": "replica:laptop",
       "read": ["user:u1:memories", "tenant:acme:shared"], "write": ["user:u1:memories"]},
      {"token": "s3cr3t-dash", "principal": "user:admin", "read": ["tenant:acme:*", "user:*:memories"],
       "write": []}
    ]}

A principal is ``replica:{id}`` (a peer replica: the replica id it claims must be this one) or
``user:{id}`` (an app, agent or dashboard). Channel patterns are channel names where ``*`` stands for
one whole id, e.g. ``user:*:memories``; ``*`` alone means every channel.

Without a tokens file the server runs *open*: every request is the principal ``local`` with access to
every channel, and the server refuses to bind anywhere but loopback.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .ids import Channel, check_name

_PATTERN = re.compile(
    r"^(\*|system:global|(user|tenant|topic):([A-Za-z0-9_.\-]{1,128}|\*):(memories|shared|updates))$"
)


class AccessDenied(InvalidInput):
    """The principal may not do this; nothing was done."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller and the channel patterns it may read and write."""

    name: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    @property
    def replica_id(self) -> str | None:
        """The replica id a ``replica:{id}`` principal must claim; None for users."""
        kind, _, ident = self.name.partition(":")
        return ident if kind == "replica" else None

    def may_read(self, channel: str) -> bool:
        return any(matches(pattern, channel) for pattern in self.read)

    def may_write(self, channel: str) -> bool:
        return any(matches(pattern, channel) for pattern in self.write)

    def readable(self, channels: Iterable[str]) -> list[str]:
        return [c for c in channels if self.may_read(c)]


OPEN = Principal("local", ("*",), ("*",))
"""The principal of every request to a server started without a tokens file (loopback only)."""


def matches(pattern: str, channel: str) -> bool:
    """Whether ``channel`` matches ``pattern`` (``*`` = any one id, or alone = any channel)."""
    if pattern == "*" or pattern == channel:
        return True
    if "*" not in pattern:
        return False
    p_kind, _, p_rest = pattern.partition(":")
    c_kind, _, c_rest = channel.partition(":")
    p_id, _, p_suffix = p_rest.partition(":")
    c_id, _, c_suffix = c_rest.partition(":")
    return p_kind == c_kind and p_suffix == c_suffix and p_id == "*" and bool(c_id)


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
        table = cls()
        for i, entry in enumerate(raw["tokens"]):
            where = f"{source}: tokens[{i}]"
            if not isinstance(entry, dict):
                raise InvalidInput(f"{where} must be an object")
            token, name = entry.get("token"), entry.get("principal")
            if not isinstance(token, str) or len(token) < 16:
                raise InvalidInput(f"{where}.token must be a string of at least 16 characters")
            name = check_principal(name, where)
            read = check_patterns(entry.get("read", []), f"{where}.read")
            write = check_patterns(entry.get("write", []), f"{where}.write")
            if token in table.entries:
                raise InvalidInput(f"{where}: duplicate token")
            table.entries[token] = Principal(name, read, write)
        return table

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": [
                {"token": t, "principal": p.name, "read": list(p.read), "write": list(p.write)}
                for t, p in self.entries.items()
            ]
        }


def check_principal(name: object, where: str = "principal") -> str:
    kind, _, ident = name.partition(":") if isinstance(name, str) else ("", "", "")
    if kind not in ("replica", "user"):
        raise InvalidInput(f"{where}: principal must be 'replica:{{id}}' or 'user:{{id}}', got {name!r}")
    check_name(ident, f"{where} id")
    return str(name)


def check_patterns(patterns: object, where: str) -> tuple[str, ...]:
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise InvalidInput(f"{where} must be a list of channel patterns")
    for pattern in patterns:
        if not _PATTERN.match(pattern):
            raise InvalidInput(f"{where}: {pattern!r} is not a channel or channel pattern")
        if "*" not in pattern:
            Channel.parse(pattern)
    return tuple(patterns)


def new_token() -> str:
    return secrets.token_urlsafe(32)
