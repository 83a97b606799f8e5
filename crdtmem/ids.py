"""Identifiers: app ids, replica ids, memory ids, Yrs client ids and channel names.

Two alphabets (``docs/protocol.md`` §2.2):

- **app ids** (user, tenant, agent, session and topic ids, memory ids): what apps already use, such as
  e-mail addresses and prefixed ids (``"alice@example.com"``, ``"org:alice"``). 1 to
  :data:`MAX_ID_LENGTH` characters of UTF-8 text without control characters (:func:`check_id`);
- **replica ids**: 1-128 of ``[A-Za-z0-9_.-]`` (:func:`check_replica_id`), because they are part of
  dots (``{replica}:{hlc}``) and metadata keys (``{key}#{replica}``).

Channels are parsed, built and validated here and nowhere else. The four shapes::

    user:{user_id}:memories     every memory of one user (multi-device sync)
    tenant:{tenant_id}:shared   memories a tenant shares across its users and agents
    topic:{topic_id}:updates    memories tagged with a topic (selective subscription)
    system:global               memories with neither a user nor a tenant

An id becomes part of a channel name escaped (:func:`escape_id`): ``%``, ``:``, ``*``, ``,`` and the
space are written as ``%XX`` (upper-case hex of their UTF-8 bytes), every other character as it is.
So ``user:alice@example.com:memories`` and ``user:org%3Aalice:memories`` are channel names, and ids
of the old ``[A-Za-z0-9_.-]`` alphabet give the same names as before. :meth:`Channel.parse` accepts
only that canonical form (the wire); :meth:`Channel.from_text` also accepts ids written unescaped, as
people write them in a tokens file or on a command line (``user:org:alice:memories``).
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Literal, cast

from .errors import InvalidChannel, InvalidInput

MAX_ID_LENGTH = 256
"""Longest app id, in characters (an e-mail address is at most 254)."""

_V1_ALPHABET = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
"""Replica ids, and every id of protocol revision 1."""
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
"""Control characters (Unicode category Cc, a set Unicode never changes), the line and paragraph
separators, and lone surrogates (not UTF-8). Everything else is allowed in an app id."""

CHANNEL_RESERVED = "%:*, "
"""Characters an id cannot carry literally inside a channel name: the escape character, the
separator, the pattern wildcard, the list separator of feed subscriptions, and the space."""
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")

_SUFFIX = {"user": "memories", "tenant": "shared", "topic": "updates"}
_V1_CHANNEL = re.compile(r"(user|tenant|topic):([A-Za-z0-9_.\-]{1,128}):(memories|shared|updates)")
"""A channel whose id needs no escaping (every channel of protocol revision 1): parsed fast."""
_WHAT = {"user": "user_id", "tenant": "tenant_id", "topic": "topic"}

ChannelKind = Literal["user", "tenant", "topic", "system"]


def check_id(value: object, what: str) -> str:
    """Validate an app id (user, tenant, agent, session, topic or memory id): 1 to
    :data:`MAX_ID_LENGTH` characters, no control characters, valid UTF-8."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH or _FORBIDDEN.search(value):
        raise InvalidInput(
            f"{what} must be 1-{MAX_ID_LENGTH} characters of text without control characters; "
            f"got {value!r:.80}"
        )
    return value


def check_memory_id(value: object, what: str = "memory_id") -> str:
    """An app id that can also be a URL path segment: not ``.`` or ``..`` (URLs resolve those)."""
    if value in (".", ".."):
        raise InvalidInput(f"{what} cannot be {value!r}: URLs would resolve it as a path step")
    return check_id(value, what)


def check_replica_id(value: object, what: str = "replica_id") -> str:
    """Validate a replica id: 1-128 of ``[A-Za-z0-9_.-]`` (it is part of dots and metadata keys)."""
    if not isinstance(value, str) or not _V1_ALPHABET.fullmatch(value):
        raise InvalidInput(
            f"{what} must be 1-128 characters of letters, digits, '_', '.', '-'; got {value!r:.80}"
        )
    return value


def is_v1_id(value: str) -> bool:
    """Whether ``value`` fits the id alphabet of protocol revision 1 (``[A-Za-z0-9_.-]{1,128}``),
    which every older peer accepts."""
    return _V1_ALPHABET.fullmatch(value) is not None


def escape_id(value: str, reserved: str = CHANNEL_RESERVED) -> str:
    """``value`` with every character of ``reserved`` (and ``%``) written as ``%XX``, the upper-case
    hex of its UTF-8 bytes. Reversed by :func:`unescape_id`; the same on every replica.

    The NATS bus maps channels to subjects by escaping their ids with a larger ``reserved`` set.
    """
    if "%" not in reserved:
        reserved += "%"
    if not any(c in reserved for c in value):
        return value
    return "".join("".join(f"%{b:02X}" for b in c.encode("utf-8")) if c in reserved else c for c in value)


