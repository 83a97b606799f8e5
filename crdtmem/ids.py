"""Identifiers: replica ids, memory ids, Yrs client ids and channel names.

Channels are parsed and validated here and nowhere else. The four shapes::

    user:{user_id}:memories     every memory of one user (multi-device sync)
    tenant:{tenant_id}:shared   memories a tenant shares across its users and agents
    topic:{topic_id}:updates    memories tagged with a topic (selective subscription)
    system:global               memories with neither a user nor a tenant
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Literal, cast

from .errors import InvalidChannel, InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_CHANNEL = re.compile(
    r"^(?:(?P<kind>user|tenant|topic):(?P<name>[A-Za-z0-9_.\-]{1,128}):(?P<suffix>memories|shared|updates)"
    r"|system:global)$"
)
_SUFFIX = {"user": "memories", "tenant": "shared", "topic": "updates"}

ChannelKind = Literal["user", "tenant", "topic", "system"]


def check_name(value: object, what: str) -> str:
    """Validate a replica, user, tenant, agent or topic id: 1-128 of ``[A-Za-z0-9_.-]``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(
            f"{what} must be 1-128 characters of letters, digits, '_', '.', '-'; got {value!r:.80}"
        )
    return value


def new_memory_id() -> str:
    """A fresh memory id (a random UUID, hex)."""
    return uuid.uuid4().hex


def new_client_id() -> int:
    """A fresh Yrs client id for this process start.

    Two live processes must never share a Yrs client id (their edits would collide in the Yrs
    clock), so it is random per process start rather than derived from the replica id. 32 bits keep
    it a safe JavaScript integer, as Yjs expects.
    """
    return secrets.randbits(32)


@dataclass(frozen=True, slots=True, order=True)
class Channel:
    """A parsed channel name. Build with :meth:`user`, :meth:`tenant`, :meth:`topic`, :meth:`system`
    or :meth:`parse`; ``str(channel)`` is the wire form."""

    kind: ChannelKind
    name: str = ""

    @classmethod
    def user(cls, user_id: str) -> Channel:
        return cls("user", check_name(user_id, "user_id"))

    @classmethod
    def tenant(cls, tenant_id: str) -> Channel:
        return cls("tenant", check_name(tenant_id, "tenant_id"))

    @classmethod
    def topic(cls, topic_id: str) -> Channel:
        return cls("topic", check_name(topic_id, "topic"))

    @classmethod
    def system(cls) -> Channel:
        return cls("system", "global")

    @classmethod
    def parse(cls, text: object) -> Channel:
        """Parse a wire name; raises :class:`InvalidChannel` with the accepted shapes."""
        match = _CHANNEL.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidChannel(
                f"unknown channel {text!r}: expected user:{{id}}:memories, tenant:{{id}}:shared, "
                "topic:{id}:updates or system:global"
            )
        if text == "system:global":
            return cls.system()
        kind = match["kind"]
        if _SUFFIX[kind] != match["suffix"]:
            raise InvalidChannel(f"unknown channel {text!r}: {kind} channels end in :{_SUFFIX[kind]}")
        return cls(cast(ChannelKind, kind), match["name"])

    def __str__(self) -> str:
        if self.kind == "system":
            return "system:global"
        return f"{self.kind}:{self.name}:{_SUFFIX[self.kind]}"


def parse_channels(names: object) -> tuple[str, ...]:
    """Validate a list of channel names, returning their canonical wire forms."""
    if isinstance(names, str) or not isinstance(names, (list, tuple, set, frozenset)):
        raise InvalidChannel(f"channels must be a list of channel names, got {names!r}")
    return tuple(str(Channel.parse(name)) for name in names)
