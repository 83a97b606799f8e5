"""Channels as NATS subjects, the stream layout, and the message id of a log entry.

A channel's subject is ``{prefix}.{stream}.{kind}.{id}`` (subject mapping version 1), or, in a
layout of ``P`` partitions, ``{prefix}.{stream}.{kind}.p{N}.{id}`` (version 2, :mod:`.partitions`:
``N`` a stable hash of the id modulo ``P``)::

    user:alice@example.com:memories  ->  crdtmem.users.user.alice@example%2Ecom
    tenant:acme:shared               ->  crdtmem.tenants.tenant.acme
    topic:q3 plans:updates           ->  crdtmem.topics.topic.q3%20plans
    system:global                    ->  crdtmem.system.system.global

``{stream}`` is the placement token of the stream that holds the channel (the first
:class:`StreamSpec` of the :class:`Layout` whose patterns match it), so streams never share a subject
and a tenant or a user can be given a stream of its own (its own limits, retention, replicas, or
placement in the cluster) by adding a spec ahead of the defaults. ``{id}`` is the channel's app id
with every byte outside ``[A-Za-z0-9_-@+=~]`` written as ``%XX`` (upper-case hex of its UTF-8 bytes):
NATS subjects split on ``.``, treat ``*`` and ``>`` as wildcards and refuse spaces, and ids are any
text without control characters (:mod:`crdtmem.ids`). The mapping is one to one and the same on
every node; :func:`channel_of` reverses it (both versions: a fleet that moves to partitions still
reads the messages its streams hold from before).

A log entry ``(origin, channel, seq)`` is published with the message id :func:`message_id`, bound to
the message's bytes, so a stream keeps one copy of it however often a node publishes it within the
stream's duplicate window, and a message published ahead under the id of an entry to come cannot
make the stream drop the entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..access import canonical_pattern, matches
from ..errors import InvalidInput
from ..ids import Channel, unescape_id
from . import partitions as parts

SUBJECT_SAFE = re.compile(r"[A-Za-z0-9_\-@+=~]")
"""Characters an id keeps in a subject token; every other one is escaped."""
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
STATES_TOKEN = "states"
"""``{prefix}.states`` is where nodes ask each other for document states (:mod:`crdtmem.bus.states`)."""
PULL_TOKEN = "pull"
"""``{prefix}.pull`` is where nodes pull since their version vectors (:mod:`crdtmem.bus.pull`)."""


def escape_token(value: str) -> str:
    """``value`` as one subject token: bytes outside :data:`SUBJECT_SAFE` as ``%XX``."""
    if all(SUBJECT_SAFE.fullmatch(c) for c in value):
        return value
    return "".join(c if SUBJECT_SAFE.fullmatch(c) else _hex(c) for c in value)


def _hex(char: str) -> str:
    return "".join(f"%{b:02X}" for b in char.encode())


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One JetStream stream: the channels it holds (access patterns, see :mod:`crdtmem.access`) and
    its limits. ``token`` is its place in the subject; ``name`` the stream's name in JetStream."""

    name: str
    token: str
    patterns: tuple[str, ...]
    replicas: int = 1
    max_age_s: float = 0.0
    """Drop messages older than this (0: keep them). See ``docs/scale-out.md`` on retention."""
    max_bytes: int = -1
    partitions: frozenset[int] | None = None
    """The partitions of the layout whose channels this stream holds (None: every one). A layout
    with partitions may split what one stream would hold into streams per range of partitions
    (``CRDTMEM_USERS_0`` for ``user:*:memories`` of partitions 0-511, ...), ahead of the defaults;
    a layout without partitions refuses a spec with them."""

    def __post_init__(self) -> None:
        if not _STREAM_NAME.fullmatch(self.name):
            raise InvalidInput(f"stream name {self.name!r}: 1-64 of letters, digits, '_', '-'")
        if not _TOKEN.fullmatch(self.token):
            raise InvalidInput(f"stream token {self.token!r}: 1-32 of letters, digits, '_', '-'")
        if not 1 <= self.replicas <= 5:
            raise InvalidInput(f"stream {self.name}: replicas must be 1 to 5, got {self.replicas}")
        object.__setattr__(self, "patterns", tuple(canonical_pattern(p) for p in self.patterns))
        if self.partitions is not None:
            if not self.partitions or min(self.partitions) < 0:
                raise InvalidInput(f"stream {self.name}: partitions must be a non-empty set of partitions")
            object.__setattr__(self, "partitions", frozenset(self.partitions))

    def holds(self, channel: str) -> bool:
        """Whether the channel matches the spec's patterns (its partitions aside: see
        :meth:`Layout.stream_of`)."""
        return any(matches(pattern, channel) for pattern in self.patterns)