def unescape_id(text: str) -> str:
    """The id :func:`escape_id` escaped into ``text``; raises InvalidChannel for a ``%`` that is not
    followed by two hex digits or bytes that are not UTF-8."""
    if "%" not in text:
        return text
    if text.count("%") != len(_ESCAPE.findall(text)):
        raise InvalidChannel(f"{text!r:.80}: '%' starts an escape such as %3A (write a literal % as %25)")
    out = bytearray()
    at = 0
    for match in _ESCAPE.finditer(text):
        out += text[at : match.start()].encode("utf-8", "surrogatepass")
        out.append(int(match[1], 16))
        at = match.end()
    out += text[at:].encode("utf-8", "surrogatepass")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidChannel(f"{text!r:.80}: its %-escapes are not UTF-8") from exc


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


def _shape_error(text: object) -> InvalidChannel:
    return InvalidChannel(
        f"unknown channel {text!r:.300}: expected user:{{id}}:memories, tenant:{{id}}:shared, "
        "topic:{id}:updates or system:global"
    )


@dataclass(frozen=True, slots=True, order=True)
class Channel:
    """A parsed channel. ``name`` is the id as the app has it (unescaped); ``str(channel)`` is the
    canonical wire form, with the id escaped. Build with :meth:`user`, :meth:`tenant`,
    :meth:`topic`, :meth:`system`, :meth:`parse` or :meth:`from_text`."""

    kind: ChannelKind
    name: str = ""

    @classmethod
    def user(cls, user_id: str) -> Channel:
        return cls("user", check_id(user_id, "user_id"))

    @classmethod
    def tenant(cls, tenant_id: str) -> Channel:
        return cls("tenant", check_id(tenant_id, "tenant_id"))

    @classmethod
    def topic(cls, topic_id: str) -> Channel:
        return cls("topic", check_id(topic_id, "topic"))

    @classmethod
    def system(cls) -> Channel:
        return cls("system", "global")

    @classmethod
    def parse(cls, text: object) -> Channel:
        """Parse a canonical wire name (ids escaped exactly as :func:`escape_id` does); raises
        :class:`InvalidChannel` saying what is accepted."""
        fast = _V1_CHANNEL.fullmatch(text) if isinstance(text, str) else None
        if fast is not None and _SUFFIX[fast[1]] == fast[3]:
            return cls(cast(ChannelKind, fast[1]), fast[2])
        channel = cls.from_text(text)
        if str(channel) != text:
            raise InvalidChannel(
                f"channel {text!r:.300} is not in canonical form; it is written {str(channel)!r:.300} "
                "(ids escape '%', ':', '*', ',' and spaces as %XX, nothing else)"
            )
        return channel

    @classmethod
    def from_text(cls, text: object) -> Channel:
        """Parse a channel as people write it: the canonical form, or with the id unescaped
        (``user:org:alice:memories`` is the channel of user ``org:alice``). A ``*`` must be escaped
        (``%2A``): unescaped, it is a pattern (see :mod:`crdtmem.access`), not a channel."""
        if text == "system:global":
            return cls.system()
        if not isinstance(text, str):
            raise _shape_error(text)
        kind, _, rest = text.partition(":")
        suffix = _SUFFIX.get(kind)
        if suffix is None or not rest.endswith(":" + suffix):
            raise _shape_error(text)
        middle = rest[: -len(suffix) - 1]
        if "*" in middle:
            raise InvalidChannel(
                f"{text!r:.300} has a '*': a channel names one id (write a literal * as %2A); "
                "patterns such as user:*:memories are for tokens files"
            )
        name = unescape_id(middle)
        try:
            check_id(name, _WHAT[kind])
        except InvalidInput as exc:
            raise InvalidChannel(f"unknown channel {text!r:.300}: {exc}") from None
        return cls(cast(ChannelKind, kind), name)

    def __str__(self) -> str:
        if self.kind == "system":
            return "system:global"
        return f"{self.kind}:{escape_id(self.name)}:{_SUFFIX[self.kind]}"


_CANONICAL: dict[str, str] = {}
"""Channel names already validated, with their canonical wire forms: a link or a request names the
same few channels on every call (bounded: cleared when it grows past :data:`_CANONICAL_AT_MOST`)."""
_CANONICAL_AT_MOST = 4096


def parse_channels(names: object) -> tuple[str, ...]:
    """Validate a list of channel names as people write them (:meth:`Channel.from_text`),
    returning their canonical wire forms."""
    if isinstance(names, str) or not isinstance(names, (list, tuple, set, frozenset)):
        raise InvalidChannel(f"channels must be a list of channel names, got {names!r:.200}")
    out = []
    for name in names:
        canonical = _CANONICAL.get(name) if isinstance(name, str) else None
        if canonical is None:
            canonical = str(Channel.from_text(name))  # raises for anything but a valid channel name
            if len(_CANONICAL) >= _CANONICAL_AT_MOST:
                _CANONICAL.clear()
            _CANONICAL[name] = canonical
        out.append(canonical)
    return tuple(out)