def default_streams(replicas: int = 1, prefix: str = "CRDTMEM") -> list[StreamSpec]:
    """One stream per channel kind."""
    return [
        StreamSpec(f"{prefix}_USERS", "users", ("user:*:memories",), replicas),
        StreamSpec(f"{prefix}_TENANTS", "tenants", ("tenant:*:shared",), replicas),
        StreamSpec(f"{prefix}_TOPICS", "topics", ("topic:*:updates",), replicas),
        StreamSpec(f"{prefix}_SYSTEM", "system", ("system:global",), replicas),
    ]


@dataclass(frozen=True)
class Layout:
    """Where every channel goes: ``streams`` in order, the first that holds a channel takes it.

    Every node of a fleet must use the same layout (it decides the subjects). The defaults hold
    every channel, so a layout is the operator's specs followed by :func:`default_streams`.
    """

    streams: tuple[StreamSpec, ...]
    prefix: str = "crdtmem"
    partitions: int = 0
    """Partitions of the subject mapping (:mod:`.partitions`); 0: none, subject mapping version 1."""

    @classmethod
    def of(
        cls,
        extra: Sequence[StreamSpec] = (),
        *,
        replicas: int = 1,
        prefix: str = "crdtmem",
        partitions: int = 0,
    ) -> Layout:
        return cls((*extra, *default_streams(replicas)), prefix, partitions)

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.prefix):
            raise InvalidInput(f"subject prefix {self.prefix!r}: 1-32 of letters, digits, '_', '-'")
        if isinstance(self.partitions, bool) or not 0 <= self.partitions <= parts.MAX_PARTITIONS:
            raise InvalidInput(
                f"partitions must be 0 (none) to {parts.MAX_PARTITIONS:,}, got {self.partitions}"
            )
        for attr in ("name", "token"):
            seen = [getattr(s, attr) for s in self.streams]
            twice = sorted({v for v in seen if seen.count(v) > 1})
            if twice:
                raise InvalidInput(f"stream {attr}s must differ; {', '.join(twice)} appear(s) twice")
        for spec in self.streams:
            if spec.partitions is not None and (
                not self.partitions or max(spec.partitions) >= self.partitions
            ):
                raise InvalidInput(
                    f"stream {spec.name} holds partitions {_ranges(spec.partitions)}, but the layout has "
                    f"{self.partitions} partitions: give the layout partitions (--bus-partitions N) and "
                    "the stream some of them"
                )
        for token, what in ((STATES_TOKEN, "states requests"), (PULL_TOKEN, "pull requests")):
            if any(s.token == token for s in self.streams):
                raise InvalidInput(f"stream token {token!r} is taken: {self.prefix}.{token} carries {what}")

    @classmethod
    def from_json(
        cls, body: object, *, replicas: int = 1, partitions: int | None = None, where: str = "bus layout"
    ) -> Layout:
        """A layout from its JSON form (``docs/scale-out.md``)::

            {"prefix": "crdtmem", "partitions": 256,   # optional
             "streams": [{"name": "CRDTMEM_ACME", "token": "acme", "channels": ["tenant:acme:*"],
                          "replicas": 3, "max_age_s": 2592000, "max_bytes": -1}, ...]}

        followed by :func:`default_streams` with ``replicas``; ``partitions``, when given, must
        agree with the file's; raises InvalidInput saying what is wrong."""
        if not isinstance(body, dict) or set(body) - {"prefix", "streams", "partitions"}:
            raise InvalidInput(
                f"{where}: a JSON object with 'streams' (and optionally 'prefix' and 'partitions')"
            )
        streams = body.get("streams", [])
        if not isinstance(streams, list) or len(streams) > 1000:
            raise InvalidInput(f"{where}: 'streams' must be a list (at most 1,000 streams)")
        count = body.get("partitions", partitions or 0)
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidInput(f"{where}: 'partitions' must be a whole number")
        if partitions is not None and count != partitions:
            raise InvalidInput(
                f"{where}: 'partitions' is {count}, but {partitions} partitions were asked for"
            )
        specs = []
        for n, entry in enumerate(streams):
            here = f"{where}, stream {n + 1}"
            fields = {"name", "token", "channels", "replicas", "max_age_s", "max_bytes", "partitions"}
            if not isinstance(entry, dict) or not {"name", "token", "channels"} <= set(entry) <= fields:
                raise InvalidInput(
                    f"{here}: an object with name, token, channels (and replicas, max_age_s, max_bytes, "
                    "partitions)"
                )
            channels = entry["channels"]
            if (
                not isinstance(channels, list)
                or not channels
                or not all(isinstance(c, str) for c in channels)
            ):
                raise InvalidInput(f"{here}: 'channels' must be a list of channel patterns")
            numbers = {k: entry[k] for k in ("replicas", "max_age_s", "max_bytes") if k in entry}
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers.values()):
                raise InvalidInput(f"{here}: replicas, max_age_s and max_bytes are numbers")
            if not isinstance(entry["name"], str) or not isinstance(entry["token"], str):
                raise InvalidInput(f"{here}: name and token are strings")
            served = None
            if "partitions" in entry:
                if not isinstance(entry["partitions"], str):
                    raise InvalidInput(
                        f"{here}: 'partitions' is a string of numbers and ranges, like \"0-511\""
                    )
                try:
                    served = parts.parse_set(entry["partitions"], count)
                except ValueError as exc:
                    raise InvalidInput(f"{here}: partitions: {exc}") from None
            try:
                specs.append(
                    StreamSpec(
                        entry["name"],
                        entry["token"],
                        tuple(channels),
                        int(numbers.get("replicas", replicas)),
                        float(numbers.get("max_age_s", 0.0)),
                        int(numbers.get("max_bytes", -1)),
                        served,
                    )
                )
            except InvalidInput as exc:
                raise InvalidInput(f"{here}: {exc}") from None
        prefix = body.get("prefix", "crdtmem")
        if not isinstance(prefix, str):
            raise InvalidInput(f"{where}: 'prefix' must be a string")
        try:
            return cls.of(specs, replicas=replicas, prefix=prefix, partitions=count)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path, *, replicas: int = 1, partitions: int | None = None) -> Layout:
        """:meth:`from_json` of a JSON file; raises InvalidInput if it cannot be read or is wrong."""
        try:
            body = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(f"cannot read the bus layout {path}: {exc}") from None
        return cls.from_json(body, replicas=replicas, partitions=partitions, where=f"bus layout {path}")

    def stream_of(self, channel: str) -> StreamSpec:
        """The first stream whose patterns match ``channel`` and, if it holds a range of
        partitions, whose range holds the channel's partition."""
        return _stream_of(self, channel)

    def subject(self, channel: str) -> str:
        """The subject of ``channel`` (a canonical channel name)."""
        return _subject(self, channel)

    def stream_subjects(self, spec: StreamSpec) -> list[str]:
        """The subjects ``spec`` binds: everything under its token."""
        return [f"{self.prefix}.{spec.token}.>"]

    def partition(self, channel: str) -> int | None:
        """The partition of ``channel`` (None: this layout has no partitions)."""
        if not self.partitions:
            return None
        return parts.partition_of(Channel.parse(channel).name, self.partitions)

    def serves(self, channel: str, partitions: frozenset[int] | None) -> bool:
        """Whether a node serving ``partitions`` (None: all) holds ``channel``."""
        return partitions is None or self.partition(channel) in partitions

    def filters(
        self, channels: Iterable[str] | None, partitions: frozenset[int] | None = None
    ) -> dict[str, list[str]]:
        """``{stream name: filter subjects}`` for a node subscribed to ``channels`` (None: all), of
        ``partitions`` only (None: all): one wildcard subject per partition and stream."""
        if channels is None and partitions is not None:
            wildcards: dict[str, list[str]] = {}
            for spec in self.streams:  # a stream of a range is read for the partitions it holds
                held = partitions if spec.partitions is None else partitions & spec.partitions
                if held:
                    wildcards[spec.name] = sorted(
                        f"{self.prefix}.{spec.token}.*.{parts.token(n)}.*" for n in held
                    )
            return wildcards
        if channels is None:
            return {spec.name: self.stream_subjects(spec) for spec in self.streams}
        channels = [c for c in channels if self.serves(c, partitions)]
        out: dict[str, list[str]] = {}
        for channel in channels:
            out.setdefault(self.stream_of(channel).name, []).append(self.subject(channel))
        return {name: sorted(set(subjects)) for name, subjects in out.items()}

    def spec(self, name: str) -> StreamSpec:
        return next(s for s in self.streams if s.name == name)


def _ranges(partitions: frozenset[int]) -> str:
    """``0-3,7``: a set of partitions as :func:`~crdtmem.bus.partitions.parse_set` reads it."""
    out: list[str] = []
    for n in sorted(partitions):
        if out and out[-1].rpartition("-")[2] == str(n - 1):
            out[-1] = f"{out[-1].partition('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)


@functools.lru_cache(maxsize=16384)
def _stream_of(layout: Layout, channel: str) -> StreamSpec:
    """:meth:`Layout.stream_of` (cached: the outbox asks for every entry it publishes; a channel no
    stream holds raises, which is not cached)."""
    for spec in layout.streams:
        if spec.holds(channel) and (spec.partitions is None or layout.partition(channel) in spec.partitions):
            return spec
    raise InvalidInput(f"no stream of the bus layout holds channel {channel!r}")


@functools.lru_cache(maxsize=16384)
def _subject(layout: Layout, channel: str) -> str:
    parsed = Channel.parse(channel)
    token = layout.stream_of(channel).token
    name = escape_token(parsed.name)
    if layout.partitions:
        name = f"{parts.token(parts.partition_of(parsed.name, layout.partitions))}.{name}"
    return f"{layout.prefix}.{token}.{parsed.kind}.{name}"


@functools.lru_cache(maxsize=16384)
def channel_of(subject: str, prefix: str = "crdtmem", partitions: int = 0) -> str:
    """The canonical channel name a subject stands for; raises InvalidInput if it is not one.
    ``partitions``: the layout's; its subjects may carry a partition token, which must be the
    channel's (subjects without one, of the mapping before partitions, are read too).
    (Cached: a node sees the same few subjects over and over; a refusal is not cached.)"""
    tokens = subject.split(".")
    if partitions and len(tokens) == 5 and tokens[0] == prefix:
        partition = parts.from_token(tokens[3])
        if partition is None:
            raise InvalidInput(f"subject {subject!r:.200}: {tokens[3]!r:.40} is not a partition token")
        channel = channel_of(".".join(tokens[:3] + tokens[4:]), prefix)
        if partition != parts.partition_of(Channel.parse(channel).name, partitions):
            raise InvalidInput(f"subject {subject!r:.200}: {channel!r} is not in partition {partition}")
        return channel
    if len(tokens) != 4 or tokens[0] != prefix:
        where = (
            f"{prefix}.<stream>.<kind>.p<partition>.<id>" if partitions else f"{prefix}.<stream>.<kind>.<id>"
        )
        raise InvalidInput(f"subject {subject!r:.200} is not {where}")
    kind, token = tokens[2], tokens[3]
    name = unescape_id(token)
    if kind == "system":
        return str(Channel.system())
    builders = {"user": Channel.user, "tenant": Channel.tenant, "topic": Channel.topic}
    if kind not in builders:
        raise InvalidInput(f"subject {subject!r:.200}: unknown channel kind {kind!r}")
    channel = str(builders[kind](name))
    if escape_token(name) != token:
        raise InvalidInput(f"subject {subject!r:.200}: its id is not escaped canonically")
    return channel


def message_id(origin: str, channel: str, seq: int, data: bytes) -> str:
    """The ``Nats-Msg-Id`` of log entry ``(origin, channel, seq)`` published as ``data``:
    ``{origin}:{seq}:{digest}`` where ``digest`` is 24 hex digits of the SHA-256 of the channel name
    and the data (header values are ASCII; channel names need not be). Bound to the data: a message
    published ahead under the id of an entry to come (anyone who may publish on the subject can
    name one) holds other bytes, so the stream cannot take the entry for its duplicate."""
    return f"{origin}:{seq}:{_digest(channel.encode(), data)}"


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\n".join(parts)).hexdigest()[:24]


def batch_id(origin: str, channel: str, seqs: Sequence[int], data: bytes) -> str:
    """The ``Nats-Msg-Id`` of a lazy batch: entries ``seqs`` (ascending) of ``(origin, channel)``
    published as ``data``, ``{origin}:{first}-{last}:{digest}``, the digest over the channel, every
    sequence number and the data, so the stream drops a batch published again as it was, never a
    batch that holds other entries or other bytes (a node restarted mid-batch may cut its batches
    elsewhere: their copies are duplicates to the receivers, counted and harmless)."""
    numbers = ",".join(str(s) for s in seqs).encode()
    return f"{origin}:{seqs[0]}-{seqs[-1]}:{_digest(channel.encode(), numbers, data)}"


def entries_named(msg_id: str, channel: str, data: bytes) -> tuple[str, list[int]] | None:
    """``(origin, seqs)`` the id of message ``data`` names for ``channel`` (:func:`message_id`: one
    entry; a :func:`batch_id`: a range, whose every entry may not be in the message), or None."""
    origin, _, rest = msg_id.partition(":")
    seq = rest.partition(":")[0]
    if seq.isascii() and seq.isdigit():
        return (origin, [int(seq)]) if message_id(origin, channel, int(seq), data) == msg_id else None
    first, dash, last = seq.partition("-")
    if not (dash and first.isascii() and first.isdigit() and last.isascii() and last.isdigit()):
        return None
    low, high = int(first), int(last)
    if not 0 < low <= high or high - low >= 10_000:
        return None
    return origin, list(range(low, high + 1))
